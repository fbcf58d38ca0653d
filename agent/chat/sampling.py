"""Picks the next token from logits: repetition penalty, temperature, top-k, top-p (or greedy)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch


@dataclass(frozen=True)
class SamplingOptions:
    max_new_tokens: int = 200  # reply length cap
    temperature: float = 0.7  # 0 means greedy (argmax)
    top_p: float = 0.9  # keep the smallest set of tokens whose probability reaches top_p
    top_k: int = 50  # keep the k most likely tokens; 0 keeps all
    repetition_penalty: float = 1.1  # >1 discourages tokens already in the context; 1 turns it off
    seed: Optional[int] = None  # seeds a private torch.Generator for this reply
    eos_token_ids: tuple[int, ...] = ()  # tokens that end the reply


def sample_next(logits: torch.Tensor, options: SamplingOptions, context_ids: Sequence[int],
                generator: Optional[torch.Generator] = None) -> int:
    """logits: (vocab,) float32 for the next position; context_ids: the tokens so far (for the penalty)."""
    logits = logits.clone()
    if options.repetition_penalty != 1.0 and context_ids:
        seen = torch.tensor(sorted(set(context_ids)), dtype=torch.long, device=logits.device)
        seen = seen[(seen >= 0) & (seen < logits.shape[0])]  # soft-prompt slots are negative
        picked = logits[seen]
        logits[seen] = torch.where(picked > 0, picked / options.repetition_penalty,
                                   picked * options.repetition_penalty)
    if options.temperature == 0:
        return int(torch.argmax(logits))
    logits = logits / options.temperature
    if options.top_k > 0:
        kth = torch.topk(logits, min(options.top_k, logits.shape[0])).values[-1]
        logits[logits < kth] = float("-inf")
    if options.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
        drop = cumulative > options.top_p
        drop[1:] = drop[:-1].clone()  # keep the token that crosses top_p
        drop[0] = False
        logits[order[drop]] = float("-inf")
    probs = torch.softmax(logits, dim=-1)
    return int(torch.multinomial(probs.cpu(), 1, generator=generator))
