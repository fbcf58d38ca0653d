"""One reply streamed from a decoder: sampling, end-of-turn tokens, stop strings, and its statistics.

`ReplyStream(decoder, tokenizer, prompt_ids, options, stops)` works with any decoder that has
`prefill(ids) -> (logits, ran)`, `step(token) -> logits` and `ids`: the transformers `CachedDecoder`
(torch logits) and the llama.cpp `LlamaCppDecoder` (numpy logits). No torch import here, so a chat on
llama.cpp runs without loading torch.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Iterator, Optional, Sequence

from .sampling import SamplingOptions, new_generator, sample_next
from .template import StopCutter


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


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


@dataclass
class ReplyStream:
    """Streams one reply: iterate for text pieces; `text` and `stats` are complete once iteration ends."""
    decoder: CachedDecoder
    tokenizer: object
    prompt_ids: list[int]
    options: SamplingOptions
    stop_strings: Sequence[str] = ()
    cancel: Optional[threading.Event] = None
    text: str = ""
    stats: DecodeStats = field(default_factory=DecodeStats)

    def __iter__(self) -> Iterator[str]:
        start = time.perf_counter()
        logits, ran = self.decoder.prefill(self.prompt_ids)
        self.stats = DecodeStats(prompt_tokens=len(self.prompt_ids), prefill_tokens=ran, started_at=start)
        eos = set(self.options.eos_token_ids)
        generator = new_generator(self.options.seed, logits)
        generated: list[int] = []
        cutter = StopCutter(self.stop_strings)
        first_at = None
        stopped_by = "max_new_tokens"
        while len(generated) < self.options.max_new_tokens:
            if self.cancel is not None and self.cancel.is_set():
                stopped_by = "cancelled"
                break
            token = sample_next(logits, self.options, self.decoder.ids, generator)
            if first_at is None:
                first_at = time.perf_counter()
                self.stats.time_to_first_token = first_at - start
            if token in eos:
                stopped_by = "eos"
                break
            generated.append(token)
            piece = cutter.update(self.tokenizer.decode(generated, skip_special_tokens=True))
            if piece:
                yield piece
            self.text = cutter.text
            if cutter.stopped:
                stopped_by = "stop string"
                break
            if len(generated) < self.options.max_new_tokens:
                logits = self.decoder.step(token)
        rest = cutter.flush()
        if rest:
            yield rest
        self.text = cutter.text
        self.stats.new_tokens = len(generated)
        self.stats.decode_seconds = time.perf_counter() - first_at if first_at else 0.0
        self.stats.stopped_by = stopped_by
        self.stats.stop_string = cutter.found
