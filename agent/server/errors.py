"""Every failure leaves the server as OpenAI's error object: {"error": {"message", "type", "param", "code"}}.

Routes raise `APIError`; `install_error_handlers` also turns validation errors, unknown routes and
unexpected exceptions into that shape, so the official client raises its usual exception classes.
"""
from __future__ import annotations

import logging
from typing import Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from ..untrusted_text import lone_surrogate, surrogate_problem

log = logging.getLogger("personae.server")

TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
         404: "not_found_error", 409: "conflict_error", 413: "invalid_request_error",
         429: "rate_limit_error", 503: "server_error"}


class APIError(Exception):
    def __init__(self, status: int, message: str, *, code: Optional[str] = None, param: Optional[str] = None,
                 headers: Optional[dict] = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.headers = headers


def error_body(status: int, message: str, code: Optional[str] = None, param: Optional[str] = None) -> dict:
    return {"error": {"message": message, "type": TYPES.get(status, "server_error"), "param": param, "code": code}}


def error_response(error: APIError) -> JSONResponse:
    return JSONResponse(error_body(error.status, error.message, error.code, error.param), status_code=error.status,
                        headers=error.headers)


def as_api_error(e: BaseException) -> APIError:
    """Maps what the Agent raises to a status: bad input 400, missing weights 503, an LM engine that is down
    503 or that answered wrongly 502, a full KV cache or a job cancelled by shutdown 503, anything else 500."""
    from ..chat.prompt import Cancelled
    from ..models.engine import EngineError
    from ..models.llamacpp import KVFull
    from ..models.packages import MissingWeights
    from ..persona.store import UnknownPersona

    if isinstance(e, APIError):
        return e
    if isinstance(e, UnknownPersona):
        return APIError(404, str(e), code="model_not_found", param="model")
    if isinstance(e, EngineError):
        return APIError(e.status, str(e), code="lm_engine_unavailable" if e.status == 503 else "lm_engine_error")
    if isinstance(e, MissingWeights):
        return APIError(503, f"missing weights: {e}", code="missing_weights")
    if isinstance(e, Cancelled):
        return APIError(503, f"the request was stopped: {e}", code="cancelled")
    if isinstance(e, KVFull):
        return APIError(503, f"the model's memory is full of running replies; retry shortly ({e})",
                        code="kv_cache_full", headers={"Retry-After": "5"})
    if isinstance(e, ValueError):  # CardError, AudioError, ConfigError, a prompt that can't fit
        return APIError(400, str(e), code="invalid_value")
    log.error("unexpected error", exc_info=e)
    return APIError(500, f"internal error: {type(e).__name__}", code="internal_error")


JSON_TYPES = {dict: "an object", list: "an array", str: "a string", int: "a number", float: "a number",
              bool: "true or false", type(None): "null"}


def _field(loc: tuple) -> str:
    """('messages', 2, 'content') -> 'messages[2].content', the way the request body spells it."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}" if out else str(part)
    return out


def _body_problem(request: Request, exc: RequestValidationError, first: dict) -> Optional[str]:
    """What is wrong with the body as a whole (not JSON, not an object, not sent as JSON), or None."""
    if first.get("type") == "json_invalid":
        doc, pos = exc.body if isinstance(exc.body, str) else "", first.get("loc", (None, None))[-1]
        where = ""
        if isinstance(pos, int) and doc:  # json's own line and column, which FastAPI leaves out
            line, column = doc.count("\n", 0, pos) + 1, pos - doc.rfind("\n", 0, pos)
            where = f" at line {line} column {column}"
        return f"the body is not valid JSON: {(first.get('ctx') or {}).get('error', 'decode error')}{where}"
    if tuple(first.get("loc", ())) != ("body",):
        return None
    if first.get("type") == "missing":
        return "the body is empty: send a JSON object"
    content_type = request.headers.get("content-type", "").split(";")[0].strip()
    if isinstance(first.get("input"), bytes) or content_type and not content_type.lower().endswith(("/json", "+json")):
        return f"Content-Type must be application/json (got {repr(content_type) if content_type else 'none'})"
    return f"the body must be a JSON object, got {JSON_TYPES.get(type(first.get('input')), 'something else')}"


def _validation_message(request: Request, exc: RequestValidationError) -> tuple[str, Optional[str]]:
    first = exc.errors()[0] if exc.errors() else {}
    problem = _body_problem(request, exc, first)
    if problem:
        return problem, None
    param = _field(tuple(part for part in first.get("loc", ()) if part not in ("body", "query", "path", "header")))
    message = str(first.get("msg", "invalid")).removeprefix("Value error, ")
    found = lone_surrogate(first.get("input")) if first.get("type") == "string_unicode" else None
    if found:  # pydantic's own check of a length-limited string; schemas.TextBody words the others the same
        message = surrogate_problem(found[1])
    return (f"{param}: {message}" if param else message), param or None


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError):
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        message, param = _validation_message(request, exc)
        return error_response(APIError(400, message, code="invalid_request", param=param))

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException):
        code = {404: "unknown_url", 405: "method_not_allowed", 413: "body_too_large"}.get(exc.status_code)
        message = f"unknown route {request.method} {request.url.path}" if exc.status_code in (404, 405) else str(exc.detail)
        return error_response(APIError(exc.status_code, message, code=code, headers=getattr(exc, "headers", None)))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        return error_response(as_api_error(exc))
