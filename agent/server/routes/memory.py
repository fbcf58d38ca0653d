"""A saved API session's memory: GET shows it, POST adds a note (/remember), DELETE forgets (/forget).

The session is the one a chat completion with the same session id (X-Session-Id header or `user`) and
`model` uses; its memory lives in the history database, so it survives restarts. Runs as a job, holding
the session (one request at a time per session). Showing or forgetting the memory of a session never stored
is a 404.
"""
from __future__ import annotations

from functools import partial
from typing import Annotated, Optional

from fastapi import APIRouter, Request
from pydantic import ConfigDict, Field

from ..deps import StateDep, persona_named
from ..dispatch import run_job
from ..errors import APIError
from ..schemas import TextBody
from ..sessions import stored_session
from .chat import _session_id

router = APIRouter(prefix="/v1/sessions", tags=["memory"])
MAX_NOTE_CHARS = 2000


class NoteRequest(TextBody):
    model_config = ConfigDict(extra="forbid")
    model: str = Field(min_length=1, max_length=200)  # the persona
    text: str = Field(min_length=1, max_length=MAX_NOTE_CHARS)


def _show(sessions, persona, session_id: str, job) -> dict:
    with sessions.held((session_id, persona.slug)):
        return {"object": "memory", "session_id": session_id, "model": persona.slug,
                **stored_session(sessions, persona, session_id).memory_snapshot()}


def _remember(sessions, persona, session_id: str, text: str, job) -> dict:
    with sessions.held((session_id, persona.slug)):
        number = sessions.open(persona, session_id).remember(text)  # a note may come before the first message
    return {"object": "memory.note", "id": number, "text": text.strip()}


def _forget(sessions, persona, session_id: str, target: Optional[str], job) -> dict:
    with sessions.held((session_id, persona.slug)):
        return {"object": "memory.deleted", "result": stored_session(sessions, persona, session_id).forget(target)}


def _sid(session_id: str) -> str:
    chosen = _session_id(session_id, None)
    if chosen is None:
        raise APIError(400, "the session id must not be empty", code="invalid_value", param="session_id")
    return chosen


@router.get("/{session_id}/memory")
async def show_memory(session_id: str, model: str, request: Request, state: StateDep):
    persona = await persona_named(state.agent, model)
    return await run_job(request, state.jobs, partial(_show, state.sessions, persona, _sid(session_id)))


@router.post("/{session_id}/memory")
async def add_note(session_id: str, body: NoteRequest, request: Request, state: StateDep):
    persona = await persona_named(state.agent, body.model)
    return await run_job(request, state.jobs, partial(_remember, state.sessions, persona, _sid(session_id), body.text))


@router.delete("/{session_id}/memory/{memory}")
async def forget(session_id: str, memory: Annotated[str, "a memory id from GET, or 'all'"], model: str,
                 request: Request, state: StateDep):
    persona = await persona_named(state.agent, model)
    if memory != "all" and not memory.isdigit():
        raise APIError(400, f"memory: expected a memory id or 'all', got {memory!r}", code="invalid_value",
                       param="memory")
    return await run_job(request, state.jobs, partial(_forget, state.sessions, persona, _sid(session_id), memory))
