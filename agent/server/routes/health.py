"""GET /health: is the server up, and how busy are its job threads. The one route that needs no key."""
from __future__ import annotations

from fastapi import APIRouter

from ..deps import StateDep

router = APIRouter(tags=["health"])


@router.get("/health")
def health(state: StateDep) -> dict:
    jobs = state.jobs
    return {"status": "ok", "busy": jobs.running > 0, "running": jobs.running, "max_streams": jobs.threads,
            "queued": jobs.queued, "completed": jobs.completed, "cancelled": jobs.cancelled,
            "open_sessions": len(state.sessions)}
