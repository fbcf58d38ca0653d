"""GET /v1/models: every persona is a model, its id the persona's short name (slug)."""
from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from ...persona.store import Persona
from ..deps import AgentDep, persona_named

router = APIRouter(prefix="/v1", tags=["models"])


def model_object(persona: Persona) -> dict:
    created = int((persona.folder / "persona.yaml").stat().st_mtime)
    return {"id": persona.slug, "object": "model", "created": created, "owned_by": "personae", "name": persona.name}


@router.get("/models")
async def list_models(agent: AgentDep) -> dict:
    personas = await run_in_threadpool(agent.personas.list)
    return {"object": "list", "data": [model_object(p) for p in personas]}


@router.get("/models/{model}")
async def get_model(model: str, agent: AgentDep) -> dict:
    return model_object(await persona_named(agent, model))
