"""Conversations on disk: one SQLite database (WAL), one transaction per turn.

A killed process loses at most the turn it was writing. Sessions are keyed by id and tagged with the
persona slug and an optional channel (a Discord channel, an API session id) for front-ends to find them.
A group scene (agent/chat/scene.py) is a session too: its `persona` is the members' key ("hale+mara"),
`scenes` marks it, `scene_members` lists who is in it (each with a session of its own for its memory), and
each message names its `speaker`. A reply keeps the guard's record (agent/chat/guard.py, JSON) in `guard`.
A regenerated reply keeps its alternatives (swipes) in `swipes`; the message holds the chosen one, whose
position is its `swipe`. Databases from before scenes, the guard or swipes gain those columns when opened.
"""
from __future__ import annotations

import sqlite3
import time
from contextlib import closing
from pathlib import Path
from typing import Optional

from .prompt import Message

SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id INTEGER PRIMARY KEY,
    persona TEXT NOT NULL,
    channel TEXT,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_by_persona ON sessions(persona, updated);
CREATE INDEX IF NOT EXISTS sessions_by_channel ON sessions(channel, updated);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    session_id INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
    content TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_session ON messages(session_id, id);
CREATE TABLE IF NOT EXISTS scenes (
    session_id INTEGER PRIMARY KEY REFERENCES sessions(id) ON DELETE CASCADE,
    name TEXT
);
CREATE TABLE IF NOT EXISTS scene_members (
    session_id INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    persona TEXT NOT NULL,
    position INTEGER NOT NULL,
    own_session INTEGER NOT NULL REFERENCES sessions(id),
    present INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (session_id, persona)
);
CREATE TABLE IF NOT EXISTS swipes (
    message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    content TEXT NOT NULL,
    guard TEXT,
    PRIMARY KEY (message_id, position)
);
CREATE TABLE IF NOT EXISTS session_lore (
    session_id INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    lorebook TEXT NOT NULL,
    PRIMARY KEY (session_id, lorebook)
);
"""


def _migrate(db: sqlite3.Connection) -> None:
    """Brings a database written before scenes, the guard or swipes up to date: messages gain `speaker`, `guard`
    and `swipe` (the `swipes` table itself is created by SCHEMA)."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(messages)")}
    for column, kind in (("speaker", "TEXT"), ("guard", "TEXT"), ("swipe", "INTEGER")):
        if column in columns:
            continue
        try:
            db.execute(f"ALTER TABLE messages ADD COLUMN {column} {kind}")
        except sqlite3.OperationalError as e:  # another process added it first
            if "duplicate column" not in str(e):
                raise


def scene_key(slugs) -> str:
    """The `persona` of a scene's session: its members' slugs, sorted, joined by '+' (a slug has no '+')."""
    return "+".join(sorted(slugs))


