"""POST /v1/chat/completions: `model` picks the persona or the plain model (the bare LM); the reply streams as
server-sent chunks or comes whole.

The request is checked against the caps here, read into a `ChatRequest`, and run by `complete` on the
job runner (decoding batched with other requests); a session id (X-Session-Id header or `user`) keeps a server-side session across requests.
`X-Personae-Card` says whose card the prompt holds: `personae` (the persona's, added by personae), `client`
(the client's system text held it, so personae added none) or `none` (the plain model). `X-Personae-Guard` says
what the guard did (agent/chat/guard.py): `retried=1 rule=changes_name`, `off`; a streamed response's says
what was known when its first text passed the guard, before the response head.
"""
from __future__ import annotations

import json
import logging
import secrets
import time
from functools import partial
from typing import Annotated, AsyncIterator, Optional

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from ...chat.guard import HEADER as GUARD_HEADER
from ..card_guard import holds_card
from ..completion import ChatRequest, Completion, complete
from ..conversation import named_text, read_turn
from ..deps import StateDep, persona_named
from ..dispatch import ClientGone, keep_received, run_job, submit, until_done_or_gone
from ..errors import APIError, as_api_error, error_body
from ..scene_completion import SPEAKER_HEADER, SceneRequest, complete_scene, named_scene_members, scene_names
from ..schemas import ChatCompletionRequest, SamplingBody
from ..settings import ServerSettings
from ..jobs import DONE, PIECE, Job, JobRunner

router = APIRouter(prefix="/v1", tags=["chat"])
MAX_STOP_STRINGS = 16  # OpenAI allows 4; SillyTavern may send more (its custom stopping strings)
CARD_HEADER = "X-Personae-Card"
PLAIN_CHAR = "Assistant"  # who speaks example_assistant's lines to the plain model when no assistant message is named
log = logging.getLogger(__name__)


def _checked(body: ChatCompletionRequest, settings: ServerSettings) -> Optional[int]:
    """Refuses what the caps don't allow; returns the requested max_tokens (None: the config's)."""
    if body.n not in (None, 1):
        raise APIError(400, f"n: only n=1 is supported, got {body.n}", code="unsupported_value", param="n")
    if len(body.messages) > settings.max_messages:
        raise APIError(400, f"messages: {len(body.messages)} messages, over the limit of {settings.max_messages}",
                       code="too_many_messages", param="messages")
    return checked_sampling(body, settings)


def checked_sampling(body: SamplingBody, settings: ServerSettings) -> Optional[int]:
    """Refuses stop strings and max_tokens over the caps; returns the requested max_tokens (None: the config's)."""
    if len(body.stop_strings()) > MAX_STOP_STRINGS:
        raise APIError(400, f"stop: at most {MAX_STOP_STRINGS} stop strings", code="invalid_value", param="stop")
    max_tokens = body.max_completion_tokens or body.max_tokens
    if max_tokens is not None and max_tokens > settings.max_tokens:
        raise APIError(400, f"max_tokens: {max_tokens} is over this server's limit of {settings.max_tokens}",
                       code="max_tokens_too_large", param="max_tokens")
    return max_tokens


def _session_id(header: Optional[str], user: Optional[str]) -> Optional[str]:
    chosen = (header or user or "").strip()
    if len(chosen) > 200 or not chosen.isprintable():
        raise APIError(400, "the session id (X-Session-Id or user) must be printable and at most 200 characters",
                       code="invalid_value", param="user")
    return chosen or None


def _response(ident: str, model: str, created: int, done: Completion) -> dict:
    return {"id": ident, "object": "chat.completion", "created": created, "model": model, "system_fingerprint": None,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": done.text, "refusal": None,
                                                 **({"name": done.speaker} if done.speaker else {})},
                         "logprobs": None, "finish_reason": done.finish_reason}],
            "usage": _usage(done)}


def _usage(done: Completion) -> dict:
    return {"prompt_tokens": done.prompt_tokens, "completion_tokens": done.completion_tokens,
            "total_tokens": done.prompt_tokens + done.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": done.cached_tokens}}


def _sse(body: dict) -> str:
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


async def _chunks(runner: JobRunner, job: Job, first: tuple, ident: str, model: str, created: int,
                  include_usage: bool) -> AsyncIterator[str]:
    """OpenAI's chunk stream: a role delta, content deltas, a finish_reason, usage if asked, then [DONE].

    A client that goes away mid-reply keeps in the history only the content it received: the chunks written
    before the disconnect was seen (a chunk counts once the server asks for the next, its write done).
    """
    head = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model,
            "system_fingerprint": None}

    def chunk(delta: dict, finish: Optional[str] = None) -> str:
        return _sse({**head, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]})

    finished, received = False, ""
    try:
        speaker = job.info.get("speaker")
        yield chunk({"role": "assistant", "content": "", **({"name": speaker} if speaker else {})})
        kind, value = first
        while kind == PIECE:
            yield chunk({"content": value})
            received += value
            kind, value = await job.next_event()
        finished = True
        if kind == DONE:
            yield chunk({}, value.finish_reason)
            if include_usage:
                yield _sse({**head, "choices": [], "usage": _usage(value)})
        else:
            error = as_api_error(value)
            yield _sse(error_body(error.status, error.message, error.code, error.param))
        yield "data: [DONE]\n\n"
    finally:
        if not finished:  # the client went away mid-stream: stop its generation, keep what it received
            job.cancel.set()
            keep_received(runner, job, received)


