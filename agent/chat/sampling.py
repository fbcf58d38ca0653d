"""Picks the next token from logits: banned tokens, repetition penalty, temperature, top-k, top-p, min-p (or greedy).

Logits come as torch tensors (transformers) or numpy arrays (llama.cpp); each kind is sampled with its own
library, so a chat on llama.cpp never imports torch. Greedy picks agree; seeded samples are reproducible
within one kind (each has its own random generator).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np


@dataclass(frozen=True)
class SamplingOptions:
    max_new_tokens: int = 200  # reply length cap
    temperature: float = 0.7  # 0 means greedy (argmax)
    top_p: float = 0.9  # keep the smallest set of tokens whose probability reaches top_p
    top_k: int = 50  # keep the k most likely tokens; 0 keeps all
    min_p: float = 0.0  # drop tokens less likely than min_p x the most likely one's probability; 0 turns it off
    repetition_penalty: float = 1.1  # >1 discourages tokens already in the context; 1 turns it off
    seed: Optional[int] = None  # seeds a private random generator for this reply
    eos_token_ids: tuple[int, ...] = ()  # tokens that end the reply
    banned_token_ids: tuple[int, ...] = ()  # tokens never picked, greedy or not (the guard's last try: agent/chat/guard.py)


def new_generator(seed: Optional[int], logits):
    """The random generator for a reply whose first logits are `logits`: numpy's or torch's; None unseeded."""
    if seed is None:
        return None
    if isinstance(logits, np.ndarray):
        return np.random.default_rng(seed)
    import torch

    return torch.Generator().manual_seed(seed)


def _sample_numpy(logits: np.ndarray, options: SamplingOptions, context_ids: Sequence[int],
                  generator: Optional[np.random.Generator]) -> int:
    if options.banned_token_ids:
        logits = logits.copy()
        logits[[t for t in options.banned_token_ids if 0 <= t < logits.shape[0]]] = -np.inf
    if options.temperature == 0 and (options.repetition_penalty == 1.0 or not context_ids):
        return int(np.argmax(logits))  # plain greedy: no copy of the vocabulary's logits
    logits = logits.astype(np.float64, copy=True)
    if options.repetition_penalty != 1.0 and context_ids:
        seen = np.array(sorted(set(context_ids)), dtype=np.int64)
        seen = seen[(seen >= 0) & (seen < logits.shape[0])]  # soft-prompt slots are negative
        picked = logits[seen]
        logits[seen] = np.where(picked > 0, picked / options.repetition_penalty, picked * options.repetition_penalty)
    if options.temperature == 0:
        return int(np.argmax(logits))
    logits = logits / options.temperature
    candidates = np.arange(logits.shape[0])
    if options.top_k > 0 and options.top_k < logits.shape[0]:
        kth = np.partition(logits, -options.top_k)[-options.top_k]
        candidates = np.flatnonzero(logits >= kth)  # ascending ids: ties keep the same order as a full sort
        logits = logits[candidates]  # only these can be drawn: the rest of the work is over k values, not the vocab
    if options.top_p < 1.0:
        order = np.argsort(-logits, kind="stable")
        ordered = logits[order]
        probs = np.exp(ordered - ordered[0])
        cumulative = np.cumsum(probs / probs.sum())
        drop = np.concatenate([[False], cumulative[:-1] > options.top_p])  # keep the token that crosses top_p
        logits[order[drop]] = -np.inf
    if options.min_p > 0:  # p < min_p * p_max  <=>  logit < max logit + log(min_p)
        logits[logits < logits.max() + np.log(options.min_p)] = -np.inf
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    rng = generator if generator is not None else np.random.default_rng()
    return int(candidates[rng.choice(len(probs), p=probs)])


def sample_next(logits, options: SamplingOptions, context_ids: Sequence[int], generator=None) -> int:
    """logits: (vocab,) float32 for the next position, torch or numpy; context_ids: the tokens so far (for the
    penalty); generator: from `new_generator`."""
    if isinstance(logits, np.ndarray):
        return _sample_numpy(logits, options, context_ids, generator)
    import torch

    logits = logits.clone()
    if options.banned_token_ids:
        logits[[t for t in options.banned_token_ids if 0 <= t < logits.shape[0]]] = float("-inf")
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
    if options.min_p > 0:
        logits[logits < logits.max() + math.log(options.min_p)] = float("-inf")
    probs = torch.softmax(logits, dim=-1)
    return int(torch.multinomial(probs.cpu(), 1, generator=generator))


class TokenPicker:
    """One reply's sampling as a callable: `picker(logits, context_ids) -> token`, its seeded generator made
    at the first call (what the llama.cpp scheduler runs at each stream's row)."""

    def __init__(self, options: SamplingOptions):
        self.options = options
        self._generator = None
        self._started = False

    def __call__(self, logits, context_ids: Sequence[int]) -> int:
        if not self._started:
            self._generator, self._started = new_generator(self.options.seed, logits), True
        return sample_next(logits, self.options, context_ids, self._generator)
