"""The one thread that decodes on llama.cpp: every stream of every session advances in the same batches.

Decoders submit `Work`: a `Sequence`, the ids it must hold, and a token picker (a stream: a token per step
until eos, a limit or an abort) or none (a prefill: the last position's logits come back). Each step the
scheduler admits waiting work (restoring spilled sequences, reusing the longest cached prefix), decodes one
row per generating stream plus prefill chunks of the others within `step_tokens` (batch.py), and samples
each stream at its own row (continuous batching, as llama.cpp's server does). Work whose cancel event is set
leaves at the next step. Other threads only wait on a work's queue; nothing else touches the context.
"""
from __future__ import annotations

import atexit
import logging
import queue
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from ..models.llamacpp import BATCH, KVFull, LlamaCppModel
from .batch import batches, build_step, common_prefix_length, embedding_step
from .sequences import Sequence, SequenceTable
from .spill import SpillStore

log = logging.getLogger(__name__)
TOKEN, LOGITS, START, END, ERROR = "token", "logits", "start", "end", "error"  # what a work's queue carries


@dataclass(eq=False)
class Work:
    """One request to the scheduler. `picker(logits, context_ids) -> token` or None for a prefill."""
    seq: Sequence
    target: list[int]  # the ids the sequence must hold before the first pick (soft-prompt slots negative)
    soft: Optional[np.ndarray] = None  # (K, d) float32 rows for slots -1..-K
    picker: Optional[Callable[[np.ndarray, list[int]], int]] = None
    max_new_tokens: int = 0
    eos: frozenset = frozenset()
    cancel: Optional[threading.Event] = None  # the caller's: set when its client went away
    events: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)  # (kind, value), read by the caller
    # the scheduler's own state
    rows: list = field(default_factory=list)  # pieces still to decode
    pos: int = 0
    generating: bool = False
    produced: int = 0
    aborted: bool = False  # set by the caller (a stop string, it stopped reading)

    @property
    def seq_id(self) -> int:
        return self.seq.seq_id

    def stopped(self) -> bool:
        return self.aborted or (self.cancel is not None and self.cancel.is_set())


