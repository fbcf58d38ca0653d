"""Persona management: POST /v1/personas imports a card file (PNG/JSON/CHARX, the CLI's checks);
POST /v1/personas/generate writes a new one from an idea (agent/creation, on a job thread, time-bounded);
GET /v1/personas lists them; GET /v1/personas/{name} exports one as a card file.
"""
from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Annotated, Literal, Optional

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from pydantic import ConfigDict, Field
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from ...persona.card import CardError
from ...persona.card_io import read_card
from ...persona.store import Persona, slugify
from ..deps import AgentDep, StateDep, persona_named
from ..dispatch import run_job
from ..errors import APIError
from ..schemas import MAX_SEED, TextBody
from .models import model_object

router = APIRouter(prefix="/v1/personas", tags=["personas"])
CARD_TYPES = {"png": "image/png", "json": "application/json", "charx": "application/zip"}


def persona_object(persona: Persona) -> dict:
    return {**model_object(persona), "object": "persona", "nickname": persona.card.nickname or None,
            "has_portrait": persona.portrait is not None, "has_voice_sample": persona.voice_sample is not None}


@router.get("")
async def list_personas(agent: AgentDep) -> dict:
    return {"object": "list", "data": [persona_object(p) for p in await run_in_threadpool(agent.personas.list)]}


def _import(agent, data: bytes, filename: str, name: Optional[str], replace: bool) -> Persona:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(filename).name)[:100].lstrip(".") or "card"
    with tempfile.TemporaryDirectory(prefix="personae-upload-") as tmp:
        path = Path(tmp) / safe
        path.write_bytes(data)
        try:
            card, _ = read_card(path, agent.config.cards)
            slug = slugify(name or card.name)
            if (agent.home.personas / slug).exists() and not replace:
                raise APIError(409, f"{safe}: a persona {slug!r} already exists; send replace=true to overwrite it, "
                               f"or another name", code="persona_exists", param="name")
            return agent.personas.import_file(path, name=name, replace=replace)
        except CardError as e:  # name the upload, not our temporary folder
            raise APIError(400, str(e).replace(f"{tmp}/", ""), code="invalid_card", param="file") from None


@router.post("", status_code=201)
async def import_persona(state: StateDep, file: Annotated[UploadFile, File()],
                         name: Annotated[Optional[str], Form(max_length=200)] = None,
                         replace: Annotated[bool, Form()] = False) -> dict:
    limit = min(state.settings.max_upload_bytes, state.agent.config.cards.max_file_bytes)
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise APIError(413, f"the card file is over the {limit}-byte limit", code="body_too_large", param="file")
    persona = await run_in_threadpool(_import, state.agent, data, file.filename or "card", name or None, replace)
    return persona_object(persona)


class GenerateRequest(TextBody):
    model_config = ConfigDict(extra="forbid")
    idea: str = Field(min_length=1, max_length=400)  # the character in a line; with from_persona, what changes
    name: Optional[str] = Field(None, max_length=60)  # the character's name, else the LM invents one
    seed: Optional[int] = Field(None, ge=0, le=MAX_SEED)
    from_persona: Optional[str] = Field(None, max_length=200)  # make a variant of this persona
    replace: bool = False
    time_limit: Optional[float] = Field(None, gt=0)  # seconds, at most PERSONAE_MAX_GENERATE_SECONDS


@router.post("/generate", status_code=201)
async def generate_persona(body: GenerateRequest, request: Request, state: StateDep) -> dict:
    agent = state.agent
    if body.from_persona:
        await persona_named(agent, body.from_persona, param="from_persona")
    if body.name and (agent.home.personas / slugify(body.name)).exists() and not body.replace:
        raise APIError(409, f"a persona {slugify(body.name)!r} already exists; send replace=true to overwrite it, "
                       f"or another name", code="persona_exists", param="name")
    limit = min(body.time_limit or state.settings.max_generate_seconds, state.settings.max_generate_seconds)
    created = await run_job(request, state.jobs, lambda job: agent.create_persona(
        body.idea, name=body.name, seed=body.seed, from_persona=body.from_persona, replace=body.replace,
        time_limit=limit))
    return {**persona_object(created.persona), "card": created.persona.card.to_v3()["data"],
            "seconds": round(created.draft.seconds, 2)}


@router.get("/{name}")
async def export_persona(name: str, agent: AgentDep,
                         format: Annotated[Literal["png", "json", "charx"], Query()] = "png") -> Response:
    persona = await persona_named(agent, name, param="name")

    def export() -> bytes:
        with tempfile.TemporaryDirectory(prefix="personae-export-") as tmp:
            return agent.personas.export(str(persona.folder), format, Path(tmp) / f"{persona.slug}.{format}").read_bytes()

    data = await run_in_threadpool(export)
    return Response(data, media_type=CARD_TYPES[format],
                    headers={"Content-Disposition": f'attachment; filename="{persona.slug}.{format}"'})


PORTRAIT_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp",
                  ".gif": "image/gif"}


@router.get("/{name}/portrait")
async def portrait(name: str, agent: AgentDep) -> Response:
    """The persona's portrait image (404 when it has none), for the web page's gallery and chat."""
    persona = await persona_named(agent, name, param="name")
    media = PORTRAIT_TYPES.get(persona.portrait.suffix.lower()) if persona.portrait else None
    if media is None or not persona.portrait.is_file():
        raise APIError(404, f"persona {persona.slug!r} has no portrait", code="no_portrait", param="name")
    data = await run_in_threadpool(persona.portrait.read_bytes)
    return Response(data, media_type=media, headers={"X-Content-Type-Options": "nosniff",
                                                     "Cache-Control": "private, max-age=60"})


@router.get("/{name}/greetings")
async def greetings(name: str, agent: AgentDep) -> dict:
    """The chat's possible openings with macros resolved: first_mes, then the alternate greetings."""
    from ...chat.prompt import greeting

    persona = await persona_named(agent, name, param="name")
    user, card = agent.config.chat.user_name, persona.card
    texts = [greeting(card, user, i) for i in range(1 + len(card.alternate_greetings))]
    return {"object": "list", "model": persona.slug, "user": user, "data": [t for t in texts if t.strip()] or [""]}
