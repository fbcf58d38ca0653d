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
    503 or that answered wrongly 502, anything else 500."""
    from ..models.engine import EngineError
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
    if isinstance(e, ValueError):  # CardError, AudioError, ConfigError, a prompt that can't fit
        return APIError(400, str(e), code="invalid_value")
    log.error("unexpected error", exc_info=e)
    return APIError(500, f"internal error: {type(e).__name__}", code="internal_error")


def _validation_message(exc: RequestValidationError) -> tuple[str, Optional[str]]:
    first = exc.errors()[0] if exc.errors() else {}
    loc = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path", "header")]
    if first.get("type") == "json_invalid":
        return "the request body is not valid JSON", None
    param = ".".join(loc) or None
    return (f"{param}: {first.get('msg', 'invalid')}" if param else str(first.get("msg", "invalid request"))), param


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError):
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        message, param = _validation_message(exc)
        return error_response(APIError(400, message, code="invalid_request", param=param))

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException):
        code = {404: "unknown_url", 405: "method_not_allowed", 413: "body_too_large"}.get(exc.status_code)
        message = f"unknown route {request.method} {request.url.path}" if exc.status_code in (404, 405) else str(exc.detail)
        return error_response(APIError(exc.status_code, message, code=code, headers=getattr(exc, "headers", None)))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        return error_response(as_api_error(exc))
