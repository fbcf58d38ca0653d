"""The shared KV cache of each persona's fixed prefix (soft prompt, system turn, greeting).

Computed once by the first session of a persona and copied into every later one, so a new session
only runs its own turns. Bounded: the least recently used prefixes are dropped.
"""
from __future__ import annotations

import threading
from collections import OrderedDict


class PrefixCache:
    def __init__(self, max_items: int = 8):
        self.max_items = max_items
        self._items: OrderedDict = OrderedDict()  # (persona key, ids tuple) -> (ids, cache)
        self._lock = threading.Lock()
        self.hits = 0

    def seed(self, decoder, key: str, prefix_ids: list[int]) -> bool:
        """Copies the stored prefix into an empty `decoder`; False when none is stored yet."""
        with self._lock:
            found = self._items.get((key, tuple(prefix_ids)))
            if found is None:
                return False
            self._items.move_to_end((key, tuple(prefix_ids)))
            self.hits += 1
        decoder.adopt(*found)
        return True

    def remember(self, decoder, key: str, prefix_ids: list[int]) -> None:
        """Stores a copy of `decoder`'s cache over `prefix_ids` (which its cache must start with)."""
        if decoder.ids[:len(prefix_ids)] != list(prefix_ids):
            return
        snapshot = decoder.snapshot(len(prefix_ids))
        with self._lock:
            self._items[(key, tuple(prefix_ids))] = snapshot
            self._items.move_to_end((key, tuple(prefix_ids)))
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)
