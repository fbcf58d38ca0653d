"""What one scheduler step decodes: one row per generating stream, then prefill chunks of waiting ones.

`build_step(streams, budget)` is pure: it takes each active stream's pending rows and returns the rows of one
`llama_decode` call (at most `budget`), FIFO over the prefilling streams so none starves. Soft-prompt
embeddings cannot share a call with token ids in llama.cpp, so a stream whose next rows are embeddings gets
a call of its own (`embedding_step`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol, Sequence

import numpy as np

from ..embedding.soft_prompt import pieces


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading ids `a` and `b` share (what a cache holding `a` can keep of a prompt `b`)."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def batches(ids: list[int], soft: Optional[np.ndarray]) -> list[np.ndarray]:
    """ids with soft-prompt slots -> what llama.cpp decodes in order: int32 ids (n,) or float32 embeddings (n, d).

    soft: (K, d) float32, cut in by `soft_prompt.pieces`.
    """
    return [np.ascontiguousarray(piece, dtype=np.float32) if is_soft else np.asarray(piece, dtype=np.int32)
            for is_soft, piece in pieces(ids, soft)]


class Pending(Protocol):
    """What the builder reads of an active stream."""
    seq_id: int  # its llama.cpp sequence
    pos: int  # the position its next row goes to
    rows: Sequence[np.ndarray]  # pieces still to decode, in order: int32 ids (n,) or float32 embeddings (n, d)
    generating: bool  # True: one sampled token waits (a single-row piece); False: prefilling its prompt


@dataclass(frozen=True)
class Step:
    """One llama_decode call: rows (n,) int32 or (n, d) float32, pos/seqs (n,) int32, want (n,) bool, and for
    each stream taking part, (index in the streams list, rows taken, the batch row of its logits or None)."""
    rows: np.ndarray
    pos: np.ndarray
    seqs: np.ndarray
    want: np.ndarray
    taken: tuple[tuple[int, int, Optional[int]], ...]


def _assemble(parts: list[tuple[int, Pending, np.ndarray, bool]]) -> Step:
    rows = np.concatenate([chunk for _, _, chunk, _ in parts])
    pos = np.concatenate([np.arange(s.pos, s.pos + len(c), dtype=np.int32) for _, s, c, _ in parts])
    seqs = np.concatenate([np.full(len(c), s.seq_id, dtype=np.int32) for _, s, c, _ in parts])
    want = np.zeros(len(rows), dtype=bool)
    taken, at = [], 0
    for index, _, chunk, last in parts:
        at += len(chunk)
        if last:
            want[at - 1] = True
        taken.append((index, len(chunk), at - 1 if last else None))
    return Step(rows, pos, seqs, want, tuple(taken))


def embedding_step(streams: Sequence[Pending], budget: int) -> Optional[Step]:
    """A call of its own for the first stream whose next piece is embeddings (up to `budget` rows), or None."""
    for index, stream in enumerate(streams):
        if stream.rows and stream.rows[0].ndim == 2:
            piece = stream.rows[0]
            chunk = piece[:budget]
            return _assemble([(index, stream, chunk, len(chunk) == len(piece) and len(stream.rows) == 1)])
    return None


def build_step(streams: Sequence[Pending], budget: int) -> Optional[Step]:
    """The token rows of one call: every generating stream's token first, then prefill chunks in list order
    (the scheduler keeps streams in arrival order) until `budget` rows; None when no token rows wait.

    A stream's logits are wanted at its last row only when that row ends its pending pieces (a prompt's end).
    Streams whose next piece is embeddings are skipped here (see `embedding_step`).
    """
    parts: list[tuple[int, Pending, np.ndarray, bool]] = []
    left = budget
    for index, stream in enumerate(streams):
        if stream.generating and stream.rows and left > 0:
            parts.append((index, stream, stream.rows[0], True))
            left -= 1
    for index, stream in enumerate(streams):
        if left <= 0:
            break
        if stream.generating or not stream.rows or stream.rows[0].ndim != 1:
            continue
        piece = stream.rows[0]
        chunk = piece[:left]
        parts.append((index, stream, chunk, len(chunk) == len(piece) and len(stream.rows) == 1))
        left -= len(chunk)
    return _assemble(parts) if parts else None