def _speaker(body: ChatCompletionRequest, role: str, default: str) -> str:
    """The name the client gives `role`'s messages (SillyTavern does with names in the completion object)."""
    return next((m.name.strip() for m in body.messages if m.role == role and m.name and m.name.strip()), default)


def _turn(body: ChatCompletionRequest, persona, user: str):
    """The request's messages as a Turn (developer read as system, example speakers named); 400 when unanswerable."""
    char = persona.name if persona is not None else _speaker(body, "assistant", PLAIN_CHAR)
    user = _speaker(body, "user", user)
    messages = []
    for m in body.messages:
        role = "system" if m.role == "developer" else m.role
        messages.append((role, named_text(role, m.text(), m.name, user=user, char=char)))
    try:
        return read_turn(messages)
    except ValueError as e:
        raise APIError(400, str(e), code="invalid_value", param="messages") from None


def _card_owner(persona, turn, state) -> str:
    """Whose card the prompt holds: none (plain model), client (the duplicate guard fired) or personae."""
    if persona is None:
        return "none"
    if state.settings.card_guard and turn.system and holds_card(turn.system, persona.card):
        log.debug("the client's system text holds %s's card: personae adds no card of its own", persona.slug)
        return "client"
    return "personae"


async def _scene_run(body: ChatCompletionRequest, state, session_id: Optional[str], speaker: Optional[str],
                     max_tokens: Optional[int]):
    """The job of a group scene's request (`model` = 'mara+hale'), or None for a one-persona model."""
    try:
        names = scene_names(body.model)
    except ValueError as e:
        raise APIError(404, str(e), code="model_not_found", param="model") from None
    if names is None:
        names = await run_in_threadpool(named_scene_members, state.agent, body.model)
    if names is None:
        return None
    personas = tuple([await persona_named(state.agent, name) for name in names])
    chat = SceneRequest(personas=personas, session_id=session_id, speaker=speaker,
                        messages=tuple(("system" if m.role == "developer" else m.role, m.text(), m.name or "")
                                       for m in body.messages),
                        max_tokens=max_tokens, temperature=body.temperature, top_p=body.top_p, seed=body.seed,
                        stop=body.stop_strings())
    return partial(complete_scene, state.sessions, chat)


@router.post("/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request, state: StateDep,
                           x_session_id: Annotated[Optional[str], Header()] = None,
                           x_personae_speaker: Annotated[Optional[str], Header()] = None):
    max_tokens = _checked(body, state.settings)
    run = await _scene_run(body, state, _session_id(x_session_id, body.user), x_personae_speaker, max_tokens)
    if run is not None:
        return await answer(body, request, state, run, {})
    persona = None if body.model == state.agent.plain_model else await persona_named(state.agent, body.model)
    turn = _turn(body, persona, state.agent.config.chat.user_name)
    owner = _card_owner(persona, turn, state)
    chat = ChatRequest(persona=persona, turn=turn, client_card=owner == "client",
                       session_id=_session_id(x_session_id, body.user),
                       max_tokens=max_tokens, temperature=body.temperature, top_p=body.top_p, seed=body.seed,
                       stop=body.stop_strings())
    return await answer(body, request, state, partial(complete, state.sessions, chat), {CARD_HEADER: owner})


async def answer(body: SamplingBody, request: Request, state, run, headers: dict[str, str]):
    """Runs the job; the whole response, or its server-sent chunks, with `headers`; a scene's speaker in one too."""
    ident, created = f"chatcmpl-{secrets.token_hex(12)}", int(time.time())
    try:
        if not body.stream:
            done = await run_job(request, state.jobs, run)
            if done.speaker:
                headers = {**headers, SPEAKER_HEADER: done.speaker}
            if done.guard:
                headers = {**headers, GUARD_HEADER: done.guard}
            return JSONResponse(_response(ident, body.model, created, done), headers=headers)
        job = submit(state.jobs, run)
        first = await until_done_or_gone(request, job, job.next_event())  # errors before any text get a status
    except ClientGone as gone:  # it received none of the reply: none of the turn is kept
        keep_received(state.jobs, gone.job, "")
        raise
    if first[0] not in (PIECE, DONE):
        raise as_api_error(first[1])
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    speaker = {SPEAKER_HEADER: job.info["speaker"]} if "speaker" in job.info else {}
    guard = job.info.get("guard") or (first[1].guard if first[0] == DONE else "")
    return StreamingResponse(_chunks(state.jobs, job, first, ident, body.model, created, include_usage),
                             media_type="text/event-stream", headers={"Cache-Control": "no-cache", **headers, **speaker,
                                                                      **({GUARD_HEADER: guard} if guard else {})})
