"""Token generation on llama.cpp, with the same interface as `CachedDecoder` (prefill, step, ids, snapshot, adopt).

Each decoder holds one sequence of the shared `LlamaCppModel` and reuses the longest common token prefix
across turns. Soft-prompt slots (ids -1..-K) go in as input-embedding batches between the token batches,
at continuing positions. `ReplyStream` drives it exactly as it drives the transformers decoder.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..embedding.soft_prompt import pieces
from ..models.llamacpp import Lease, LlamaCppModel
from .stream import common_prefix_length


@dataclass(frozen=True)
class SharedPrefix:
    """A snapshot: a sequence holding the first `length` positions of another (its cells are shared, not copied)."""
    lease: Lease
    length: int


def batches(ids: list[int], soft: Optional[np.ndarray]) -> list[np.ndarray]:
    """ids with soft-prompt slots -> what llama.cpp decodes in order: int32 ids (n,) or float32 embeddings (n, d).

    soft: (K, d) float32, cut in by `soft_prompt.pieces`.
    """
    return [np.ascontiguousarray(piece, dtype=np.float32) if is_soft else np.asarray(piece, dtype=np.int32)
            for is_soft, piece in pieces(ids, soft)]


def _rows(soft) -> np.ndarray:
    """A (K, d) soft prompt (torch tensor or array) as float32 numpy rows."""
    if hasattr(soft, "detach"):
        soft = soft.detach().float().cpu().numpy()
    return np.ascontiguousarray(soft, dtype=np.float32)


class LlamaCppDecoder:
    """One session's sequence in the llama.cpp KV cache, and the token ids it holds.

    Not thread-safe on its own (one decoder per session, as with CachedDecoder); the model serializes
    the calls of different decoders.
    """

    def __init__(self, model: LlamaCppModel, *, reuse_cache: bool = True, soft=None):
        if soft is not None and soft.shape[-1] != model.n_embd:
            raise ValueError(f"soft prompt width {soft.shape[-1]} != the GGUF's embedding width {model.n_embd}")
        self.model = model
        self._soft_rows = None if soft is None else _rows(soft)  # (K, d) float32, for ids -1..-K
        self.reuse_cache = reuse_cache  # False recomputes every prompt from scratch (for benchmarks/tests)
        self._lease: Optional[Lease] = None
        self._ids: list[int] = []

    @property
    def ids(self) -> list[int]:
        """The token ids the cache holds; empty again when the model evicted this sequence to make room."""
        if self._lease is not None and not self._lease.alive:
            self._lease, self._ids = None, []
        return self._ids

    def reset(self) -> None:
        self.model.release(self._lease)
        self._lease, self._ids = None, []

    def _sequence(self, keep: Optional[Lease] = None) -> Lease:
        """This decoder's sequence, claimed anew (empty) when it has none; `keep` is never evicted for it."""
        if self._lease is None or not self._lease.alive:
            self._lease, self._ids = self.model.claim(keep=keep), []
        return self._lease

    def adopt(self, ids: list[int], shared: SharedPrefix) -> None:
        """Starts from a shared persona prefix (cells are shared, nothing is recomputed); stays empty if it was evicted."""
        if not shared.lease.alive:
            self.reset()
            return
        self.model.copy(shared.lease, self._sequence(keep=shared.lease), shared.length)
        self._ids = list(ids[:shared.length])

    def snapshot(self, length: int) -> tuple[list[int], SharedPrefix]:
        """(ids, SharedPrefix) of the first `length` cached tokens; its sequence is freed when it is dropped."""
        source = self._sequence()
        length = min(length, len(self._ids))
        lease = self.model.claim(keep=source)
        self.model.copy(source, lease, length)
        return self._ids[:length], SharedPrefix(lease, length)

    def _extend(self, ids: list[int], keep: int) -> tuple[np.ndarray, int]:
        """Brings the cache to `ids`, of which the first `keep` are cached; returns (last logits (vocab,), tokens run)."""
        lease = self._sequence()
        keep = min(keep, len(self._ids))  # a newly claimed sequence holds nothing
        if keep < len(self._ids):
            keep = self.model.truncate(lease, keep)
            del self._ids[keep:]
        new = ids[keep:]
        try:
            logits = self.model.decode(lease, keep, batches(new, self._soft_rows))
        except BaseException:
            self.reset()  # a failed or interrupted decode leaves the sequence partly written
            raise
        self._ids.extend(new)
        return logits, len(new)

    def prefill(self, ids: list[int]) -> tuple[np.ndarray, int]:
        """Brings the cache to exactly `ids`; returns (logits of the last position (vocab,), tokens run)."""
        if not ids:
            raise ValueError("cannot prefill an empty prompt")
        keep = common_prefix_length(self.ids, ids) if self.reuse_cache else 0
        return self._extend(ids, min(keep, len(ids) - 1))  # the last token always runs, to get its logits

    def step(self, token_id: int) -> np.ndarray:
        """Feeds one generated token; returns the next logits (vocab,)."""
        ids = self.ids
        return self._extend(ids + [token_id], len(ids))[0]
