"""Per-channel Discord settings (persona, always-answer, voice, group scene) in the history database, so a restart keeps them.

The table `discord_channels` lives in `agent.home.database` next to the sessions; `ChannelSettings`
hands the router a frozen `ChannelConfig` per channel key ("discord:<channel id>").
"""
from __future__ import annotations

import sqlite3
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

SCHEMA = """CREATE TABLE IF NOT EXISTS discord_channels (
    channel TEXT PRIMARY KEY,   -- "discord:<channel id>", the same key the sessions use
    persona TEXT,               -- slug; NULL: the config's default persona
    always INTEGER NOT NULL DEFAULT 0,  -- 1: answer every message, not only mentions and replies
    voice INTEGER NOT NULL DEFAULT 0,   -- 1: replies also come as an audio attachment
    scene INTEGER                       -- the group scene (a session id) that answers here; NULL: the persona
)"""


@dataclass(frozen=True)
class ChannelConfig:
    persona: Optional[str] = None  # persona slug; None: the config's default persona
    always: bool = False  # answer every message in this channel (DMs always do)
    voice: bool = False  # attach the reply spoken in the persona's voice
    scene: Optional[int] = None  # the group scene (its session id) answering here, or None: the one persona


MAX_CACHED = 1024  # channels whose settings stay in memory; the least recently read are read again from SQLite


class ChannelSettings:
    """Reads a channel's row once, then from memory (the `max_cached` most recently used channels); writes go
    straight to SQLite."""

    def __init__(self, database: Path, *, max_cached: int = MAX_CACHED):
        self.database = Path(database)
        self.max_cached = max_cached
        self._lock = threading.Lock()  # read on the event loop, written on the model thread
        self._cache: OrderedDict[str, ChannelConfig] = OrderedDict()
        with self._connect() as db:
            db.execute(SCHEMA)
            if "scene" not in {row[1] for row in db.execute("PRAGMA table_info(discord_channels)")}:
                db.execute("ALTER TABLE discord_channels ADD COLUMN scene INTEGER")  # a table from before scenes

    def _connect(self) -> sqlite3.Connection:
        self.database.parent.mkdir(parents=True, exist_ok=True)
        return sqlite3.connect(self.database, timeout=30)

    def get(self, channel: str) -> ChannelConfig:
        with self._lock:
            if channel not in self._cache:
                with self._connect() as db:
                    row = db.execute("SELECT persona, always, voice, scene FROM discord_channels WHERE channel = ?",
                                     (channel,)).fetchone()
                self._remember(channel, ChannelConfig(row[0], bool(row[1]), bool(row[2]), row[3]) if row
                               else ChannelConfig())
            self._cache.move_to_end(channel)
            return self._cache[channel]

    def _remember(self, channel: str, config: ChannelConfig) -> None:
        self._cache[channel] = config
        self._cache.move_to_end(channel)
        while len(self._cache) > self.max_cached:
            self._cache.popitem(last=False)

    def update(self, channel: str, **changes) -> ChannelConfig:
        """Changes some of persona/always/voice/scene for `channel` and saves the row."""
        new = replace(self.get(channel), **changes)
        with self._lock:
            with self._connect() as db:
                db.execute("INSERT INTO discord_channels (channel, persona, always, voice, scene) VALUES (?, ?, ?, ?, ?) "
                           "ON CONFLICT(channel) DO UPDATE SET persona = excluded.persona, "
                           "always = excluded.always, voice = excluded.voice, scene = excluded.scene",
                           (channel, new.persona, int(new.always), int(new.voice), new.scene))
            self._remember(channel, new)
        return new
