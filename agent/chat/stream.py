"""One reply streamed from a decoder: sampling, end-of-turn tokens, stop strings, and its statistics.

`ReplyStream(decoder, tokenizer, prompt_ids, options, stops)` reads tokens from the decoder's `generate`
(llama.cpp: sampled by the scheduler thread, batched with other streams) or, for a decoder without one (the
transformers `CachedDecoder`), from `LocalTokens`, which prefills, samples and steps here. No torch import
here, so a chat on llama.cpp runs without loading torch.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Iterator, Optional, Sequence

from .sampling import SamplingOptions, TokenPicker
from ..generation.batch import common_prefix_length  # noqa: F401 - re-exported for chat
from .template import StopCutter


@dataclass
class DecodeStats:
    prompt_tokens: int = 0  # tokens in the prompt of this reply
    prefill_tokens: int = 0  # of those, how many ran through the model (the rest came from the cache)
    new_tokens: int = 0  # tokens generated
    time_to_first_token: float = 0.0  # seconds from the call to the first generated token
    decode_seconds: float = 0.0  # seconds spent generating after the first token
    stopped_by: str = ""  # "eos" | "stop string" | "max_new_tokens" | "cancelled" (engine: also "engine stop")
    started_at: float = 0.0  # time.perf_counter() when the stream began (prefill or the engine request)
    stop_string: str = ""  # the stop string that cut the reply, when one did

    @property
    def decode_tokens_per_second(self) -> float:
        return (self.new_tokens - 1) / self.decode_seconds if self.new_tokens > 1 and self.decode_seconds else 0.0


class LocalTokens:
    """`generate` for decoders without a scheduler (transformers' CachedDecoder): prefill, then sample and
    step one token at a time on the calling thread. Same protocol as llama.cpp's TokenStream: iterate for
    tokens (eos is not yielded); `ran` after the first token, `stopped_by` at the end, `close()` to stop."""

    def __init__(self, decoder, ids: list[int], options: SamplingOptions, cancel: Optional[threading.Event]):
        self.decoder, self.ids, self.options, self.cancel = decoder, ids, options, cancel
        self.ran = 0
        self.stopped_by = ""
        self._closed = False

    def close(self) -> None:
        self._closed = True

    def __iter__(self) -> Iterator[int]:
        logits, self.ran = self.decoder.prefill(self.ids)
        picker = TokenPicker(self.options)
        eos = set(self.options.eos_token_ids)
        produced = 0
        while produced < self.options.max_new_tokens:
            if self._closed or (self.cancel is not None and self.cancel.is_set()):
                self.stopped_by = "cancelled"
                return
            token = picker(logits, self.decoder.ids)
            if token in eos:
                self.stopped_by = "eos"
                return
            produced += 1
            yield token
            if self._closed:
                return
            if produced < self.options.max_new_tokens:
                logits = self.decoder.step(token)
        self.stopped_by = "max_new_tokens"


def generate(decoder, ids: list[int], options: SamplingOptions, cancel: Optional[threading.Event] = None):
    """The decoder's own token stream (llama.cpp: batched by its scheduler), else `LocalTokens`."""
    if hasattr(decoder, "generate"):
        return decoder.generate(ids, options, cancel)
    return LocalTokens(decoder, ids, options, cancel)


@dataclass
class ReplyStream:
    """Streams one reply: iterate for text pieces; `text` and `stats` are complete once iteration ends."""
    decoder: object  # CachedDecoder or LlamaCppDecoder
    tokenizer: object
    prompt_ids: list[int]
    options: SamplingOptions
    stop_strings: Sequence[str] = ()
    cancel: Optional[threading.Event] = None
    text: str = ""
    stats: DecodeStats = field(default_factory=DecodeStats)

    def __iter__(self) -> Iterator[str]:
        start = time.perf_counter()
        tokens = generate(self.decoder, self.prompt_ids, self.options, self.cancel)
        self.stats = DecodeStats(prompt_tokens=len(self.prompt_ids), started_at=start)
        generated: list[int] = []
        cutter = StopCutter(self.stop_strings)
        first_at = None
        stopped_by = ""
        try:
            for token in tokens:
                if first_at is None:
                    first_at = time.perf_counter()
                    self.stats.time_to_first_token = first_at - start
                if self.cancel is not None and self.cancel.is_set():
                    stopped_by = "cancelled"
                    break
                generated.append(token)
                piece = cutter.update(self.tokenizer.decode(generated, skip_special_tokens=True))
                if piece:
                    yield piece
                self.text = cutter.text
                if cutter.stopped:
                    stopped_by = "stop string"
                    break
        finally:
            tokens.close()
        if first_at is None:
            self.stats.time_to_first_token = time.perf_counter() - start
        self.stats.prefill_tokens = tokens.ran
        rest = cutter.flush()
        if rest:
            yield rest
        self.text = cutter.text
        self.stats.new_tokens = len(generated)
        self.stats.decode_seconds = time.perf_counter() - first_at if first_at else 0.0
        self.stats.stopped_by = stopped_by or tokens.stopped_by or "cancelled"
        self.stats.stop_string = cutter.found
