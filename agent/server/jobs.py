"""Model jobs (chat, transcription, speech, persona creation) run on a few threads at once, from bounded queues.

The event loop submits a `Job` and awaits its events. Chat jobs run on `max_streams` threads; each builds its
prompt on its own thread and hands decoding to the LM backend (on llama.cpp, the scheduler thread batches
every running stream: agent/generation/). A full queue refuses at once (`Busy`, answered 429 with a
Retry-After from the measured rate) rather than letting requests wait out their timeouts. Setting
`job.cancel` stops a generation at its next token; `stop()` cancels everything and returns within seconds.
"""
from __future__ import annotations

import asyncio
import math
import queue
import threading
import time
from collections import deque
from typing import Any, Callable, Optional

from ..chat.prompt import Cancelled  # the client went away (or the server stopped): before its job ran, or mid-fit

PIECE, DONE, ERROR = "piece", "done", "error"


class Busy(Exception):
    """Every thread is busy and the queue is full; `retry_after` estimates the seconds until a place frees up."""

    def __init__(self, retry_after: int):
        super().__init__(f"the model is busy; retry in {retry_after} s")
        self.retry_after = retry_after


class Job:
    """A function run on a job thread; it may `emit` text pieces, and its return value ends the job.

    Events reach the event loop's `events` queue as (PIECE, text), then (DONE, value) or (ERROR, exception).
    """

    def __init__(self, run: Callable[["Job"], Any], loop: asyncio.AbstractEventLoop):
        self.run = run
        self.loop = loop
        self.cancel = threading.Event()  # set by the event loop when the client disconnects, or at shutdown
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


class JobRunner:
    """`threads` job threads fed from one queue of at most `queue_size` waiting jobs."""

    def __init__(self, *, threads: int, queue_size: int, name: str = "model"):
        self.threads, self.name = threads, name
        self._jobs: queue.Queue = queue.Queue(maxsize=queue_size)
        self._workers: list[threading.Thread] = []
        self._running: set[Job] = set()
        self._lock = threading.Lock()
        self.completed = 0  # jobs finished (including failed ones)
        self.cancelled = 0  # jobs stopped or skipped because their client went away
        self._ends: deque[float] = deque(maxlen=32)  # when recent jobs ended, for the rate behind Retry-After
        self._seconds = 2.0  # running average of a job's duration, before there is a rate

    def start(self) -> None:
        for i in range(self.threads):
            worker = threading.Thread(target=self._loop, name=f"personae-{self.name}-{i}", daemon=True)
            worker.start()
            self._workers.append(worker)

    def stop(self, timeout: float = 5.0) -> None:
        """Cancels what is queued and running, then ends the threads (waiting at most `timeout` seconds)."""
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job.cancel.set()
                job._put(ERROR, Cancelled("the server is stopping"))
        with self._lock:
            for job in self._running:
                job.cancel.set()
        for _ in self._workers:
            try:
                self._jobs.put(None, timeout=0.1)
            except queue.Full:
                pass
        deadline = time.monotonic() + timeout
        for worker in self._workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        self._workers = []

    def cancel_all(self) -> None:
        """Sets every running and queued job's cancel (a stop signal): generations end at their next token."""
        with self._lock:
            for job in self._running:
                job.cancel.set()
        with self._jobs.mutex:
            for job in list(self._jobs.queue):
                if job is not None:
                    job.cancel.set()

    @property
    def queued(self) -> int:
        return self._jobs.qsize()

    @property
    def running(self) -> int:
        return len(self._running)

    def running_jobs(self) -> list[Job]:
        with self._lock:
            return list(self._running)

    def retry_after(self) -> int:
        """Seconds until a queued place is likely free: the queue ahead over the measured rate of finishing jobs."""
        now = time.monotonic()
        recent = [t for t in self._ends if now - t < 120]
        rate = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 2 and recent[-1] > recent[0] \
            else self.threads / self._seconds  # jobs per second over all threads
        return max(1, math.ceil((self._jobs.qsize() + 1) / rate))

    def submit(self, run: Callable[[Job], Any]) -> Job:
        """Queues `run(job)`; raises Busy when every thread is taken and the queue is full."""
        job = Job(run, asyncio.get_running_loop())
        try:
            self._jobs.put_nowait(job)
        except queue.Full:
            raise Busy(self.retry_after()) from None
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
            with self._lock:
                self._running.add(job)
            start = time.perf_counter()
            try:
                job._put(DONE, job.run(job))
            except BaseException as e:  # noqa: BLE001 - every failure goes back to its request
                job._put(ERROR, e)
            finally:
                with self._lock:
                    self._running.discard(job)
                    self.completed += 1
                    self.cancelled += job.cancel.is_set()
                    self._seconds = 0.8 * self._seconds + 0.2 * (time.perf_counter() - start)
                    self._ends.append(time.monotonic())
