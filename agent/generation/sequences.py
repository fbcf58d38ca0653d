"""Which llama.cpp sequence ids and KV cells each decoder holds: the only owner of them.

A `Sequence` is one decoder's (or one shared prefix's) place in the cache: the ids it holds, and either a
resident sequence id or a spilled state (spill.py). `SequenceTable` hands out ids, shares prefix cells
(`seq_cp`), and when ids or cells run out spills the least recently used idle sequence instead of dropping
it; its next use restores it. Used from the scheduler thread only.
"""
from __future__ import annotations

import itertools
import logging
import threading
import weakref
from typing import Optional

from ..models.llamacpp import KVFull, LlamaCppModel
from .spill import Spilled, SpillStore

log = logging.getLogger(__name__)
_clock = itertools.count()


class Sequence:
    """One decoder's tokens in the cache. `ids` are what it holds (resident or spilled); `key` names a saved
    session whose state may go to disk and outlive the process (None: RAM only)."""

    def __init__(self, key: Optional[str] = None):
        self.ids: list[int] = []
        self.seq_id: Optional[int] = None
        self.spilled: Optional[Spilled] = None
        self.key = key
        self.busy = False  # part of a running work: never spilled
        self.used = next(_clock)  # for least-recently-used choices


class SequenceTable:
    def __init__(self, model: LlamaCppModel, spills: SpillStore):
        self.model = model
        self.spills = spills
        self._free = list(range(model.n_seq_max - 1, -1, -1))  # pop() hands out 0 first
        self._resident: dict[int, weakref.ref] = {}  # seq id -> its Sequence
        self._ram: dict[int, weakref.ref] = {}  # id(Sequence) -> Sequence, for those spilled to RAM
        self._orphans: list[int] = []  # seq ids of Sequences collected while resident
        self._orphan_lock = threading.Lock()  # the GC callback may run on any thread
        self.spill_count = self.restore_count = self.recomputed = 0

    # --- lifetime ----------------------------------------------------------------------------
    def _forget(self, seq_id: int) -> None:
        with self._orphan_lock:
            self._orphans.append(seq_id)

    def collect(self) -> None:
        """Frees the ids of Sequences that were garbage-collected (a dropped session or prefix)."""
        with self._orphan_lock:
            orphans, self._orphans = self._orphans, []
        for seq_id in orphans:
            ref = self._resident.get(seq_id)
            if ref is not None and ref() is None:
                del self._resident[seq_id]
                self.model.seq_rm(seq_id)
                self._free.append(seq_id)

    def release(self, seq: Sequence) -> None:
        """Empties `seq`: its cells and any spilled state go (a disk file too)."""
        if seq.seq_id is not None:
            self.model.seq_rm(seq.seq_id)
            del self._resident[seq.seq_id]
            self._free.append(seq.seq_id)
            seq.seq_id = None
        self._drop_spill(seq)
        seq.ids = []

    def _drop_spill(self, seq: Sequence) -> None:
        if seq.spilled is not None:
            self.spills.let_go(id(seq))
            self._ram.pop(id(seq), None)
            self.spills.remove(seq.spilled)
            seq.spilled = None

    def bind(self, seq: Sequence, key: Optional[str]) -> None:
        """Names `seq` as a saved session's; an empty `seq` takes up the state saved on disk under `key`."""
        seq.key = key
        if key is not None and not seq.ids and seq.seq_id is None and seq.spilled is None:
            found = self.spills.find(key)
            if found is not None:
                seq.spilled, seq.ids = found, list(found.ids)

    # --- residency ---------------------------------------------------------------------------
    def _claim(self, seq: Sequence) -> int:
        self.collect()
        while not self._free:
            if not self.spill_idle():
                raise KVFull(f"all {self.model.n_seq_max} llama.cpp sequences are busy")
        seq_id = self._free.pop()
        self.model.seq_rm(seq_id)
        seq.seq_id = seq_id
        self._resident[seq_id] = weakref.ref(seq, lambda _, s=seq_id: self._forget(s))
        return seq_id

    def resident(self, seq: Sequence) -> int:
        """`seq`'s sequence id, restoring its spilled state first (or, when that state is unusable, emptying
        it: it recomputes). May spill idle others to make room; KVFull when nothing can be spilled."""
        seq.used = next(_clock)
        if seq.seq_id is not None:
            return seq.seq_id
        seq_id = self._claim(seq)
        spilled, seq.spilled = seq.spilled, None
        if spilled is None:
            seq.ids = []
            return seq_id
        self.spills.let_go(id(seq))
        self._ram.pop(id(seq), None)
        data = spilled.data if spilled.data is not None else self.spills.read(spilled)
        while data is not None and not self.model.state_set(seq_id, data):
            self.model.seq_rm(seq_id)
            if not self.spill_idle(keep=seq):
                log.warning("a spilled KV state could not be restored (no room or refused); recomputing")
                data = None
        if spilled.path is not None and seq.key is None:
            self.spills.remove(spilled)
        if data is None:
            self.recomputed += 1
            seq.ids = []
        else:
            self.restore_count += 1
            seq.ids = list(spilled.ids)
        return seq_id

    def spill(self, seq: Sequence, *, to_disk: bool = False) -> None:
        """Moves a resident, idle `seq` out of the cache: to RAM (or straight to disk with `to_disk` and a key)."""
        if seq.seq_id is None or seq.busy:
            return
        data = self.model.state_get(seq.seq_id) if seq.ids else b""
        self.model.seq_rm(seq.seq_id)
        del self._resident[seq.seq_id]
        self._free.append(seq.seq_id)
        seq.seq_id = None
        self.spill_count += 1
        if not seq.ids:
            return
        if to_disk and seq.key is not None:
            seq.spilled = self.spills.write(seq.key, seq.ids, data)
            if seq.spilled is None:
                seq.ids = []
            return
        seq.spilled, over = self.spills.hold(id(seq), seq.ids, data)
        self._ram[id(seq)] = weakref.ref(seq, lambda _, owner=id(seq): self._ram_gone(owner))
        for owner in over:  # past the RAM budget: oldest to disk (saved sessions) or dropped
            ref = self._ram.pop(owner, None)
            other = ref() if ref is not None else None
            if other is None:
                self.spills.let_go(owner)
            else:
                self._evict_ram(other)

    def _ram_gone(self, owner: int) -> None:
        self._ram.pop(owner, None)
        self.spills.let_go(owner)

    def _evict_ram(self, seq: Sequence) -> None:
        spilled = seq.spilled
        self.spills.let_go(id(seq))
        seq.spilled = self.spills.write(seq.key, spilled.ids, spilled.data) if seq.key is not None else None
        if seq.spilled is None:
            seq.ids = []

    def spill_idle(self, keep: Optional[Sequence] = None) -> bool:
        """Spills the least recently used resident sequence that is not busy (nor `keep`); False when none is."""
        candidates = [s for s in (ref() for ref in self._resident.values())
                      if s is not None and not s.busy and s is not keep]
        if not candidates:
            self.collect()
            return False
        self.spill(min(candidates, key=lambda s: s.used))
        return True

    def persist(self, seq: Sequence) -> None:
        """Writes a saved session's state to disk now (it stays resident or in RAM as it was)."""
        if seq.key is None or not seq.ids:
            return
        if seq.seq_id is not None:
            data = self.model.state_get(seq.seq_id)
        elif seq.spilled is not None and seq.spilled.data is not None:
            data = seq.spilled.data
        else:
            return  # on disk already, or nothing
        self.spills.write(seq.key, seq.ids, data)

    def persist_all(self) -> None:
        """At shutdown: every saved session's state to disk."""
        for ref in list(self._resident.values()) + list(self._ram.values()):
            seq = ref()
            if seq is not None:
                self.persist(seq)

    # --- editing -----------------------------------------------------------------------------
    def truncate(self, seq: Sequence, length: int) -> None:
        """Keeps the first `length` ids of a resident `seq` (all of them, if llama.cpp cannot cut it)."""
        if length >= len(seq.ids):
            return
        if not self.model.seq_rm(seq.seq_id, length, -1):
            self.model.seq_rm(seq.seq_id)
            length = 0
        del seq.ids[length:]

    def copy(self, source: Sequence, target: Sequence, length: int) -> None:
        """`target` holds the first `length` ids of `source`, sharing their cells (both made resident)."""
        busy = source.busy, target.busy  # either may be running work: restore, never clear, their flags
        target.busy = True
        try:
            self.resident(source)
            source.busy = True
            self.resident(target)
        finally:
            source.busy, target.busy = busy
        length = min(length, len(source.ids))
        self.model.seq_rm(target.seq_id)
        self.model.seq_cp(source.seq_id, target.seq_id, 0, length)
        self._drop_spill(target)
        target.ids = list(source.ids[:length])

    def compact(self, seq: Sequence, keep: list[int]) -> None:
        """Keeps only the cells at positions `keep` (ascending) of a resident `seq`, moved to positions
        0..len(keep)-1: the dropped runs go (seq_rm), every kept run moves back by what went before it (seq_add).
        The moved keys are re-rotated at the next decode, so decode after this before reading the state."""
        if not self.model.can_shift:
            raise ValueError("this model's KV cache cannot shift positions; kv conditioning needs a RoPE model")
        kept, n = set(keep), len(seq.ids)
        if any(not 0 <= i < n for i in kept):
            raise ValueError(f"positions to keep must lie in 0..{n - 1}")
        removed, i = 0, 0
        while i < n:
            j = i
            while j < n and (j in kept) == (i in kept):
                j += 1
            if i in kept:
                if removed:
                    self.model.seq_add(seq.seq_id, i, j, -removed)
            else:
                self.model.seq_rm(seq.seq_id, i, j)
                removed += j - i
            i = j
        seq.ids = [seq.ids[i] for i in sorted(kept)]
