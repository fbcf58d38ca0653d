"""Replies streamed from an LM engine in another process (agent/models/engine.py), with ReplyStream's interface.

The prompt is the one the local backends would decode, as text (`Prompt.text`): personae renders it with the
model's chat template, the engine only continues it. Sampling options go as OpenAI fields (temperature,
top_p, max_tokens, seed, stop, logit_bias for banned tokens) plus the extensions llama.cpp and vLLM read (top_k, repeat_penalty /
repetition_penalty). The first four stop strings are sent (the API's limit) and all are cut here
(`StopCutter`), closing the stream at the first, so an engine that ignores some still stops at the same text. The engine keeps its own KV cache (llama.cpp reuses the longest
common prefix of the previous prompt, vLLM's automatic prefix caching shares it across sessions), so the
decoder personae keeps per session holds no tokens.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Iterator, Optional, Sequence

from .stream import DecodeStats
from .sampling import SamplingOptions
from .template import StopCutter

MAX_STOPS = 4  # the OpenAI API's limit on `stop`, which vLLM enforces (400 past it); the rest are cut here
FINISH = {"stop": "engine stop", "length": "max_new_tokens"}  # OpenAI finish_reason -> DecodeStats.stopped_by


def _stopped_by(choice: dict) -> str:
    """finish_reason "stop" is an end-of-turn token or a stop string; vLLM's stop_reason says which."""
    reason = FINISH.get(choice["finish_reason"], choice["finish_reason"])
    if reason == "engine stop" and "stop_reason" in choice:
        return "stop string" if isinstance(choice["stop_reason"], str) else "eos"
    return reason


class EngineDecoder:
    """The per-session decoder of the engine backend: no local KV cache (the engine has it)."""
    reuse_cache = False  # no shared persona prefixes to seed: the engine shares prefixes itself

    def __init__(self, soft=None):
        self.soft = soft  # (K, d) soft prompt for engines that take prompt embeddings, or None
        self.ids: list[int] = []  # always empty: no tokens are cached here

    def reset(self) -> None:
        pass


def completion_body(prompt: str, options: SamplingOptions, stops: Sequence[str]) -> dict:
    """The /v1/completions request for `prompt` with these sampling options (model and stream added by the client).

    Every option is sent, defaults included: engines have their own defaults (llama.cpp: repeat_penalty 1.1,
    top_k 40, min_p 0.05), and personae's settings must hold whichever engine runs.
    """
    penalty = options.repetition_penalty or 1.0
    body = {"prompt": prompt, "max_tokens": options.max_new_tokens, "temperature": options.temperature,
            "top_p": options.top_p, "top_k": options.top_k or 0, "min_p": options.min_p,
            "repeat_penalty": penalty, "repetition_penalty": penalty}  # llama.cpp's name, vLLM's name
    if stops:
        body["stop"] = list(stops)[:MAX_STOPS]
    if options.seed is not None:
        body["seed"] = options.seed
    if options.banned_token_ids:  # -100: banned, in OpenAI's logit_bias (llama.cpp's server and vLLM read it alike)
        body["logit_bias"] = {str(t): -100 for t in options.banned_token_ids}
    return body


def encode_embeddings(embeds) -> str:
    """(T, d) prompt embeddings as vLLM's prompt_embeds wants them: base64 of `torch.save` of the tensor."""
    import base64
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(embeds.detach().cpu().contiguous(), buffer)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


@dataclass
class EngineStream:
    """One reply from the engine: iterate for text pieces; `text` and `stats` are complete once iteration ends."""
    client: object  # EngineClient
    tokenizer: object
    prompt: str  # the rendered prompt text
    prompt_ids: list[int]  # its ids by the local tokenizer (for the stats)
    options: SamplingOptions
    stop_strings: Sequence[str] = ()
    cancel: Optional[threading.Event] = None
    embeds: Optional[str] = None  # the prompt as base64 torch.save'd (T, d) embeddings (vLLM prompt_embeds), or None
    text: str = ""
    stats: DecodeStats = field(default_factory=DecodeStats)

    def __iter__(self) -> Iterator[str]:
        start = time.perf_counter()
        self.stats = DecodeStats(prompt_tokens=len(self.prompt_ids), prefill_tokens=len(self.prompt_ids),
                                 started_at=start)
        cutter = StopCutter(self.stop_strings)
        raw, first_at, stopped_by = "", None, "max_new_tokens"
        body = completion_body(self.prompt, self.options, self.stop_strings)
        if self.embeds is not None:
            del body["prompt"]  # vLLM answers each of prompt and prompt_embeds when both are sent
            body["prompt_embeds"] = self.embeds
        chunks = self.client.stream_completion(body, self.cancel)  # waits here while lm.max_concurrency are in flight
        try:
            for chunk in chunks:
                if self.cancel is not None and self.cancel.is_set():
                    stopped_by = "cancelled"
                    break
                choice = (chunk.get("choices") or [{}])[0]
                piece = choice.get("text") or ""
                if piece and first_at is None:
                    first_at = time.perf_counter()
                    self.stats.time_to_first_token = first_at - start
                raw += piece
                out = cutter.update(raw)
                if out:
                    yield out
                self.text = cutter.text
                if cutter.stopped:
                    stopped_by = "stop string"
                    break
                if choice.get("finish_reason"):
                    stopped_by = _stopped_by(choice)
        finally:
            chunks.close()  # a cancel or a stop string here closes the connection: the engine stops too
        if first_at is None and self.cancel is not None and self.cancel.is_set():
            stopped_by = "cancelled"  # while it waited for a slot, or before the first text
        rest = cutter.flush()
        if rest:
            yield rest
        self.text = cutter.text
        self.stats.new_tokens = len(self.tokenizer(raw, add_special_tokens=False)["input_ids"]) if raw else 0
        self.stats.decode_seconds = time.perf_counter() - first_at if first_at else 0.0
        self.stats.stopped_by = stopped_by
        self.stats.stop_string = cutter.found
