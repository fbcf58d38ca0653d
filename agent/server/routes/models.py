"""GET /v1/models: every persona is a model, its id the persona's short name (slug); so is the LM itself.

The LM's own id (`Agent.plain_model`, e.g. the GGUF's file stem) is the plain model: personae adds no card to
its prompt, for front-ends that build their own (SillyTavern, Agnai, RisuAI).
"""
from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from ...persona.store import Persona
from ..deps import AgentDep, persona_named

router = APIRouter(prefix="/v1", tags=["models"])


def model_object(persona: Persona) -> dict:
    created = int((persona.folder / "persona.yaml").stat().st_mtime)
    return {"id": persona.slug, "object": "model", "created": created, "owned_by": "personae", "name": persona.name}


def plain_model_object(model_id: str) -> dict:
    return {"id": model_id, "object": "model", "created": 0, "owned_by": "personae", "name": model_id}


@router.get("/models")
async def list_models(agent: AgentDep) -> dict:
    personas = await run_in_threadpool(agent.personas.list)
    return {"object": "list", "data": [model_object(p) for p in personas] + [plain_model_object(agent.plain_model)]}


@router.get("/models/{model}")
async def get_model(model: str, agent: AgentDep) -> dict:
    if model == agent.plain_model:
        return plain_model_object(model)
    return model_object(await persona_named(agent, model))
