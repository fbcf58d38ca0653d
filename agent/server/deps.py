"""What routes get injected: the Agent, the settings, the job runners and the session cache; persona lookup.

All of it lives in one `ServerState` on `app.state`, made by `create_app`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from ..agent import Agent
from ..persona.store import Persona, UnknownPersona
from .errors import APIError
from .sessions import SessionCache
from .settings import ServerSettings
from .jobs import JobRunner


@dataclass
class ServerState:
    agent: Agent
    settings: ServerSettings
    jobs: JobRunner  # chat, memory and persona creation: server.max_streams threads, their decoding batched
    speech: JobRunner  # transcription and speech synthesis, on threads of their own
    sessions: SessionCache


def get_state(request: Request) -> ServerState:
    return request.app.state.personae


StateDep = Annotated[ServerState, Depends(get_state)]


def get_agent(state: StateDep) -> Agent:
    return state.agent


def get_settings(state: StateDep) -> ServerSettings:
    return state.settings


AgentDep = Annotated[Agent, Depends(get_agent)]
SettingsDep = Annotated[ServerSettings, Depends(get_settings)]


async def persona_named(agent: Agent, name: str, param: str = "model") -> Persona:
    """A persona by slug or card name; folder paths are not accepted from clients."""
    text = name.strip()
    if not text or "/" in text or "\\" in text or text.startswith(("~", ".")):
        raise APIError(404, f"no persona named {name!r}", code="model_not_found", param=param)
    try:
        return await run_in_threadpool(agent.personas.get, text)
    except UnknownPersona as e:
        raise APIError(404, str(e), code="model_not_found", param=param) from None
