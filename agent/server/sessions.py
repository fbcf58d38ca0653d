"""Chat sessions kept open between requests, so each keeps its KV cache, in a bounded `SessionPool`.

A client session id maps to one stored conversation per persona (history channel "openai:<id>"); a closed
session reopens from that stored history. Stateless requests share one unsaved session per persona, whose
decoder still reuses whatever token prefix the last request left in its cache.
"""
from __future__ import annotations

from typing import Optional

from ..chat.pool import SessionPool

CHANNEL_PREFIX = "openai:"  # history channel of an API session: keeps them apart from other front-ends'


class SessionCache:
    """(client session id or None, persona slug) -> ChatSession. Used from the model worker thread only."""

    def __init__(self, agent, *, max_sessions: int, max_cached_tokens: int):
        self.agent = agent
        self.pool = SessionPool(max_sessions=max_sessions, max_cached_tokens=max_cached_tokens)

    def __len__(self) -> int:
        return len(self.pool)

    def open(self, persona, session_id: Optional[str]):
        """The session for this client id and persona, reopened from the store when it was closed."""
        key = (session_id, persona.slug)
        found = self.pool.get(key)
        if found is not None and found.persona != self.agent.shown(persona):  # re-imported since: its new card
            self.pool.drop(key)
        return self.pool.open(key, lambda: self._load(persona, session_id))

    def _load(self, persona, session_id: Optional[str]):
        if session_id is None:
            return self.agent.open_session(persona.slug, save=False)
        channel = CHANNEL_PREFIX + session_id
        sid = self.agent.history.latest_session(persona.slug, channel)
        return self.agent.open_session(session_id=sid) if sid is not None \
            else self.agent.open_session(persona.slug, channel=channel)

    def trim(self) -> None:
        """Closes the least recently used sessions until both bounds hold (the newest one always stays)."""
        self.pool.trim()
