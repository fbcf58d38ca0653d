"""One chat completion on a job thread: session, history, per-request sampling, stop strings, usage.

`complete(sessions, request, job)` streams text pieces through `job.emit` and returns a `Completion`
(`continue_last` the same for more of a stored session's last reply); the chat route turns both into OpenAI's
response or its server-sent chunks. A client that goes away mid-reply keeps only what it received:
`Completion.keep_received` cuts the stored turn to that.
"""
from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Iterator, Optional, Sequence

from ..chat.prompt import Message, greeting
from ..chat.template import StopCutter
from .conversation import FORK, RETRY, Turn, prompt_history, reconcile, stored_form, stored_pairs
from .sessions import SessionCache, stored_session
from .jobs import Job

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
    # run as a job when the client went away: the stored reply becomes the text it received ("": the
    # message and its reply go); None: nothing was stored (a stateless request)
    keep_received: Optional[Callable[[str], None]] = field(default=None, repr=False, compare=False)
    guard: str = ""  # what the guard did (agent/chat/guard.py GuardReport.header), for X-Personae-Guard


def stored_last(store, session_id: int, written: Sequence[Message]) -> bool:
    """Whether the session's newest stored messages are still `written` (no later request moved it on)."""
    return bool(written) and store.messages(session_id)[-len(written):] == list(written)


def _keep_received(session, written: list[Message], base: str, undo: Callable[[], None], received: str) -> None:
    """Cuts the turn `written` (the message and its reply) to what the client received of the reply: `base`
    (the text a continued reply had) plus `received`; nothing received: `undo` (drop the turn, or the new
    alternative of a regenerated reply, or the continuation)."""
    whole = (base + received).strip()
    if not stored_last(session.store, session.id, written) or whole == written[-1].content:
        return
    if received.strip():
        session.correct_last_reply(whole)
    else:
        undo()


class Halt(threading.Event):
    """Stops a reply: set when a stop string was written, and reads as set as soon as `gone` is (the job's
    cancel: the client went away), so fitting the prompt and decoding stop without waiting for a piece."""

    def __init__(self, gone: threading.Event):
        super().__init__()
        self.gone = gone

    def is_set(self) -> bool:
        return super().is_set() or self.gone.is_set()


def _pieces(session, request: ChatRequest, halt: threading.Event) -> tuple[Iterator[str], Callable[[], None]]:
    """(the reply's pieces, what undoes the reply when its client received none of it); on a saved session,
    first brings the store in line with a resent conversation."""
    turn = request.turn
    session.leave_prompt_to_client(request.client_card)
    card_greeting = greeting(session.card, session.user_name) if session.adds_card else ""
    if session.saved:  # the store is authoritative: a closed and reopened session behaves the same
        stored = session.store.messages(session.id)
        if stored and stored[-1].role == "user":  # its reply was deleted: this request answers it again
            unanswered = session.delete_last().content
            stored = stored[:-1]
            if not turn.resent:
                turn = dataclasses.replace(turn, text=f"{unanswered}\n\n{turn.text}")
    else:
        stored = [Message("assistant", card_greeting)] if card_greeting else []
    prior = prompt_history(turn, stored, card_greeting)
    sampling = _sampling(session, request)
    if session.saved and turn.resent:
        action = reconcile(stored, stored_form(prior), turn.text)
        if action == RETRY:
            session.replace_history(prior + [Message("user", turn.text), stored[-1]])
            return session.retry(cancel=halt, sampling=sampling), session.drop_swipe
        if action == FORK:
            session.fork(*stored_pairs(prior))
    session.replace_history(prior)
    return session.reply(turn.text, cancel=halt, sampling=sampling), session.drop_last_turn


def _sampling(session, request):
    return session.options(max_new_tokens=request.max_tokens, temperature=request.temperature,
                           top_p=request.top_p, seed=request.seed)


def complete(sessions: SessionCache, request: ChatRequest, job: Job) -> Completion:
    with sessions.checkout(request.persona, request.session_id) as session:
        halt = Halt(job.cancel)  # stops fitting and decoding: the client went away, or a stop string was written
        pieces, undo = _pieces(session, request, halt)
        return _stream(sessions, session, request, job, halt, pieces, undo=undo)


@dataclass(frozen=True)
class Continuation:
    persona: object  # the Persona of the stored session
    session_id: str  # the client's session id
    max_tokens: Optional[int]  # None keeps chat.max_new_tokens
    temperature: Optional[float]
    top_p: Optional[float]
    seed: Optional[int]
    stop: tuple[str, ...]


def continue_last(sessions: SessionCache, request: Continuation, job: Job) -> Completion:
    """Continues the stored session's last reply (ChatSession.continue_reply); the completion's text is the
    part added. 404 when no such session is stored."""
    with sessions.held((request.session_id, request.persona.slug)):
        session = stored_session(sessions, request.persona, request.session_id)
        halt = Halt(job.cancel)
        written = session.messages[-1].content if session.messages else ""
        pieces = session.continue_reply(cancel=halt, sampling=_sampling(session, request))
        return _stream(sessions, session, request, job, halt, pieces, base=written,
                       undo=partial(session.correct_last_reply, written))


def _stream(sessions: SessionCache, session, request, job: Job, halt: Halt, pieces: Iterator[str], *,
            undo: Callable[[], None], base: str = "") -> Completion:
    """Emits `pieces` through the client's stop strings; the stored reply is `base` + what was written."""
    stopper = StopCutter(request.stop)
    try:
        for piece in pieces:
            job.info.setdefault("guard", session.last_guard.header())  # the first piece passed the guard
            job.emit(stopper.feed(piece))
            if stopper.stopped or job.cancel.is_set():
                halt.set()  # keep draining: the session saves the turn when its stream ends
        job.emit(stopper.flush())
    finally:
        sessions.trim()
    if stopper.stopped:
        session.correct_last_reply((base + stopper.text).strip())
    stats = session.last_stats
    key = (request.session_id, None if request.persona is None else request.persona.slug)
    keep = sessions.under(key, partial(_keep_received, session, session.messages[-2:], base, undo)) \
        if session.saved else None
    return Completion(text=stopper.text.rstrip() if base else stopper.text.strip(),
                      finish_reason=FINISH_REASONS.get(stats.stopped_by, "stop"),
                      prompt_tokens=stats.prompt_tokens, completion_tokens=stats.new_tokens,
                      cached_tokens=stats.prompt_tokens - stats.prefill_tokens, keep_received=keep,
                      guard=session.last_guard.header())
