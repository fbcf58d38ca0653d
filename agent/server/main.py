"""The OpenAI-compatible HTTP server's app: `create_app(agent, settings)` wires state, guards and routers.

Every persona is a model. Routes live in routes/ (one per resource); chat jobs run on max_streams threads (jobs.py) whose decoding the LM backend batches.
The web chat (routes/page.py, files in agent/web/static) is served at / and talks to the same /v1 routes.
run.py serves the app with uvicorn.
"""
from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Optional

from fastapi import FastAPI

from .deps import ServerState
from .errors import install_error_handlers
from .guards import BodyLimit, KeyCheck
from .routes import audio, chat, health, memory, models, page, personas, session_edits, sessions
from .sessions import SessionCache
from .settings import ServerSettings
from .jobs import JobRunner


def create_app(agent, settings: Optional[ServerSettings] = None) -> FastAPI:
    settings = settings or ServerSettings()
    jobs = JobRunner(threads=settings.max_streams, queue_size=settings.queue_size, name="chat")
    speech = JobRunner(threads=settings.speech_threads, queue_size=settings.queue_size, name="speech")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        jobs.start()
        speech.start()
        yield
        jobs.stop()
        speech.stop()

    key = settings.api_key.get_secret_value() if settings.api_key else None
    app = FastAPI(title="personae", summary="Role-play personas as OpenAI-compatible models", lifespan=lifespan,
                  openapi_url=None if key else "/openapi.json")  # no unauthenticated API docs when a key is set
    app.state.personae = ServerState(agent, settings, jobs, speech, SessionCache(
        agent, max_sessions=settings.max_sessions, max_cached_tokens=settings.max_cached_tokens))
    install_error_handlers(app)
    app.add_middleware(BodyLimit, max_body_bytes=settings.max_body_bytes, max_upload_bytes=settings.max_upload_bytes)
    app.add_middleware(KeyCheck, key=key)  # added last, so it runs first
    for module in (health, models, chat, audio, personas, sessions, session_edits, memory, page):
        app.include_router(module.router)
    page.mount_static(app)  # the web chat's files, under /web
    return app
