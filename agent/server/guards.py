"""Checks made before a request body is read: the API key (401) and the body size caps (413).

As ASGI middleware they run ahead of FastAPI's body parsing, so no unauthenticated or oversized upload is
buffered. Uploads (audio, card files) get `max_upload_bytes`, everything else `max_body_bytes`.
"""
from __future__ import annotations

import json
import secrets
from typing import Optional

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import error_body

UPLOAD_PATHS = ("/v1/audio/transcriptions", "/v1/personas")
OPEN_PATHS = ("/health", "")  # answered without a key ("": the web page at /, which holds no data)
OPEN_PREFIXES = ("/web/",)  # the web page's static files


def _open(path: str) -> bool:
    return path.rstrip("/") in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


def key_matches(authorization: str, key: str) -> bool:
    """`Bearer <key>`, compared in constant time."""
    scheme, _, given = authorization.partition(" ")
    return scheme.lower() == "bearer" and secrets.compare_digest(given.strip().encode(), key.encode())


class KeyCheck:
    """With a key, every route but /health and the web page needs `Authorization: Bearer <key>`; without one, all are open."""

    def __init__(self, app: ASGIApp, *, key: Optional[str]):
        self.app = app
        self.key = key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.key or _open(scope["path"]):
            await self.app(scope, receive, send)
            return
        authorization = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
        if not key_matches(authorization, self.key):
            await _send_error(send, 401, "missing or wrong API key: send `Authorization: Bearer <PERSONAE_API_KEY>`",
                              "invalid_api_key", [(b"www-authenticate", b"Bearer")])
            return
        await self.app(scope, receive, send)


class BodyLimit:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int, max_upload_bytes: int):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_upload_bytes = max_upload_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_upload_bytes if scope["path"].rstrip("/") in UPLOAD_PATHS else self.max_body_bytes
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await _send_error(send, 413, f"the request body is over the {limit}-byte limit", "body_too_large",
                              [(b"connection", b"close")])
            return
        received = 0

        async def counted() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:  # FastAPI passes HTTPException from a body read through as it is
                    raise HTTPException(413, f"the request body is over the {limit}-byte limit")
            return message

        await self.app(scope, counted, send)


async def _send_error(send: Send, status: int, message: str, code: str, headers: list) -> None:
    body = json.dumps(error_body(status, message, code)).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})
