"""Token generation over a transformers KV cache that is reused across turns.

`CachedDecoder.prefill(ids)` runs only the tokens after the longest prefix already in the cache, so
turn N of a chat costs its new tokens, not the whole history. `chat/stream.py`'s `ReplyStream` turns
sampled tokens into text pieces.
"""
from __future__ import annotations

import copy
import inspect
from typing import Optional

import torch

from ..embedding.reader import reading
from ..embedding.soft_prompt import inputs_embeds
from .stream import common_prefix_length

PREFILL_CHUNK = 512  # tokens per forward pass during prefill; bounds activation memory on long prompts


def cache_kwarg(model: torch.nn.Module) -> str:
    """The forward() keyword for the KV cache: transformers renamed `past_key_values` to `cache` in 5.x."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


class CachedDecoder:
    """One LM, one KV cache, and the token ids that cache holds (its key positions).

    Not thread-safe: one decoder per session, driven by one thread at a time.
    """

    def __init__(self, model: torch.nn.Module, *, reuse_cache: bool = True, soft: Optional[torch.Tensor] = None):
        self.model = model
        self.soft = soft  # (K, d) vectors for the prompt's placeholder ids -1..-K, or None
        self._cache_kwarg = cache_kwarg(model)
        self.device = next(model.parameters()).device
        self.reuse_cache = reuse_cache  # False recomputes every prompt from scratch (for benchmarks/tests)
        self.cache = None  # transformers DynamicCache over self.ids
        self.ids: list[int] = []

    def reset(self) -> None:
        self.cache, self.ids = None, []

    def adopt(self, ids: list[int], cache) -> None:
        """Starts from a copy of another decoder's state (a persona's shared prefix); `cache` is not modified."""
        self.cache, self.ids = copy.deepcopy(cache), list(ids)

    def snapshot(self, length: int):
        """(ids, cache) of the first `length` cached tokens, as an independent copy."""
        length = min(length, len(self.ids))
        cache = copy.deepcopy(self.cache)
        if length < len(self.ids):
            cache.crop(length - len(self.ids))
        return self.ids[:length], cache

    @torch.inference_mode()
    def _forward(self, new_ids: list[int]) -> torch.Tensor:
        """Appends new_ids to the cache; returns the logits of the last one, shape (vocab,)."""
        from transformers import DynamicCache

        if self.cache is None:
            self.cache = DynamicCache(config=self.model.config)
        try:
            logits = None
            for start in range(0, len(new_ids), PREFILL_CHUNK):
                chunk = torch.tensor([new_ids[start:start + PREFILL_CHUNK]], device=self.device)  # (1, T)
                if chunk.min() < 0:  # soft-prompt slots: feed embeddings instead of ids
                    inputs = {"inputs_embeds": inputs_embeds(self.model.get_input_embeddings(), chunk, self.soft)}
                else:
                    inputs = {"input_ids": chunk}
                with reading(self.model, self.soft):  # the reader reads only soft prompts
                    out = self.model(**inputs, use_cache=True, logits_to_keep=1, **{self._cache_kwarg: self.cache})
                logits = out.logits[0, -1]  # (vocab,)
                self.ids.extend(new_ids[start:start + PREFILL_CHUNK])
        except BaseException:
            # An interrupted forward can leave layers of the cache at different lengths: drop it.
            self.reset()
            raise
        return logits.float()

    def prefill(self, ids: list[int]) -> tuple[torch.Tensor, int]:
        """Brings the cache to exactly `ids`; returns (logits of the last position (vocab,), tokens run)."""
        if not ids:
            raise ValueError("cannot prefill an empty prompt")
        keep = common_prefix_length(self.ids, ids) if self.reuse_cache else 0
        keep = min(keep, len(ids) - 1)  # the last token always runs, to get its logits
        if keep == 0:
            self.reset()
        elif keep < len(self.ids):
            self.cache.crop(keep - len(self.ids))  # negative: tokens to remove (all transformers versions)
            del self.ids[keep:]
        new = ids[keep:]
        return self._forward(new), len(new)

    @torch.inference_mode()
    def score(self, ids: list[int]) -> torch.Tensor:
        """Logits (len(ids), vocab) at each of `ids` run after the cached tokens; the cache is left as it was."""
        chunk = torch.tensor([ids], device=self.device)  # (1, n)
        with reading(self.model, self.soft):  # as in _forward: the cached prompt holds the soft prompt
            out = self.model(input_ids=chunk, use_cache=True, **{self._cache_kwarg: self.cache})
        self.cache.crop(-len(ids))  # back to self.ids
        return out.logits[0].float()  # (n, vocab)

    def step(self, token_id: int) -> torch.Tensor:
        """Feeds one generated token; returns the next logits (vocab,)."""
        return self._forward([token_id])


