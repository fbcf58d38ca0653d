"""The chat sessions (and group scenes) a long-running front-end keeps open, bounded: least recently used out, history kept in SQLite.

Each open `ChatSession` holds a KV cache, so the server (per client session id) and the Discord bot (per
channel) keep theirs in a `SessionPool`; a closed session's conversation stays in the history database and
reopens from there. Thread-safe.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable, Hashable

MAX_SESSIONS = 32  # open sessions kept by default
MAX_CACHED_TOKENS = 65536  # KV-cached tokens over all open sessions, by default


class SessionPool:
    """key -> open ChatSession. `open(key, make)` returns it (making it when absent) as the most recently used."""

    def __init__(self, *, max_sessions: int = MAX_SESSIONS, max_cached_tokens: int = MAX_CACHED_TOKENS,
                 in_use: Callable[[Hashable], bool] = lambda key: False):
        if max_sessions < 1 or max_cached_tokens < 1:
            raise ValueError(f"a session pool needs max_sessions and max_cached_tokens >= 1, "
                             f"got {max_sessions} and {max_cached_tokens}")
        self.max_sessions, self.max_cached_tokens = max_sessions, max_cached_tokens
        self.in_use = in_use  # key -> True while a request works on that session: trim passes it over
        self._open: OrderedDict[Hashable, object] = OrderedDict()
        self._lock = threading.RLock()
        self.closed = 0  # sessions closed to stay within the bounds

    def __len__(self) -> int:
        return len(self._open)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._open

    def get(self, key: Hashable):
        """The open session at `key` (now the most recently used), or None."""
        with self._lock:
            found = self._open.get(key)
            if found is not None:
                self._open.move_to_end(key)
            return found

    def open(self, key: Hashable, make: Callable[[], object]):
        """The session at `key`, made by `make()` when none is open; then closes the least recently used
        others until the bounds hold again."""
        with self._lock:
            found = self.get(key)
            if found is None:
                found = self._open[key] = make()
            self.trim()
            return found

    def drop(self, key: Hashable) -> None:
        """Closes the session at `key`, if open; the next `open` makes a new one."""
        with self._lock:
            found = self._open.pop(key, None)
        if found is not None:
            found.close()

    def trim(self) -> None:
        """Closes the least recently used sessions not in use until both bounds hold; the newest one always stays."""
        with self._lock:
            while len(self._open) > 1 and (len(self._open) > self.max_sessions
                                           or self.cached_tokens() > self.max_cached_tokens):
                key = next((k for k in list(self._open)[:-1] if not self.in_use(k)), None)
                if key is None:
                    return  # every older session is answering a request right now
                self._open.pop(key).close()
                self.closed += 1

    def cached_tokens(self) -> int:
        """Tokens in the KV caches of the open sessions (and scenes: their members')."""
        return sum(s.cached_tokens for s in self._open.values())
