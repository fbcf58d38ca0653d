"""Conversations on disk: one SQLite database (WAL), one transaction per turn.

A killed process loses at most the turn it was writing. Sessions are keyed by id and tagged with the
persona slug and an optional channel (a Discord channel, an API session id) for front-ends to find them.
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
CREATE TABLE IF NOT EXISTS session_lore (
    session_id INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    lorebook TEXT NOT NULL,
    PRIMARY KEY (session_id, lorebook)
);
"""


class HistoryStore:
    """Sessions and their messages. Each method opens its own connection, so threads may share a store."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)

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
        sql = "SELECT id FROM sessions" + (" WHERE " + " AND ".join(where) if where else "") + \
            " ORDER BY updated DESC, id DESC LIMIT 1"
        with closing(self._connect()) as db:
            row = db.execute(sql, args).fetchone()
        return int(row[0]) if row else None

    def session_persona(self, session_id: int) -> str:
        with closing(self._connect()) as db:
            row = db.execute("SELECT persona FROM sessions WHERE id = ?", (session_id,)).fetchone()
        if row is None:
            raise KeyError(f"no session {session_id} in {self.path}")
        return row[0]

    def messages(self, session_id: int) -> list[Message]:
        with closing(self._connect()) as db:
            rows = db.execute("SELECT role, content FROM messages WHERE session_id = ? ORDER BY id",
                              (session_id,)).fetchall()
        return [Message(role, content) for role, content in rows]

    def append_turn(self, session_id: int, user: str, reply: str) -> None:
        """The user's message and the reply, written together."""
        now = time.time()
        self._write([
            ("INSERT INTO messages (session_id, role, content, created) VALUES (?, 'user', ?, ?)",
             (session_id, user, now)),
            ("INSERT INTO messages (session_id, role, content, created) VALUES (?, 'assistant', ?, ?)",
             (session_id, reply, now)),
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

    def replace_last_reply(self, session_id: int, reply: str) -> None:
        """For /retry: the newest assistant message gets the new text."""
        now = time.time()
        self._write([
            ("UPDATE messages SET content = ?, created = ? WHERE id = (SELECT MAX(id) FROM messages "
             "WHERE session_id = ? AND role = 'assistant')", (reply, now, session_id)),
            ("UPDATE sessions SET updated = ? WHERE id = ?", (now, session_id)),
        ])

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

    def append_turn(self, session_id: int, user: str, reply: str) -> None:
        pass

    def replace_last_reply(self, session_id: int, reply: str) -> None:
        pass

    def fork_session(self, session_id: int, greeting: str, turns: list[tuple[str, str]]) -> int:
        raise ValueError("a stateless session has no stored conversation to fork")

    def session_lore(self, session_id: int) -> list[str]:
        return []
