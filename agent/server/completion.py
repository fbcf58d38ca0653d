"""One chat completion on the model worker: session, history, per-request sampling, stop strings, usage.

`complete(sessions, request, job)` streams text pieces through `job.emit` and returns a `Completion`;
the chat route turns both into OpenAI's response or its server-sent chunks.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

from ..chat.prompt import Message, greeting
from .conversation import FORK, RETRY, Turn, prompt_history, reconcile, stored_form, stored_pairs
from .sessions import OpenSession, SessionCache
from .worker import Job

FINISH_REASONS = {"eos": "stop", "stop string": "stop", "cancelled": "stop", "max_new_tokens": "length"}


@dataclass(frozen=True)
class ChatRequest:
    persona: object  # the Persona the `model` field named
    turn: Turn  # the client's messages, read
    session_id: Optional[str]  # None: stateless
    max_tokens: Optional[int]  # None keeps chat.max_new_tokens
    temperature: Optional[float]
    top_p: Optional[float]
    seed: Optional[int]
    stop: tuple[str, ...]  # the client's stop strings (the persona's own always apply)


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str  # "stop" | "length"
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int  # prompt tokens whose KV cache was reused, not recomputed


class StopFilter:
    """Cuts streamed text at the first client stop string, holding back a tail that could start one."""

    def __init__(self, stops: Sequence[str]):
        self.stops = [s for s in stops if s]
        self.text = ""
        self.shown = 0
        self.stopped = False

    def feed(self, piece: str) -> str:
        if self.stopped:
            return ""
        self.text += piece
        cut = min((self.text.find(s) for s in self.stops if s in self.text), default=-1)
        if cut >= 0:
            self.text, self.stopped = self.text[:cut], True
            return self.flush()
        hold = max((k for s in self.stops for k in range(1, len(s)) if self.text.endswith(s[:k])), default=0)
        safe = len(self.text) - hold
        out = self.text[self.shown:safe] if safe > self.shown else ""
        self.shown = max(self.shown, safe)
        return out

    def flush(self) -> str:
        out, self.shown = self.text[self.shown:], len(self.text)
        return out


def _pieces(sessions: SessionCache, entry: OpenSession, request: ChatRequest, halt: threading.Event) -> Iterator[str]:
    """The reply's pieces; on a saved session, first brings the store in line with a resent conversation."""
    session, turn = entry.session, request.turn
    card_greeting = greeting(session.persona.card, session.user_name)
    if entry.saved:  # the store is authoritative: an evicted and reopened session behaves the same
        stored = session.store.messages(session.id)
    else:
        stored = [Message("assistant", card_greeting)] if card_greeting else []
    prior = prompt_history(turn, stored, card_greeting)
    if prior[:len(session.messages)] != session.messages:
        session.kept_from = 0  # not an extension of the last prompt's history: its drop point means nothing here
    if entry.saved and turn.resent:
        action = reconcile(stored, stored_form(prior), turn.text)
        if action == RETRY:
            session.messages = prior + [Message("user", turn.text), stored[-1]]
            return session.retry(cancel=halt)
        if action == FORK:
            sessions.fork(entry, *stored_pairs(prior), session_id=request.session_id)
    session.messages = prior
    return session.reply(turn.text, cancel=halt)


def complete(sessions: SessionCache, request: ChatRequest, job: Job) -> Completion:
    entry = sessions.open(request.persona, request.session_id)
    sessions.request_options(entry, max_tokens=request.max_tokens, temperature=request.temperature,
                             top_p=request.top_p, seed=request.seed)
    halt = threading.Event()  # stops the decoder: the client went away, or a stop string was written
    stopper = StopFilter(request.stop)
    try:
        for piece in _pieces(sessions, entry, request, halt):
            job.emit(stopper.feed(piece))
            if stopper.stopped or job.cancel.is_set():
                halt.set()  # keep draining: the session saves the turn when its stream ends
        job.emit(stopper.flush())
    finally:
        sessions.trim()
    session = entry.session
    if stopper.stopped and entry.saved:
        session.store.replace_last_reply(session.id, stopper.text.strip())
        session.messages = session.messages[:-1] + [Message("assistant", stopper.text.strip())]
    stats = session.last_stats
    return Completion(text=stopper.text.strip(), finish_reason=FINISH_REASONS.get(stats.stopped_by, "stop"),
                      prompt_tokens=stats.prompt_tokens, completion_tokens=stats.new_tokens,
                      cached_tokens=stats.prompt_tokens - stats.prefill_tokens)
