"""Chat sessions kept open between requests, so each keeps its KV cache, in a bounded `SessionPool`.

A client session id maps to one stored conversation per persona (history channel "openai:<id>"); a closed
session reopens from that stored history. Stateless requests share one unsaved session per persona, whose
decoder still reuses whatever token prefix the last request left in its cache. The plain model (persona
None: the bare LM) has its sessions here too, stored under its model id.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Hashable, Iterator, Optional

from ..chat.pool import SessionPool
from .errors import APIError

CHANNEL_PREFIX = "openai:"  # history channel of an API session: keeps them apart from other front-ends'


class SessionCache:
    """(client session id or None, persona slug or None for the plain model) -> ChatSession. Jobs run on many
    threads: each takes its session with `checkout` (one request per session at a time)."""

    def __init__(self, agent, *, max_sessions: int, max_cached_tokens: int):
        self.agent = agent
        self._locks: dict[Hashable, threading.Lock] = {}
        self._locks_lock = threading.Lock()
        self.pool = SessionPool(max_sessions=max_sessions, max_cached_tokens=max_cached_tokens,
                                in_use=lambda key: self._lock_of(key).locked())

    def _lock_of(self, key: Hashable) -> threading.Lock:
        with self._locks_lock:
            found = self._locks.get(key)
            if found is None:
                if len(self._locks) > 4 * self.pool.max_sessions:  # forget the locks of idle keys
                    self._locks = {k: v for k, v in self._locks.items() if v.locked()}
                found = self._locks[key] = threading.Lock()
            return found

    @contextmanager
    def held(self, key: Hashable) -> Iterator[None]:
        """Waits until no other request works on `key`'s session (or scene), and holds it for the block."""
        lock = self._lock_of(key)
        with lock:
            yield

    def under(self, key: Hashable, fn):
        """`fn` wrapped to run while holding `key` (see `held`): for work on a session after its request ended."""
        def run(*args):
            with self.held(key):
                return fn(*args)
        return run

    @contextmanager
    def checkout(self, persona, session_id: Optional[str]):
        """The session for this client id and persona, held for the block. A stateless request whose shared
        session is busy with another gets a session of its own (the persona's prefix cache still applies)."""
        key = (session_id, None if persona is None else persona.slug)
        lock = self._lock_of(key)
        if session_id is None and not lock.acquire(blocking=False):
            own = self._load(persona, None)
            try:
                yield own
            finally:
                own.decoder.reset()
            return
        if session_id is not None:
            lock.acquire()
        try:
            yield self.open(persona, session_id)
        finally:
            lock.release()

    def __len__(self) -> int:
        return len(self.pool)

    def open(self, persona, session_id: Optional[str]):
        """The session for this client id and persona (None: the plain model), reopened from the store when it
        was closed."""
        key = (session_id, None if persona is None else persona.slug)
        found = self.pool.get(key)
        if found is not None and persona is not None and found.persona != self.agent.shown(persona):
            # re-imported since: its new card
            self.pool.drop(key)
        return self.pool.open(key, lambda: self._load(persona, session_id))

    def existing(self, persona, session_id: str):
        """The session for this client id and persona if it is open or stored, else None: reads (GET memory)
        never start one, so unknown ids can't grow the history database."""
        owner = self.agent.plain_model if persona is None else persona.slug
        if (session_id, None if persona is None else persona.slug) not in self.pool \
                and self.agent.history.latest_session(owner, CHANNEL_PREFIX + session_id) is None:
            return None
        return self.open(persona, session_id)

    def _load(self, persona, session_id: Optional[str]):
        plain, slug = persona is None, None if persona is None else persona.slug
        if session_id is None:
            return self.agent.open_session(slug, save=False, plain=plain)
        channel = CHANNEL_PREFIX + session_id
        sid = self.agent.history.latest_session(self.agent.plain_model if plain else slug, channel)
        return self.agent.open_session(session_id=sid) if sid is not None \
            else self.agent.open_session(slug, channel=channel, plain=plain)

    def trim(self) -> None:
        """Closes the least recently used sessions until both bounds hold (the newest one always stays)."""
        self.pool.trim()


def stored_session(sessions: SessionCache, persona, session_id: str):
    """The stored session (call it holding the session), or 404: reads and edits must not start a session."""
    found = sessions.existing(persona, session_id)
    if found is None:
        raise APIError(404, f"no session {session_id!r} with {persona.slug!r}: a chat completion with this "
                       f"session id (X-Session-Id or user) starts one", code="session_not_found", param="session_id")
    return found
