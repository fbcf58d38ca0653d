"""Runs a request's job on a job runner and waits for it, cancelling the job when the client goes away.

A full queue becomes 429 with a Retry-After hint at once; job failures become OpenAI error objects. A chat
client that went away keeps only the reply text it received (`keep_received`): what was stored beyond that
is cut once the job ends.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable

from fastapi import Request

from .completion import Completion
from .errors import APIError, as_api_error
from .jobs import DONE, PIECE, Busy, Job, JobRunner

KEEP_TRIES = 60  # a full queue delays the cut of a reply by up to this many seconds, then it is left as stored
log = logging.getLogger(__name__)
_cutting: set[asyncio.Task] = set()  # the running keep_received tasks (the loop holds only weak references)


def submit(runner: JobRunner, run: Callable[[Job], Any]) -> Job:
    try:
        return runner.submit(run)
    except Busy as e:
        raise APIError(429, f"{e}: every place in the queue is taken", code="queue_full",
                       headers={"Retry-After": str(e.retry_after)}) from None


class ClientGone(APIError):
    """The client disconnected while its request waited (499, as nginx logs it; nobody reads the answer).
    `job` is the request's job, cancelled."""

    def __init__(self, job: Job):
        super().__init__(499, "the client closed the request", code="client_closed_request")
        self.job = job


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
    raise ClientGone(job)


async def run_job(request: Request, runner: JobRunner, run: Callable[[Job], Any]) -> Any:
    """Submits `run` and returns its value; failures are raised as APIError."""
    job = submit(runner, run)
    try:
        return await until_done_or_gone(request, job, job.result())
    except APIError:  # ClientGone too
        raise
    except Exception as e:  # noqa: BLE001 - what the job raised
        raise as_api_error(e) from None


def keep_received(runner: JobRunner, job: Job, received: str) -> None:
    """The client of chat `job` went away having received `received` of the reply: once the job ends, the
    stored turn keeps only that (nothing received: the message and its reply go), cut by a job."""
    try:
        task = asyncio.get_running_loop().create_task(_keep_received(runner, job, received))
    except RuntimeError:  # no loop: the server is shutting down
        return
    _cutting.add(task)
    task.add_done_callback(_cutting.discard)


async def _keep_received(runner: JobRunner, job: Job, received: str) -> None:
    kind, done = await job.next_event()
    while kind == PIECE:  # the pieces nobody read
        kind, done = await job.next_event()
    if kind != DONE or not isinstance(done, Completion) or done.keep_received is None:
        return  # failed, or stored nothing
    for _ in range(KEEP_TRIES):
        try:
            cut = runner.submit(lambda _: done.keep_received(received))
            break
        except Busy:
            await asyncio.sleep(1.0)
    else:
        log.warning("the model queue stayed full: a reply its client did not receive whole stays stored whole")
        return
    try:
        await cut.result()
    except Exception:  # noqa: BLE001 - nobody else reads this job's result
        log.exception("could not cut a stored reply to what its client received")
