"""Changes to a saved API session's last message, at once: continue the last reply, choose among its stored
alternatives (swipes), edit or delete the newest message.

    POST   /v1/sessions/{id}/continue         {model, stream?, max_tokens?, ...}  more of the last reply, streamed
    PUT    /v1/sessions/{id}/swipes/chosen    {model, index}    the last reply shows its alternative `index`
    PUT    /v1/sessions/{id}/messages/last    {model, content}  the newest message gets new text
    DELETE /v1/sessions/{id}/messages/last?model=P              the newest message goes

The alternatives come with GET /v1/sessions/{id}/messages (routes/sessions.py). Each change runs as a job
holding the session (one request at a time per session), on the session a chat completion with the same id
and `model` uses (ChatSession's methods: the one place a conversation changes); a session never stored is a
404. Edits answer with the stored conversation as it now is. Group scenes are not covered (400).
"""
from __future__ import annotations

from functools import partial
from typing import Callable

from fastapi import APIRouter, Request
from pydantic import ConfigDict, Field

from ..completion import Continuation, continue_last
from ..deps import StateDep, persona_named
from ..dispatch import run_job
from ..errors import APIError
from ..schemas import ContinueRequest, TextBody
from ..sessions import stored_session
from .chat import answer, checked_sampling
from .memory import _sid
from .sessions import messages_body

router = APIRouter(prefix="/v1/sessions", tags=["sessions"])


class ChooseRequest(TextBody):
    model_config = ConfigDict(extra="forbid")
    model: str = Field(min_length=1, max_length=200)  # the persona
    index: int = Field(ge=0)  # the alternative to show, 0-based in the order written


class EditRequest(TextBody):
    model_config = ConfigDict(extra="forbid")
    model: str = Field(min_length=1, max_length=200)  # the persona
    content: str = Field(min_length=1)  # the newest message's new text


async def _persona(state, model: str):
    if "+" in model:
        raise APIError(400, "a group scene's lines can't be changed here: only one persona's chats",
                       code="unsupported_value", param="model")
    return await persona_named(state.agent, model)


def _change(sessions, history, persona, session_id: str, change: Callable, job) -> dict:
    """Applies `change(session)` holding the stored session; the conversation as it is now."""
    with sessions.held((session_id, persona.slug)):
        session = stored_session(sessions, persona, session_id)
        change(session)
        return messages_body(history, session.id, session_id, persona.slug)


def _choose(index: int, session) -> None:
    try:
        session.choose_swipe(index)
    except IndexError as e:
        raise APIError(400, str(e), code="invalid_value", param="index") from None


async def _run_change(request: Request, state: StateDep, session_id: str, model: str, change: Callable) -> dict:
    persona = await _persona(state, model)
    return await run_job(request, state.jobs, partial(_change, state.sessions, state.agent.history, persona,
                                                      _sid(session_id), change))


@router.put("/{session_id}/swipes/chosen")
async def choose_swipe(session_id: str, body: ChooseRequest, request: Request, state: StateDep) -> dict:
    return await _run_change(request, state, session_id, body.model, partial(_choose, body.index))


@router.put("/{session_id}/messages/last")
async def edit_last(session_id: str, body: EditRequest, request: Request, state: StateDep) -> dict:
    return await _run_change(request, state, session_id, body.model, lambda session: session.edit_last(body.content))


@router.delete("/{session_id}/messages/last")
async def delete_last(session_id: str, model: str, request: Request, state: StateDep) -> dict:
    return await _run_change(request, state, session_id, model, lambda session: session.delete_last())


@router.post("/{session_id}/continue")
async def continue_reply(session_id: str, body: ContinueRequest, request: Request, state: StateDep):
    """More of the last reply, as a chat completion (streamed with `stream: true`) whose text is the part added."""
    max_tokens = checked_sampling(body, state.settings)
    persona = await _persona(state, body.model)
    job = Continuation(persona=persona, session_id=_sid(session_id), max_tokens=max_tokens,
                       temperature=body.temperature, top_p=body.top_p, seed=body.seed, stop=body.stop_strings())
    return await answer(body, request, state, partial(continue_last, state.sessions, job), {})
