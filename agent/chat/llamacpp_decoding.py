"""Token generation on llama.cpp, with the same interface as `CachedDecoder` (prefill, step, ids, snapshot,
adopt) plus `generate`, a stream of sampled tokens.

Each decoder is one `Sequence` of the shared llama.cpp context; every call is work for the context's one
scheduler thread (agent/generation/scheduler.py), which batches it with every other session's. Soft-prompt
slots (ids -1..-K) go in as input-embedding rows at continuing positions. An idle decoder's cache may be
spilled to RAM or disk by the scheduler; its next call restores it.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Iterator, Optional

import numpy as np

from ..generation.batch import batches  # noqa: F401 - ids -> decode rows; imported from here by tests
from ..generation.scheduler import END, ERROR, LOGITS, START, TOKEN, Scheduler, Work
from ..generation.sequences import Sequence
from .sampling import SamplingOptions, TokenPicker


@dataclass(frozen=True)
class SharedPrefix:
    """A snapshot: a sequence holding the first `length` positions of another (its cells are shared, not copied)."""
    seq: Sequence
    length: int


def _rows(soft) -> np.ndarray:
    """A (K, d) soft prompt (torch tensor or array) as float32 numpy rows."""
    if hasattr(soft, "detach"):
        soft = soft.detach().float().cpu().numpy()
    return np.ascontiguousarray(soft, dtype=np.float32)


class TokenStream:
    """The tokens the scheduler samples for one reply. `ran` (prompt tokens decoded) is known once the first
    token (or the end) arrives; `stopped_by` once iteration ends; `close()` leaves the batch at the next step."""

    def __init__(self, scheduler: Scheduler, work: Work):
        self._scheduler = scheduler
        self._work = work
        self.ran = 0
        self.stopped_by = ""

    def __iter__(self) -> Iterator[int]:
        events = self._work.events
        try:
            while True:
                kind, value = events.get()
                if kind == START:
                    self.ran = value
                elif kind == TOKEN:
                    yield value
                elif kind == END:
                    self.stopped_by = value
                    return
                elif kind == LOGITS:  # max_new_tokens < 1: the prompt was decoded, nothing sampled
                    self.stopped_by = "max_new_tokens"
                    return
                elif kind == ERROR:
                    raise value
        finally:
            if not self.stopped_by:  # the caller stopped reading (a stop string, an error, cancel)
                self.close()

    def close(self) -> None:
        self._work.aborted = True


class LlamaCppDecoder:
    """One session's sequence in the llama.cpp KV cache, and the token ids it holds.

    One decoder per session, used by one thread at a time; many decoders run at once through the scheduler.
    """

    def __init__(self, scheduler: Scheduler, *, reuse_cache: bool = True, soft=None):
        model = scheduler.model
        if soft is not None and soft.shape[-1] != model.n_embd:
            raise ValueError(f"soft prompt width {soft.shape[-1]} != the GGUF's embedding width {model.n_embd}")
        self.scheduler = scheduler
        self.model = model
        self._soft_rows = None if soft is None else _rows(soft)  # (K, d) float32, for ids -1..-K
        self.reuse_cache = reuse_cache  # False recomputes every prompt from scratch (for benchmarks/tests)
        self._seq = Sequence()

    @property
    def ids(self) -> list[int]:
        """The token ids this decoder's cache holds (resident or spilled)."""
        return self._seq.ids

    def keep_as(self, key: Optional[str]) -> None:
        """Names a saved session's cache (key: unique per session, and per soft prompt): once idle, its state may
        be written to disk and outlive the process; an empty decoder picks up such a state saved earlier."""
        self.scheduler.call(lambda table: table.bind(self._seq, key))

    def reset(self) -> None:
        self.scheduler.call(lambda table: table.release(self._seq))

    def close(self) -> None:
        """Moves the cache out of the context (to RAM, or disk for a saved session); the next call restores it."""
        self.scheduler.call(lambda table: table.spill(self._seq, to_disk=self._seq.key is not None))

    def adopt(self, ids: list[int], shared: SharedPrefix) -> None:
        """Starts from a shared persona prefix (cells are shared, nothing is recomputed)."""
        self.scheduler.call(lambda table: table.copy(shared.seq, self._seq, min(shared.length, len(ids))))

    def snapshot(self, length: int) -> tuple[list[int], SharedPrefix]:
        """(ids, SharedPrefix) of the first `length` cached tokens; its sequence is freed when it is dropped."""
        target = Sequence()
        self.scheduler.call(lambda table: table.copy(self._seq, target, length))
        return list(target.ids), SharedPrefix(target, len(target.ids))

    def _run(self, work: Work):
        self.scheduler.submit(work)
        ran = 0
        while True:
            kind, value = work.events.get()
            if kind == START:
                ran = value
            elif kind == LOGITS:
                return value, ran
            elif kind == ERROR:
                raise value
            elif kind == END:
                raise InterruptedError("the llama.cpp scheduler stopped this work")

    def _target(self, ids: list[int]) -> list[int]:
        if not self.reuse_cache:
            self.reset()
        return list(ids)

    def prefill(self, ids: list[int]) -> tuple[np.ndarray, int]:
        """Brings the cache to exactly `ids`; returns (logits of the last position (vocab,), tokens run)."""
        if not ids:
            raise ValueError("cannot prefill an empty prompt")
        return self._run(Work(self._seq, self._target(ids), self._soft_rows))

    def step(self, token_id: int) -> np.ndarray:
        """Feeds one generated token; returns the next logits (vocab,)."""
        return self._run(Work(self._seq, self.ids + [token_id], self._soft_rows))[0]

    def generate(self, ids: list[int], options: SamplingOptions,
                 cancel: Optional[threading.Event] = None) -> TokenStream:
        """Streams sampled tokens after `ids` (the cache is brought to them first), batched with every other
        stream; ends on an eos token (not yielded), `options.max_new_tokens`, cancel or `close()`."""
        if not ids:
            raise ValueError("cannot prefill an empty prompt")
        picker = TokenPicker(options) if options.max_new_tokens > 0 else None  # None: a prefill, no token
        work = Work(self._seq, self._target(ids), self._soft_rows, picker=picker,
                    max_new_tokens=options.max_new_tokens, eos=frozenset(options.eos_token_ids), cancel=cancel)
        return TokenStream(self.scheduler, self.scheduler.submit(work))


def persona_cells(scheduler: Scheduler, plan) -> SharedPrefix:
    """A kv-mode persona's cells (agent/embedding/kv_cells.py CellPlan) in their own sequence: the system turn's
    body decoded, every cell but the kept ones dropped and the gaps closed (`SequenceTable.compact`: seq_rm, then
    seq_add, llama.cpp's K-shift), then the tail decoded after them, which applies the shift. Sessions adopt it.

    The sequence is named by the plan (card, lore and selection), so its state is written to the spill folder
    at once and a later process restores it from there instead of reading the card again."""
    decoder = LlamaCppDecoder(scheduler)
    decoder.keep_as(f"persona-kv:{plan.key()}")
    if decoder.ids == plan.prefix_ids:  # saved by an earlier run: restored on first use
        return SharedPrefix(decoder._seq, len(plan.prefix_ids))
    decoder.reset()
    decoder.prefill(plan.body)
    seq = decoder._seq

    def compact(table):
        table.resident(seq)
        table.compact(seq, list(plan.kept))
    scheduler.call(compact)
    decoder.prefill(plan.prefix_ids)
    scheduler.call(lambda table: table.persist(seq))
    return SharedPrefix(seq, len(plan.prefix_ids))
