"""An OpenAI-compatible HTTP front-end: every persona is a model; chat, speech in and out, card import/export.

`create_app(agent)` returns the FastAPI app and `serve(agent)` runs it with uvicorn (`personae serve`).
"""
from .main import create_app
from .run import running, serve
from .settings import ServerSettings

__all__ = ["ServerSettings", "create_app", "running", "serve"]