class HistoryStore:
    """Sessions and their messages. Each method opens its own connection, so threads may share a store."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as db, db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)
            _migrate(db)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30)
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    def _write(self, sql_and_args: list[tuple[str, tuple]]) -> Optional[int]:
        """Runs statements in one transaction; returns the last row id."""
        with closing(self._connect()) as db, db:
            last = None
            for sql, args in sql_and_args:
                last = db.execute(sql, args).lastrowid
            return last

    def create_session(self, persona: str, greeting: str, channel: Optional[str] = None) -> int:
        """A new session whose first message is the persona's greeting (empty greeting: no message)."""
        now = time.time()
        with closing(self._connect()) as db, db:
            sid = db.execute("INSERT INTO sessions (persona, channel, created, updated) VALUES (?, ?, ?, ?)",
                             (persona, channel, now, now)).lastrowid
            if greeting:
                db.execute("INSERT INTO messages (session_id, role, content, created) VALUES (?, 'assistant', ?, ?)",
                           (sid, greeting, now))
        return int(sid)

    def latest_session(self, persona: Optional[str] = None, channel: Optional[str] = None) -> Optional[int]:
        """The most recently updated session of `persona` in `channel` (None: the terminal's, no channel)."""
        where, args = ["channel IS NULL"] if channel is None else [], []
        if persona is not None:
            where.append("persona = ?")
            args.append(persona)
        if channel is not None:
            where.append("channel = ?")
            args.append(channel)
        where.append("id NOT IN (SELECT session_id FROM scenes)")  # a scene is never a one-persona chat
        sql = "SELECT id FROM sessions WHERE " + " AND ".join(where) + " ORDER BY updated DESC, id DESC LIMIT 1"
        with closing(self._connect()) as db:
            row = db.execute(sql, args).fetchone()
        return int(row[0]) if row else None

    def channel_sessions(self, prefix: str, limit: int = 50) -> list[dict]:
        """The newest session per (channel, persona) among channels starting with `prefix`, newest first:
        {channel, persona, scene, updated, messages, last} (`last`: the newest message's text)."""
        sql = """SELECT s.channel, s.persona, s.updated, c.session_id IS NOT NULL,
                        (SELECT COUNT(*) FROM messages m WHERE m.session_id = s.id),
                        COALESCE((SELECT content FROM messages m WHERE m.session_id = s.id ORDER BY id DESC LIMIT 1), '')
                 FROM sessions s LEFT JOIN scenes c ON c.session_id = s.id
                 WHERE substr(s.channel, 1, ?) = ? AND s.id = (
                     SELECT t.id FROM sessions t WHERE t.channel = s.channel AND t.persona = s.persona
                     ORDER BY t.updated DESC, t.id DESC LIMIT 1)
                 ORDER BY s.updated DESC, s.id DESC LIMIT ?"""
        with closing(self._connect()) as db:
            rows = db.execute(sql, (len(prefix), prefix, limit)).fetchall()
        return [{"channel": channel, "persona": persona, "scene": bool(scene), "updated": updated,
                 "messages": count, "last": last} for channel, persona, updated, scene, count, last in rows]

    def session_persona(self, session_id: int) -> str:
        with closing(self._connect()) as db:
            row = db.execute("SELECT persona FROM sessions WHERE id = ?", (session_id,)).fetchone()
        if row is None:
            raise KeyError(f"no session {session_id} in {self.path}")
        return row[0]

    def messages(self, session_id: int) -> list[Message]:
        with closing(self._connect()) as db:
            rows = db.execute("SELECT role, content, speaker FROM messages WHERE session_id = ? ORDER BY id",
                              (session_id,)).fetchall()
        return [Message(role, content, speaker or "") for role, content, speaker in rows]

    def guard_records(self, session_id: int) -> list[str]:
        """Per message, in order: the guard's JSON record of a reply ('' for the user's lines and unguarded replies)."""
        with closing(self._connect()) as db:
            rows = db.execute("SELECT guard FROM messages WHERE session_id = ? ORDER BY id", (session_id,)).fetchall()
        return [guard or "" for guard, in rows]

    def append_turn(self, session_id: int, user: str, reply: str, *, guard: str = "") -> None:
        """The user's message and the reply (with the guard's record of it), written together."""
        now = time.time()
        self._write([
            ("INSERT INTO messages (session_id, role, content, created) VALUES (?, 'user', ?, ?)",
             (session_id, user, now)),
            ("INSERT INTO messages (session_id, role, content, created, guard) VALUES (?, 'assistant', ?, ?, ?)",
             (session_id, reply, now, guard or None)),
            ("UPDATE sessions SET updated = ? WHERE id = ?", (now, session_id)),
        ])

    def fork_session(self, session_id: int, greeting: str, turns: list[tuple[str, str]]) -> int:
        """A new session of the same persona and channel holding `greeting` and (user, reply) `turns`, written in
        one transaction; the old session is untouched. Returns the new id."""
        now = time.time()
        with closing(self._connect()) as db, db:
            row = db.execute("SELECT persona, channel FROM sessions WHERE id = ?", (session_id,)).fetchone()
            if row is None:
                raise KeyError(f"no session {session_id} in {self.path}")
            sid = db.execute("INSERT INTO sessions (persona, channel, created, updated) VALUES (?, ?, ?, ?)",
                             (row[0], row[1], now, now)).lastrowid
            rows = ([("assistant", greeting)] if greeting else []) + [m for u, r in turns for m in (("user", u),
                                                                                                 ("assistant", r))]
            db.executemany("INSERT INTO messages (session_id, role, content, created) VALUES (?, ?, ?, ?)",
                           [(sid, role, text, now) for role, text in rows])
        return int(sid)

    def replace_last_reply(self, session_id: int, reply: str, *, guard: Optional[str] = None) -> None:
        """The newest assistant message gets the new text (and the guard's record, unless None); so does its
        chosen alternative, when it has alternatives (a stop string or a client that left cut it)."""
        now = time.time()
        where = "WHERE id = (SELECT MAX(id) FROM messages WHERE session_id = ? AND role = 'assistant')"
        chosen = ("WHERE (message_id, position) = (SELECT id, swipe FROM messages WHERE id = "
                  "(SELECT MAX(id) FROM messages WHERE session_id = ? AND role = 'assistant'))")
        self._write([
            ("UPDATE messages SET content = ?, created = ? " + where, (reply, now, session_id)),
            ("UPDATE swipes SET content = ? " + chosen, (reply, session_id)),
            *([("UPDATE messages SET guard = ? " + where, (guard or None, session_id)),
               ("UPDATE swipes SET guard = ? " + chosen, (guard or None, session_id))] if guard is not None else []),
            ("UPDATE sessions SET updated = ? WHERE id = ?", (now, session_id)),
        ])

    # --- swipes: the alternatives of the newest reply ----------------------------------------------------
    def _last_reply(self, db: sqlite3.Connection, session_id: int) -> tuple[int, str, Optional[str], Optional[int]]:
        """(id, content, guard, swipe) of the session's newest message, which must be a reply."""
        row = db.execute("SELECT id, role, content, guard, swipe FROM messages WHERE session_id = ? "
                         "ORDER BY id DESC LIMIT 1", (session_id,)).fetchone()
        if row is None or row[1] != "assistant":
            raise ValueError(f"session {session_id} does not end with a reply")
        return row[0], row[2], row[3], row[4]

    def add_swipe(self, session_id: int, reply: str, *, guard: str = "") -> int:
        """A regenerated reply: the newest reply gains `reply` as its next alternative and shows it (the text
        it had becomes alternative 0 when it had none). Returns the new alternative's position."""
        with closing(self._connect()) as db, db:
            message, content, old_guard, chosen = self._last_reply(db, session_id)
            if chosen is None:
                db.execute("INSERT INTO swipes (message_id, position, content, guard) VALUES (?, 0, ?, ?)",
                           (message, content, old_guard))
            position = db.execute("SELECT MAX(position) + 1 FROM swipes WHERE message_id = ?", (message,)).fetchone()[0]
            db.execute("INSERT INTO swipes (message_id, position, content, guard) VALUES (?, ?, ?, ?)",
                       (message, position, reply, guard or None))
            self._show_swipe(db, session_id, message, position)
        return int(position)

    def _show_swipe(self, db: sqlite3.Connection, session_id: int, message: int, position: int) -> None:
        now = time.time()
        db.execute("UPDATE messages SET (content, guard, swipe) = (SELECT content, guard, position FROM swipes "
                   "WHERE message_id = ? AND position = ?) WHERE id = ?", (message, position, message))
        db.execute("UPDATE sessions SET updated = ? WHERE id = ?", (now, session_id))

    def swipes(self, session_id: int) -> tuple[list[str], int]:
        """The newest reply's alternatives, in the order written, and the position of the one shown
        (([], 0) when it has none, or the session does not end with a reply)."""
        with closing(self._connect()) as db:
            try:
                message, _, _, chosen = self._last_reply(db, session_id)
            except ValueError:
                return [], 0
            rows = db.execute("SELECT position, content FROM swipes WHERE message_id = ? ORDER BY position",
                              (message,)).fetchall()
        if chosen is None:
            return [], 0
        return [content for _, content in rows], [p for p, _ in rows].index(chosen)

    def choose_swipe(self, session_id: int, index: int) -> str:
        """The newest reply shows its alternative number `index` (0-based, in the order written); returns its
        text. IndexError when there is no such alternative."""
        with closing(self._connect()) as db, db:
            message, _, _, _ = self._last_reply(db, session_id)
            positions = [p for p, in db.execute("SELECT position FROM swipes WHERE message_id = ? ORDER BY position",
                                                (message,))]
            if not 0 <= index < len(positions):
                raise IndexError(f"the last reply has {len(positions)} alternatives, no number {index}")
            self._show_swipe(db, session_id, message, positions[index])
            return db.execute("SELECT content FROM messages WHERE id = ?", (message,)).fetchone()[0]

    def drop_swipe(self, session_id: int) -> None:
        """The alternative shown goes (a client received none of it); the newest remaining one is shown."""
        with closing(self._connect()) as db, db:
            message, _, _, chosen = self._last_reply(db, session_id)
            db.execute("DELETE FROM swipes WHERE message_id = ? AND position = ?", (message, chosen))
            left = db.execute("SELECT MAX(position) FROM swipes WHERE message_id = ?", (message,)).fetchone()[0]
            if left is not None:
                self._show_swipe(db, session_id, message, left)

    def edit_last(self, session_id: int, text: str) -> None:
        """The newest message (either role) gets `text`; for a reply with alternatives, the one shown does too."""
        now = time.time()
        newest = "(SELECT MAX(id) FROM messages WHERE session_id = ?)"
        self._write([
            (f"UPDATE messages SET content = ? WHERE id = {newest}", (text, session_id)),
            (f"UPDATE swipes SET content = ? WHERE (message_id, position) = (SELECT id, swipe FROM messages "
             f"WHERE id = {newest})", (text, session_id)),
            ("UPDATE sessions SET updated = ? WHERE id = ?", (now, session_id)),
        ])

    def remove_last(self, session_id: int, count: int) -> None:
        """Deletes the session's newest `count` messages (an API client received none of the reply they hold)."""
        now = time.time()
        self._write([
            ("DELETE FROM messages WHERE id IN (SELECT id FROM messages WHERE session_id = ? ORDER BY id DESC "
             "LIMIT ?)", (session_id, count)),
            ("UPDATE sessions SET updated = ? WHERE id = ?", (now, session_id)),
        ])

    # --- group scenes -------------------------------------------------------------------------------
    def create_scene(self, members: list[str], lines: list[Message], channel: Optional[str] = None,
                     name: Optional[str] = None) -> int:
        """A new scene of persona slugs `members` (in speaking order), opened by `lines` (the greetings, each
        Message naming its speaker), with a session of its own per member; one transaction. Returns its id."""
        now = time.time()
        with closing(self._connect()) as db, db:
            sid = db.execute("INSERT INTO sessions (persona, channel, created, updated) VALUES (?, ?, ?, ?)",
                             (scene_key(members), channel, now, now)).lastrowid
            db.execute("INSERT INTO scenes (session_id, name) VALUES (?, ?)", (sid, name))
            for slug in members:
                self._add_member(db, sid, slug, now)
            db.executemany("INSERT INTO messages (session_id, role, content, created, speaker) VALUES (?, ?, ?, ?, ?)",
                           [(sid, m.role, m.content, now, m.name) for m in lines])
        return int(sid)

    def _add_member(self, db: sqlite3.Connection, scene_id: int, slug: str, now: float) -> None:
        found = db.execute("SELECT own_session FROM scene_members WHERE session_id = ? AND persona = ?",
                           (scene_id, slug)).fetchone()
        position = db.execute("SELECT COALESCE(MAX(position), -1) + 1 FROM scene_members WHERE session_id = ?",
                              (scene_id,)).fetchone()[0]
        if found is not None:  # back after leaving: its memory is where it left it, its place at the end
            db.execute("UPDATE scene_members SET present = 1, position = ? WHERE session_id = ? AND persona = ?",
                       (position, scene_id, slug))
            return
        own = db.execute("INSERT INTO sessions (persona, channel, created, updated) VALUES (?, ?, ?, ?)",
                         (slug, f"scene:{scene_id}", now, now)).lastrowid
        db.execute("INSERT INTO scene_members (session_id, persona, position, own_session) VALUES (?, ?, ?, ?)",
                   (scene_id, slug, position, own))

    def _set_key(self, db: sqlite3.Connection, scene_id: int, now: float) -> None:
        slugs = [r[0] for r in db.execute("SELECT persona FROM scene_members WHERE session_id = ? AND present = 1",
                                          (scene_id,))]
        db.execute("UPDATE sessions SET persona = ?, updated = ? WHERE id = ?", (scene_key(slugs), now, scene_id))

    def join_scene(self, scene_id: int, slug: str) -> None:
        """`slug` joins the scene (again), last in speaking order."""
        now = time.time()
        with closing(self._connect()) as db, db:
            self._add_member(db, scene_id, slug, now)
            self._set_key(db, scene_id, now)

    def leave_scene(self, scene_id: int, slug: str) -> None:
        """`slug` leaves the scene; its lines stay in the history."""
        now = time.time()
        with closing(self._connect()) as db, db:
            db.execute("UPDATE scene_members SET present = 0 WHERE session_id = ? AND persona = ?", (scene_id, slug))
            self._set_key(db, scene_id, now)

    def scene_members(self, scene_id: int) -> list[tuple[str, int]]:
        """(persona slug, its own session id) of the members present, in speaking order; [] for a plain session."""
        with closing(self._connect()) as db:
            rows = db.execute("SELECT persona, own_session FROM scene_members WHERE session_id = ? AND present = 1 "
                              "ORDER BY position", (scene_id,)).fetchall()
        return [(slug, int(own)) for slug, own in rows]

    def is_scene(self, session_id: int) -> bool:
        with closing(self._connect()) as db:
            return db.execute("SELECT 1 FROM scenes WHERE session_id = ?", (session_id,)).fetchone() is not None

    def latest_scene(self, members: Optional[list[str]] = None, channel: Optional[str] = None) -> Optional[int]:
        """The most recently updated scene in `channel` (None: the terminal's) with exactly these members."""
        where, args = ["s.channel IS NULL" if channel is None else "s.channel = ?"], [] if channel is None else [channel]
        if members is not None:
            where.append("s.persona = ?")
            args.append(scene_key(members))
        with closing(self._connect()) as db:
            row = db.execute("SELECT s.id FROM sessions s JOIN scenes c ON c.session_id = s.id WHERE "
                             + " AND ".join(where) + " ORDER BY s.updated DESC, s.id DESC LIMIT 1", args).fetchone()
        return int(row[0]) if row else None

    def name_scene(self, scene_id: int, name: Optional[str]) -> None:
        """Names the scene (None: no name); the API then serves it as the model `name`."""
        self._write([("UPDATE scenes SET name = ? WHERE session_id = ?", (name, scene_id))])

    def scene_named(self, name: str) -> Optional[int]:
        """The most recently updated scene called `name`, in any channel."""
        with closing(self._connect()) as db:
            row = db.execute("SELECT s.id FROM sessions s JOIN scenes c ON c.session_id = s.id WHERE c.name = ? "
                             "ORDER BY s.updated DESC, s.id DESC LIMIT 1", (name,)).fetchone()
        return int(row[0]) if row else None

    def append_lines(self, session_id: int, lines: list[Message], *, guard: str = "") -> None:
        """Scene lines (each naming its speaker), written together: a human's message and the reply to it;
        guard: the guard's record of the last line, a persona's."""
        now = time.time()
        records = [""] * (len(lines) - 1) + [guard]
        self._write([("INSERT INTO messages (session_id, role, content, created, speaker, guard) VALUES (?, ?, ?, ?, ?, ?)",
                      (session_id, m.role, m.content, now, m.name, record or None)) for m, record in zip(lines, records)]
                    + [("UPDATE sessions SET updated = ? WHERE id = ?", (now, session_id))])

    def attach_lore(self, session_id: int, lorebook: str) -> None:
        self._write([("INSERT OR IGNORE INTO session_lore (session_id, lorebook) VALUES (?, ?)", (session_id, lorebook))])

    def detach_lore(self, session_id: int, lorebook: str) -> None:
        self._write([("DELETE FROM session_lore WHERE session_id = ? AND lorebook = ?", (session_id, lorebook))])

    def session_lore(self, session_id: int) -> list[str]:
        with closing(self._connect()) as db:
            rows = db.execute("SELECT lorebook FROM session_lore WHERE session_id = ? ORDER BY rowid",
                              (session_id,)).fetchall()
        return [r[0] for r in rows]


class UnsavedHistory:
    """A history store that keeps nothing: sessions of stateless API requests."""

    def messages(self, session_id: int) -> list[Message]:
        return []

    def append_turn(self, session_id: int, user: str, reply: str, *, guard: str = "") -> None:
        pass

    def replace_last_reply(self, session_id: int, reply: str, *, guard: Optional[str] = None) -> None:
        pass

    def remove_last(self, session_id: int, count: int) -> None:
        pass

    def add_swipe(self, session_id: int, reply: str, *, guard: str = "") -> int:
        return 0

    def drop_swipe(self, session_id: int) -> None:
        pass

    def fork_session(self, session_id: int, greeting: str, turns: list[tuple[str, str]]) -> int:
        raise ValueError("a stateless session has no stored conversation to fork")

    def session_lore(self, session_id: int) -> list[str]:
        return []

    def append_lines(self, session_id: int, lines: list[Message], *, guard: str = "") -> None:
        pass

    def join_scene(self, scene_id: int, slug: str) -> None:
        pass

    def leave_scene(self, scene_id: int, slug: str) -> None:
        pass

    def name_scene(self, scene_id: int, name: Optional[str]) -> None:
        pass
