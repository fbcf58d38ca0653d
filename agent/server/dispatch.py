"""Runs a request's job on a job runner and waits for it, cancelling the job when the client goes away.

A full queue becomes 429 with a Retry-After hint at once; job failures become OpenAI error objects.
"""
from __future__ import annotations

import asyncio
from typing import Any, Callable

from fastapi import Request

from .errors import APIError, as_api_error
from .jobs import Busy, Job, JobRunner


def submit(runner: JobRunner, run: Callable[[Job], Any]) -> Job:
    try:
        return runner.submit(run)
    except Busy as e:
        raise APIError(429, f"{e}: every place in the queue is taken", code="queue_full",
                       headers={"Retry-After": str(e.retry_after)}) from None


class ClientGone(APIError):
    """The client disconnected while its request waited (499, as nginx logs it; nobody reads the answer)."""

    def __init__(self):
        super().__init__(499, "the client closed the request", code="client_closed_request")


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def until_done_or_gone(request: Request, job: Job, waiting) -> Any:
    """Awaits `waiting` (a coroutine reading `job`); if the client leaves first, cancels the job, raises ClientGone."""
    getter = asyncio.ensure_future(waiting)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        done, _ = await asyncio.wait({getter, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if getter in done:
        return getter.result()
    getter.cancel()
    job.cancel.set()
    raise ClientGone()


async def run_job(request: Request, runner: JobRunner, run: Callable[[Job], Any]) -> Any:
    """Submits `run` and returns its value; failures are raised as APIError."""
    job = submit(runner, run)
    try:
        return await until_done_or_gone(request, job, job.result())
    except APIError:  # ClientGone too
        raise
    except Exception as e:  # noqa: BLE001 - what the job raised
        raise as_api_error(e) from None
