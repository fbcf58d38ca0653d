"""The saved API sessions a client can resume: GET /v1/sessions lists them, GET /v1/sessions/{id}/messages shows one
(the last reply with its stored alternatives; routes/session_edits.py changes them).

A session is what chat completions with the same session id (X-Session-Id or `user`) wrote: one stored
conversation per persona, or per group scene (`model` = "a+b"). Read straight from the history database.
"""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool

from ...chat.history import scene_key
from ..deps import AgentDep, persona_named
from ..scene_completion import scene_names
from ..sessions import CHANNEL_PREFIX
from .chat import _session_id

router = APIRouter(prefix="/v1/sessions", tags=["sessions"])


@router.get("")
async def list_sessions(agent: AgentDep, limit: Annotated[int, Query(ge=1, le=200)] = 50) -> dict:
    rows = await run_in_threadpool(agent.history.channel_sessions, CHANNEL_PREFIX, limit)
    return {"object": "list", "data": [
        {"object": "session", "id": row["channel"][len(CHANNEL_PREFIX):], "model": row["persona"],
         "scene": row["scene"], "updated": row["updated"], "messages": row["messages"], "last": row["last"][:200]}
        for row in rows]}


@router.get("/{session_id}/messages")
async def session_messages(session_id: str, model: str, agent: AgentDep) -> dict:
    """The stored conversation of `model` (a persona, or personas joined by '+') in this session; empty if none."""
    sid = _session_id(session_id, None)
    channel = CHANNEL_PREFIX + (sid or "")
    names = scene_names(model) if "+" in model else None
    if names:
        slugs = [(await persona_named(agent, name)).slug for name in names]
        found = await run_in_threadpool(agent.history.latest_scene, slugs, channel)
        slug = scene_key(slugs)
    else:
        slug = (await persona_named(agent, model)).slug
        found = await run_in_threadpool(agent.history.latest_session, slug, channel)
    if found is None:
        return {"object": "list", "session_id": sid, "model": slug, "data": []}
    return await run_in_threadpool(messages_body, agent.history, found, sid, slug)


def messages_body(history, found: int, session_id: str, slug: str) -> dict:
    """Stored session `found` as GET .../messages answers it: the messages; the last reply's alternatives, if it
    has any, as its `swipes` (in the order written) and `swipe` (the one shown)."""
    data = [{"role": m.role, "content": m.content, **({"name": m.name} if m.name else {})}
            for m in history.messages(found)]
    swipes, shown = history.swipes(found)
    if swipes:
        data[-1].update(swipes=swipes, swipe=shown)
    return {"object": "list", "session_id": session_id, "model": slug, "data": data}
