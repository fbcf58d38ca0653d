"""Serving the app: `serve(agent)` runs it with uvicorn (what `personae serve` calls), `running(app)` on a
background thread for tests and benchmarks.
"""
from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from typing import Iterator, Optional

from fastapi import FastAPI
from pydantic import ValidationError

from ..config import ConfigError
from .main import create_app
from .settings import ServerSettings, check_bind

log = logging.getLogger(__name__)


def load_settings(**overrides) -> ServerSettings:
    """The environment's PERSONAE_* settings with `overrides` (None values ignored) on top."""
    try:
        return ServerSettings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as e:
        problems = "; ".join(f"PERSONAE_{'_'.join(map(str, err['loc'])).upper()}: {err['msg']}" for err in e.errors())
        raise ConfigError(f"server settings: {problems}") from None


def serve(agent, *, host: Optional[str] = None, port: Optional[int] = None, open_page: bool = False) -> None:
    """Runs the server until Ctrl-C. Refuses a non-loopback address without PERSONAE_API_KEY.

    open_page: opens the web chat (/) in the system's browser once the server answers.
    """
    import uvicorn

    settings = load_settings(host=host, port=port)
    check_bind(settings)
    agent.chat_backend  # load the LM now, so missing weights or a down engine fail before the port opens
    names = ", ".join(p.slug for p in agent.personas.list())
    where = f"http://{settings.host}:{settings.port}/v1" if settings.port else f"{settings.host}, on a free port"
    keyed = bool(settings.api_key and settings.api_key.get_secret_value())
    log.info("serving %s as models at %s (%s)", names, where, "API key required" if keyed else "no API key")
    app = create_app(agent, settings)
    server = _stopping_server(uvicorn.Config(app, host=settings.host, port=settings.port, log_level="info",
                                             timeout_graceful_shutdown=SHUTDOWN_SECONDS),
                              on_exit=lambda: [runner.cancel_all() for runner in (app.state.personae.jobs,
                                                                                   app.state.personae.speech)])
    if open_page:
        threading.Thread(target=_open_when_up, args=(server,), name="personae-open", daemon=True).start()
    log.info("the web chat is at / on the same address (personae serve --open opens it)")
    try:
        server.run()
    finally:
        agent.close()  # the llama.cpp scheduler: saved sessions' KV states to disk


SHUTDOWN_SECONDS = 2  # after SIGTERM/Ctrl-C, how long open responses may take to end before they are cut


def _stopping_server(config, *, on_exit):
    """A uvicorn server that also calls `on_exit` (cancel every job: streams end at their next token) the
    moment a stop signal arrives, so its graceful shutdown does not wait on running generations."""
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            on_exit()
            super().handle_exit(sig, frame)
            # uvicorn raises the signal again once it has shut down, which would end the process before
            # `serve` saves the KV states; a stop by signal is a normal exit here (code 0)
            self._captured_signals.clear()

    return Server(config)


def _open_when_up(server, timeout: float = 60) -> None:
    """Opens the page in a browser (`webbrowser`) once uvicorn has bound its socket."""
    import webbrowser

    deadline = time.monotonic() + timeout
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.1)
    if not server.started:
        return
    host, port = server.servers[0].sockets[0].getsockname()[:2]
    host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}/"
    log.info("opening %s in a browser", url)
    if not webbrowser.open(url):
        log.warning("no browser could be opened; visit %s", url)


@contextmanager
def running(app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Runs `app` with uvicorn on a background thread (port 0: a free one), for tests and benchmarks.

    Yields the base URL (http://host:port); the server stops when the block ends.
    """
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="personae-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the server did not start on {host}:{port}")
        time.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()
    try:
        yield f"http://{f'[{host}]' if ':' in host else host}:{bound[1]}"
    finally:
        server.should_exit = True
        thread.join(30)
