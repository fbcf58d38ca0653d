"""GET /health: is the server up, and how busy is its model worker. The one route that needs no key."""
from __future__ import annotations

from fastapi import APIRouter

from ..deps import StateDep

router = APIRouter(tags=["health"])


@router.get("/health")
def health(state: StateDep) -> dict:
    worker = state.worker
    return {"status": "ok", "busy": worker.running is not None, "queued": worker.queued,
            "completed": worker.completed, "cancelled": worker.cancelled, "open_sessions": len(state.sessions)}
