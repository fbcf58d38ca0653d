"""Long-chat memory: what left the context window stays findable.

Per session, in the same SQLite database as the history:
- `memories`: turns that left the window (kind 'turn', one row per user message + reply) and the user's
  `/remember` notes (kind 'note'), each with its MiniLM vector (384 float32, unit length);
- `memory_state`: how many history messages have been archived, and the LM's running summary of them.

`recall` ranks a session's archived turns by cosine similarity to the new message and keeps the best
within a token budget; notes are always shown. The LM-written summary comes from agent/chat/summary.py.
"""
from __future__ import annotations

import sqlite3
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

SCHEMA = """
CREATE TABLE IF NOT EXISTS memories (
    id INTEGER PRIMARY KEY,
    session_id INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    kind TEXT NOT NULL CHECK (kind IN ('turn', 'note')),
    text TEXT NOT NULL,
    vector BLOB,
    position INTEGER NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS memories_by_session ON memories(session_id, kind, id);
CREATE TABLE IF NOT EXISTS memory_state (
    session_id INTEGER PRIMARY KEY REFERENCES sessions(id) ON DELETE CASCADE,
    archived INTEGER NOT NULL,
    summary TEXT NOT NULL,
    updated REAL NOT NULL
);
"""


@dataclass(frozen=True)
class MemoryItem:
    id: int
    kind: str  # "turn" | "note"
    text: str
    position: int  # turn: index of its user message in the session's history; note: history length when written


@dataclass(frozen=True)
class Recalled:
    item: MemoryItem
    score: float  # cosine(new message, item)
    tokens: int


def _blob(vector) -> Optional[bytes]:
    return None if vector is None else np.asarray(vector, dtype=np.float32).tobytes()


def turn_text(user_name: str, char_name: str, user: str, reply: str) -> str:
    """How an archived turn reads in the prompt and in /memory."""
    return f"{user_name}: {user.strip()}\n{char_name}: {reply.strip()}"


class MemoryStore:
    """The memory tables of a history database. Each method opens its own connection, like HistoryStore."""

    def __init__(self, path: Path):
        self.path = Path(path)
        with closing(self._connect()) as db, db:
            db.executescript(SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30)
        db.execute("PRAGMA foreign_keys=ON")
        return db

    def state(self, session_id: int) -> tuple[int, str]:
        """(history messages archived so far, running summary)."""
        with closing(self._connect()) as db:
            row = db.execute("SELECT archived, summary FROM memory_state WHERE session_id = ?", (session_id,)).fetchone()
        return (int(row[0]), row[1]) if row else (0, "")

    def archive(self, session_id: int, turns: Sequence[tuple[int, str]], vectors, archived: int,
                summary: Optional[str] = None) -> None:
        """Stores turns [(position, text)] with their (n, d) vectors and moves the archive mark, in one transaction."""
        now = time.time()
        with closing(self._connect()) as db, db:
            for (position, text), vector in zip(turns, vectors if vectors is not None else [None] * len(turns)):
                db.execute("INSERT INTO memories (session_id, kind, text, vector, position, created) "
                           "VALUES (?, 'turn', ?, ?, ?, ?)", (session_id, text, _blob(vector), position, now))
            old = db.execute("SELECT summary FROM memory_state WHERE session_id = ?", (session_id,)).fetchone()
            summary = summary if summary is not None else (old[0] if old else "")
            db.execute("INSERT INTO memory_state (session_id, archived, summary, updated) VALUES (?, ?, ?, ?) "
                       "ON CONFLICT(session_id) DO UPDATE SET archived = excluded.archived, "
                       "summary = excluded.summary, updated = excluded.updated", (session_id, archived, summary, now))

    def add_note(self, session_id: int, text: str, vector, position: int) -> int:
        with closing(self._connect()) as db, db:
            return int(db.execute("INSERT INTO memories (session_id, kind, text, vector, position, created) "
                                  "VALUES (?, 'note', ?, ?, ?, ?)",
                                  (session_id, text, _blob(vector), position, time.time())).lastrowid)

    def items(self, session_id: int, kind: Optional[str] = None) -> list[MemoryItem]:
        sql = "SELECT id, kind, text, position FROM memories WHERE session_id = ?"
        args: list = [session_id]
        if kind is not None:
            sql += " AND kind = ?"
            args.append(kind)
        with closing(self._connect()) as db:
            rows = db.execute(sql + " ORDER BY id", args).fetchall()
        return [MemoryItem(int(i), k, t, int(p)) for i, k, t, p in rows]

    def vectors(self, session_id: int, kind: str = "turn") -> tuple[list[MemoryItem], np.ndarray]:
        """Items of `kind` that have vectors, and their (n, d) matrix."""
        with closing(self._connect()) as db:
            rows = db.execute("SELECT id, kind, text, position, vector FROM memories WHERE session_id = ? AND kind = ? "
                              "AND vector IS NOT NULL ORDER BY id", (session_id, kind)).fetchall()
        items = [MemoryItem(int(i), k, t, int(p)) for i, k, t, p, _ in rows]
        matrix = np.stack([np.frombuffer(r[4], dtype=np.float32) for r in rows]) if rows else np.zeros((0, 0), np.float32)
        return items, matrix

    def forget(self, session_id: int, memory_id: Optional[int] = None) -> list[MemoryItem]:
        """Deletes one memory (by id), or with None the newest note; returns what was deleted."""
        with closing(self._connect()) as db, db:
            if memory_id is None:
                row = db.execute("SELECT id, kind, text, position FROM memories WHERE session_id = ? AND kind = 'note' "
                                 "ORDER BY id DESC LIMIT 1", (session_id,)).fetchone()
            else:
                row = db.execute("SELECT id, kind, text, position FROM memories WHERE session_id = ? AND id = ?",
                                 (session_id, memory_id)).fetchone()
            if row is None:
                return []
            db.execute("DELETE FROM memories WHERE id = ?", (row[0],))
        return [MemoryItem(int(row[0]), row[1], row[2], int(row[3]))]

    def forget_all(self, session_id: int) -> int:
        """Deletes every memory and the summary of the session (the archive mark stays: those turns are not re-archived)."""
        with closing(self._connect()) as db, db:
            n = db.execute("DELETE FROM memories WHERE session_id = ?", (session_id,)).rowcount
            db.execute("UPDATE memory_state SET summary = '', updated = ? WHERE session_id = ?", (time.time(), session_id))
        return int(n)


def rank(query: np.ndarray, items: Sequence[MemoryItem], matrix: np.ndarray, *, top_k: int, min_score: float,
         budget_tokens: int, count_tokens: Callable[[str], int], exclude_from: Optional[int] = None) -> list[Recalled]:
    """The best items for `query` (d,), best first, at most top_k, each scoring >= min_score, within budget_tokens.

    exclude_from: items at or after this history position are still in the window and are skipped.
    A too-long item is skipped, not truncated; a shorter, lower-ranked one may still fit.
    """
    if not len(items):
        return []
    scores = matrix @ np.asarray(query, dtype=np.float32)  # (n,)
    chosen, used = [], 0
    for i in np.argsort(-scores, kind="stable"):
        item = items[int(i)]
        if len(chosen) == top_k or scores[i] < min_score:
            break
        if exclude_from is not None and item.position >= exclude_from:
            continue
        tokens = count_tokens(item.text)
        if used + tokens > budget_tokens:
            continue
        chosen.append(Recalled(item, float(scores[i]), tokens))
        used += tokens
    return chosen