class Scheduler:
    """Owns a LlamaCppModel's context: `submit(work)` from any thread, `call(fn)` runs `fn(table)` between steps."""

    def __init__(self, model: LlamaCppModel, spills: SpillStore, *, step_tokens: int = 256):
        self.model = model
        self.table = SequenceTable(model, spills)
        self.step_tokens = max(1, min(step_tokens, BATCH))
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._active: list[Work] = []  # admitted, in arrival order
        self._waiting: list[Work] = []  # not admitted yet (no room)
        self._thread: Optional[threading.Thread] = None
        self._start_lock = threading.Lock()
        self._closed = False
        self.steps = self.rows_decoded = 0  # counts, for benchmarks

    # --- any thread --------------------------------------------------------------------------
    def _ensure_running(self) -> None:
        with self._start_lock:
            if self._closed:
                raise RuntimeError("the llama.cpp scheduler is shut down")
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="personae-llamacpp", daemon=True)
                self._thread.start()
                atexit.register(_close_at_exit, weakref.ref(self))

    def submit(self, work: Work) -> Work:
        self._ensure_running()
        self._inbox.put(work)
        return work

    def call(self, fn: Callable[[SequenceTable], object]):
        """Runs `fn(table)` on the scheduler thread between steps and returns its value (or raises its error)."""
        if threading.current_thread() is self._thread:
            return fn(self.table)
        self._ensure_running()
        done: queue.SimpleQueue = queue.SimpleQueue()
        self._inbox.put((fn, done))
        ok, value = done.get()
        if not ok:
            raise value
        return value

    def close(self, *, persist: bool = True, timeout: float = 5.0) -> None:
        """Stops the thread: running work ends as cancelled; saved sessions' states go to disk with `persist`."""
        with self._start_lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
        if thread is None:
            return
        self._inbox.put(("close", persist))
        thread.join(timeout)

    @property
    def active(self) -> int:
        return len(self._active) + len(self._waiting)

    # --- the scheduler thread ----------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            idle = not self._active and not self._waiting
            try:
                item = self._inbox.get() if idle else self._inbox.get_nowait()
            except queue.Empty:
                item = None
            while item is not None:
                if isinstance(item, Work):
                    self._waiting.append(item)
                elif item[0] == "close":
                    self._shutdown(item[1])
                    return
                else:
                    self._run_call(*item)
                try:
                    item = self._inbox.get_nowait()
                except queue.Empty:
                    item = None
            try:
                self._step()
            except Exception as e:  # noqa: BLE001 - a native failure ends every running work, not the thread
                log.exception("llama.cpp step failed")
                for work in self._active + self._waiting:
                    self._finish(work, ERROR, e)

    def _run_call(self, fn, done) -> None:
        try:
            done.put((True, fn(self.table)))
        except BaseException as e:  # noqa: BLE001 - handed back to the caller
            done.put((False, e))

    def _shutdown(self, persist: bool) -> None:
        for work in self._active + self._waiting:
            self._finish(work, END, "cancelled")
        while True:  # what arrived after the close: nobody may wait on it forever
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, Work):
                item.events.put((END, "cancelled"))
            elif item[0] != "close":
                item[1].put((False, RuntimeError("the llama.cpp scheduler is shut down")))
        if persist:
            try:
                self.table.persist_all()
            except Exception:  # noqa: BLE001 - shutting down: a state not saved is recomputed later
                log.exception("could not save KV states at shutdown")

    def _finish(self, work: Work, kind: str, value) -> None:
        for group in (self._active, self._waiting):
            if work in group:
                group.remove(work)
        work.seq.busy = False
        work.events.put((kind, value))

    def _admit(self) -> None:
        """Moves waiting work in: its sequence resident, the longest cached prefix kept, the rest to decode."""
        for work in list(self._waiting):
            if work.stopped():
                self._finish(work, END, "cancelled")
                continue
            if any(other.seq is work.seq for other in self._active):
                continue  # one work per sequence at a time
            work.seq.busy = True
            try:
                self.table.resident(work.seq)
            except KVFull as e:
                work.seq.busy = False
                if not self._active:
                    self._finish(work, ERROR, e)
                continue  # waits for running work to end
            keep = min(common_prefix_length(work.seq.ids, work.target), len(work.target) - 1)
            self.table.truncate(work.seq, keep)
            keep = len(work.seq.ids)
            work.rows = batches(work.target[keep:], work.soft)
            work.pos = keep
            self._waiting.remove(work)
            self._active.append(work)
            work.events.put((START, len(work.target) - keep))

    def _step(self) -> None:
        self._admit()
        for work in list(self._active):
            if work.stopped():
                self._finish(work, END, "cancelled")
        if not self._active:
            if self._waiting:
                time.sleep(0.005)  # waiting for room that only a caller's release can make
            return
        step = embedding_step(self._active, BATCH) or build_step(self._active, self.step_tokens)
        if step is None:
            return
        while True:
            code = self.model.decode(step.rows, step.pos, step.seqs, step.want)
            if code == 0:
                break
            if code == 1 and self.table.spill_idle():
                continue  # room made: the same batch again
            if code == 1:
                self._no_room(step)
                return
            raise RuntimeError(f"llama_decode returned {code}")
        self.steps += 1
        self.rows_decoded += len(step.rows)
        works = [(self._active[index], taken, row) for index, taken, row in step.taken]
        for work, taken, row in works:  # _advance may finish a work (it leaves _active)
            self._advance(work, taken, row)

    def _no_room(self, step) -> None:
        """The cache is full of running work: the newest prefilling work waits (its cells were never written),
        or when only generating work is left, the newest stream ends with KVFull."""
        works = [self._active[index] for index, _, _ in step.taken]
        prefilling = [w for w in works if not w.generating]
        victim = prefilling[-1] if prefilling else works[-1]
        if prefilling and len(self._active) > 1:
            self._active.remove(victim)
            victim.seq.busy = False
            self.table.truncate(victim.seq, victim.pos)
            self._waiting.insert(0, victim)
            return
        self._finish(victim, ERROR, KVFull(f"the llama.cpp KV cache ({self.model.kv_tokens} cells) is full of "
                                           f"running streams"))

    def _advance(self, work: Work, taken: int, row: Optional[int]) -> None:
        piece = work.rows[0]
        fed = piece[:taken]
        if piece.ndim == 2:
            work.seq.ids.extend(_soft_slots(work, taken))
        else:
            work.seq.ids.extend(int(t) for t in fed)
        work.pos += taken
        if taken == len(piece):
            work.rows.pop(0)
        else:
            work.rows[0] = piece[taken:]
        if row is None:
            return
        logits = self.model.logits(row)
        if work.picker is None:
            self._finish(work, LOGITS, logits)
            return
        token = work.picker(logits, work.seq.ids)
        if token in work.eos:
            self._finish(work, END, "eos")
            return
        work.produced += 1
        work.events.put((TOKEN, token))
        if work.produced >= work.max_new_tokens:
            self._finish(work, END, "max_new_tokens")
            return
        work.generating = True
        work.rows = [np.array([token], dtype=np.int32)]


def _soft_slots(work: Work, taken: int) -> list[int]:
    """The slot ids (negative) of the next `taken` soft rows: the target's ids at those positions."""
    return list(work.target[work.pos:work.pos + taken])


def _close_at_exit(ref) -> None:
    scheduler = ref()
    if scheduler is not None:
        scheduler.close()
