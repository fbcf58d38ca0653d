"""One thread runs every model job (chat, transcription, speech) in order, from a bounded queue.

The event loop submits a `Job` and awaits its events; a full queue refuses at once (`Busy`, answered
429) rather than letting requests wait out their timeouts. Setting `job.cancel` stops a generation.
"""
from __future__ import annotations

import asyncio
import math
import queue
import threading
import time
from typing import Any, Callable, Optional

PIECE, DONE, ERROR = "piece", "done", "error"


class Busy(Exception):
    """The queue is full; `retry_after` estimates the seconds until a place frees up."""

    def __init__(self, retry_after: int):
        super().__init__(f"the model is busy; retry in {retry_after} s")
        self.retry_after = retry_after


class Cancelled(Exception):
    """The client went away before the job ran."""


class Job:
    """A function run on the worker thread; it may `emit` text pieces, and its return value ends the job.

    Events reach the event loop's `events` queue as (PIECE, text), then (DONE, value) or (ERROR, exception).
    """

    def __init__(self, run: Callable[["Job"], Any], loop: asyncio.AbstractEventLoop):
        self.run = run
        self.loop = loop
        self.cancel = threading.Event()  # set by the event loop when the client disconnects
        self.events: asyncio.Queue = asyncio.Queue()
        self.info: dict = {}  # what the job learns before its first event (a scene's speaker), for the response head

    def _put(self, kind: str, value: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, value))
        except RuntimeError:  # the loop closed (server shutting down): nobody is listening
            self.cancel.set()

    def emit(self, piece: str) -> None:
        if piece:
            self._put(PIECE, piece)

    async def next_event(self) -> tuple[str, Any]:
        return await self.events.get()

    async def result(self) -> Any:
        """The job's return value (pieces are skipped); raises what the job raised."""
        while True:
            kind, value = await self.events.get()
            if kind == DONE:
                return value
            if kind == ERROR:
                raise value


class ModelWorker:
    def __init__(self, *, queue_size: int):
        self._jobs: queue.Queue = queue.Queue(maxsize=queue_size)
        self._thread: Optional[threading.Thread] = None
        self.running: Optional[Job] = None
        self.completed = 0  # jobs finished (including failed ones)
        self.cancelled = 0  # jobs stopped or skipped because their client went away
        self._seconds = 2.0  # running average of a job's duration, for the retry hint

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="personae-model-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Cancels what is queued and running, then ends the thread."""
        if self._thread is None:
            return
        while True:
            try:
                self._jobs.get_nowait().cancel.set()
            except queue.Empty:
                break
        if self.running is not None:
            self.running.cancel.set()
        self._jobs.put(None)
        self._thread.join(timeout)
        self._thread = None

    @property
    def queued(self) -> int:
        return self._jobs.qsize()

    def submit(self, run: Callable[[Job], Any]) -> Job:
        """Queues `run(job)`; raises Busy when the queue is full."""
        job = Job(run, asyncio.get_running_loop())
        try:
            self._jobs.put_nowait(job)
        except queue.Full:
            raise Busy(max(1, math.ceil(self._seconds * (self._jobs.qsize() + 1)))) from None
        return job

    def _loop(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            if job.cancel.is_set():
                self.cancelled += 1
                job._put(ERROR, Cancelled("the client went away"))
                continue
            self.running = job
            start = time.perf_counter()
            try:
                job._put(DONE, job.run(job))
            except BaseException as e:  # noqa: BLE001 - every failure goes back to its request
                job._put(ERROR, e)
            finally:
                self.running = None
                self.completed += 1
                self.cancelled += job.cancel.is_set()
                self._seconds = 0.8 * self._seconds + 0.2 * (time.perf_counter() - start)
