"""The web chat: GET / serves the page and /web/* its static files (agent/web/static), under a strict CSP.

The page holds no data, so it needs no key; it talks only to the /v1 API every other client uses.
"""
from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from starlette.staticfiles import StaticFiles

STATIC = Path(__file__).resolve().parents[2] / "web" / "static"
PAGE_PREFIX = "/web"
# No inline script or style, no eval, nothing from another origin; portraits and audio arrive as blob: URLs
# (fetched with the API key); Trusted Types makes any string-to-HTML sink (innerHTML, ...) throw.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob:; media-src 'self' blob:; "
       "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
       "frame-ancestors 'none'; require-trusted-types-for 'script'; trusted-types 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
           "X-Frame-Options": "DENY", "Cache-Control": "no-cache", "Permissions-Policy": "microphone=(self)"}

router = APIRouter(tags=["page"])


class PageFiles(StaticFiles):
    """StaticFiles whose answers carry the page's security headers."""

    def file_response(self, *args, **kwargs):
        response = super().file_response(*args, **kwargs)
        response.headers.update(HEADERS)
        return response


@router.get("/", include_in_schema=False)
def page() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html", headers=HEADERS)


def mount_static(app) -> None:
    app.mount(PAGE_PREFIX, PageFiles(directory=STATIC), name="web")
