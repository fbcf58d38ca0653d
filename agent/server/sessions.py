"""Chat sessions kept open between requests, so each keeps its KV cache; bounded, least recently used first out.

A client session id maps to one stored conversation per persona (history channel "openai:<id>"); an
evicted session reopens from that stored history. Stateless requests share one unsaved session per persona,
whose decoder still reuses whatever token prefix the last request left in its cache.
"""
from __future__ import annotations

import dataclasses
from collections import OrderedDict
from dataclasses import dataclass
from typing import Optional

CHANNEL_PREFIX = "openai:"  # history channel of an API session: keeps them apart from other front-ends'


@dataclass
class OpenSession:
    session: object  # the ChatSession, with its decoder and KV cache
    sampling: object  # its SamplingOptions from the config; each request replaces fields of these
    chat: object  # its ChatConfig from the config
    saved: bool  # False for a stateless session

    @property
    def cached_tokens(self) -> int:
        return len(self.session.decoder.ids)


class SessionCache:
    """(client session id or None, persona slug) -> OpenSession. Used from the model worker thread only."""

    def __init__(self, agent, *, max_sessions: int, max_cached_tokens: int):
        self.agent = agent
        self.max_sessions = max_sessions
        self.max_cached_tokens = max_cached_tokens
        self._open: OrderedDict[tuple[Optional[str], str], OpenSession] = OrderedDict()
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._open)

    def open(self, persona, session_id: Optional[str]) -> OpenSession:
        """The session for this client id and persona, reopened from the store when it was evicted."""
        key = (session_id, persona.slug)
        found = self._open.get(key)
        if found is not None and found.session.persona != persona:  # re-imported since: start from its new card
            found.session.decoder.reset()
            found = None
        if found is None:
            found = self._load(persona, session_id)
            self._open[key] = found
        self._open.move_to_end(key)
        return found

    def _load(self, persona, session_id: Optional[str]) -> OpenSession:
        history = self.agent.history
        if session_id is None:
            session = self.agent.open_session(persona.slug, save=False)
        else:
            channel = CHANNEL_PREFIX + session_id
            sid = history.latest_session(persona.slug, channel)
            session = self.agent.open_session(session_id=sid) if sid is not None \
                else self.agent.open_session(persona.slug, channel=channel)
        return OpenSession(session, session.sampling, session.chat, saved=session_id is not None)

    def fork(self, open_session: OpenSession, greeting: str, turns: list[tuple[str, str]], session_id: str) -> None:
        """Points `open_session` at a new stored conversation holding `turns` (the client rewrote the old one)."""
        history = self.agent.history
        session = open_session.session
        new_id = history.create_session(session.persona.slug, greeting, CHANNEL_PREFIX + session_id)
        for user, reply in turns:
            history.append_turn(new_id, user, reply)
        session.id = new_id
        if session.context is not None:
            session.context.session_id = new_id  # memory belongs to the stored conversation
        session.messages = history.messages(new_id)
        session.kept_from = 0

    def trim(self) -> None:
        """Drops the least recently used sessions until both bounds hold (the newest one always stays)."""
        while len(self._open) > 1 and (len(self._open) > self.max_sessions or
                                       sum(s.cached_tokens for s in self._open.values()) > self.max_cached_tokens):
            _, dropped = self._open.popitem(last=False)
            dropped.session.decoder.reset()
            self.evictions += 1

    def request_options(self, entry: OpenSession, *, max_tokens: Optional[int], temperature: Optional[float],
                        top_p: Optional[float], seed: Optional[int]) -> None:
        """Sets this request's sampling on the session; fields the client left out keep the config's values."""
        given = {"temperature": temperature, "top_p": top_p, "seed": seed}
        sampling = dataclasses.replace(entry.sampling, **{k: v for k, v in given.items() if v is not None})
        chat = entry.chat
        if max_tokens is not None:
            chat = dataclasses.replace(chat, max_new_tokens=max_tokens)  # the prompt budget leaves room for it
            sampling = dataclasses.replace(sampling, max_new_tokens=max_tokens)
        entry.session.sampling, entry.session.chat = sampling, chat
