"""agent/chat/sampling.py: the same options pick alike from torch logits (transformers) and numpy logits (llama.cpp)."""
from collections import Counter

import numpy as np
import pytest
import torch

from agent.chat.sampling import SamplingOptions, new_generator, sample_next

LOGITS = np.array([2.0, 1.0, 0.5, -1.0, 3.0, 0.0], dtype=np.float32)


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_greedy_and_the_repetition_penalty(kind):
    logits = LOGITS if kind == "numpy" else torch.from_numpy(LOGITS.copy())
    greedy = SamplingOptions(temperature=0.0, repetition_penalty=1.0)
    assert sample_next(logits, greedy, []) == 4
    penalised = SamplingOptions(temperature=0.0, repetition_penalty=2.0)  # 3.0 / 2 = 1.5 < 2.0
    assert sample_next(logits, penalised, [4, -1]) == 0  # soft-prompt slots (negative) are ignored
    assert float(logits[4]) == 3.0  # the caller's logits are not changed


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_top_k_top_p_and_seeds(kind):
    logits = LOGITS if kind == "numpy" else torch.from_numpy(LOGITS.copy())
    top2 = SamplingOptions(temperature=1.0, top_k=2, top_p=1.0, repetition_penalty=1.0, seed=1)
    generator = new_generator(1, logits)
    picks = Counter(sample_next(logits, top2, [], generator) for _ in range(200))
    assert set(picks) <= {0, 4} and picks[4] > picks[0] > 0
    nucleus = SamplingOptions(temperature=1.0, top_k=0, top_p=0.5, repetition_penalty=1.0)
    assert {sample_next(logits, nucleus, []) for _ in range(50)} == {4}  # p(4) = 0.60 crosses 0.5 alone
    seeded = SamplingOptions(temperature=1.0, top_k=0, top_p=1.0, repetition_penalty=1.0, seed=7)
    runs = [[sample_next(logits, seeded, [], g) for _ in range(20)] for g in (new_generator(7, logits),
                                                                            new_generator(7, logits))]
    assert runs[0] == runs[1]
    assert new_generator(None, logits) is None


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_min_p_drops_tokens_far_below_the_likeliest(kind):
    logits = LOGITS if kind == "numpy" else torch.from_numpy(LOGITS.copy())
    # after temperature 1: p/p_max is e^-1 for token 0 and e^-2.5 or less for the rest
    options = SamplingOptions(temperature=1.0, top_k=0, top_p=1.0, min_p=0.3, repetition_penalty=1.0)
    generator = new_generator(3, logits)
    assert set(sample_next(logits, options, [], generator) for _ in range(200)) == {0, 4}
