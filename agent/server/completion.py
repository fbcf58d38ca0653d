"""One chat completion on the model worker: session, history, per-request sampling, stop strings, usage.

`complete(sessions, request, job)` streams text pieces through `job.emit` and returns a `Completion`;
the chat route turns both into OpenAI's response or its server-sent chunks.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Iterator, Optional

from ..chat.prompt import Message, greeting
from ..chat.template import StopCutter
from .conversation import FORK, RETRY, Turn, prompt_history, reconcile, stored_form, stored_pairs
from .sessions import SessionCache
from .worker import Job

FINISH_REASONS = {"eos": "stop", "stop string": "stop", "cancelled": "stop", "max_new_tokens": "length"}


@dataclass(frozen=True)
class ChatRequest:
    persona: object  # the Persona the `model` field named; None: the plain model (the bare LM)
    turn: Turn  # the client's messages, read
    client_card: bool  # the client's system text holds the persona's card (agent/server/card_guard.py): add none
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
    speaker: str = ""  # in a group scene: the slug of the persona that wrote the reply
    guard: str = ""  # what the guard did (agent/chat/guard.py GuardReport.header), for X-Personae-Guard


def _pieces(session, request: ChatRequest, halt: threading.Event) -> Iterator[str]:
    """The reply's pieces; on a saved session, first brings the store in line with a resent conversation."""
    turn = request.turn
    session.leave_prompt_to_client(request.client_card)
    card_greeting = greeting(session.card, session.user_name) if session.adds_card else ""
    if session.saved:  # the store is authoritative: a closed and reopened session behaves the same
        stored = session.store.messages(session.id)
    else:
        stored = [Message("assistant", card_greeting)] if card_greeting else []
    prior = prompt_history(turn, stored, card_greeting)
    sampling = session.options(max_new_tokens=request.max_tokens, temperature=request.temperature,
                               top_p=request.top_p, seed=request.seed)
    if session.saved and turn.resent:
        action = reconcile(stored, stored_form(prior), turn.text)
        if action == RETRY:
            session.replace_history(prior + [Message("user", turn.text), stored[-1]])
            return session.retry(cancel=halt, sampling=sampling)
        if action == FORK:
            session.fork(*stored_pairs(prior))
    session.replace_history(prior)
    return session.reply(turn.text, cancel=halt, sampling=sampling)


def complete(sessions: SessionCache, request: ChatRequest, job: Job) -> Completion:
    session = sessions.open(request.persona, request.session_id)
    halt = threading.Event()  # stops the decoder: the client went away, or a stop string was written
    stopper = StopCutter(request.stop)
    try:
        for piece in _pieces(session, request, halt):
            job.info.setdefault("guard", session.last_guard.header())  # the first piece passed the guard
            job.emit(stopper.feed(piece))
            if stopper.stopped or job.cancel.is_set():
                halt.set()  # keep draining: the session saves the turn when its stream ends
        job.emit(stopper.flush())
    finally:
        sessions.trim()
    if stopper.stopped:
        session.correct_last_reply(stopper.text.strip())
    stats = session.last_stats
    return Completion(text=stopper.text.strip(), finish_reason=FINISH_REASONS.get(stats.stopped_by, "stop"),
                      prompt_tokens=stats.prompt_tokens, completion_tokens=stats.new_tokens,
                      cached_tokens=stats.prompt_tokens - stats.prefill_tokens, guard=session.last_guard.header())
