"""One leaf of the draft written under a grammar on a local decoder (llama.cpp or transformers).

`write_leaf(decoder, tokenizer, prompt_ids, constraint, ...)` samples token by token with every token the
grammar forbids masked out, stops when the value is complete, and past its token budget steers to the
shortest way out (end of value, a closing quote), so the text it returns always parses as the leaf's JSON.
A `Constraint` (llama.cpp grammar sampler, xgrammar matcher) only masks logits and accepts tokens.
"""
from __future__ import annotations

import json
import math
import time
from typing import Optional, Protocol, Sequence

from ..chat.sampling import SamplingOptions, new_generator, sample_next

FINISH_STEPS = 16  # tokens past the budget the grammar may need to close a value (an escape, a pattern's end)
CLOSING_TEXTS = ('"', '."', '!"', '?"', '…"', '."\n')  # tokens that end a JSON string, preferred once over budget


class Constraint(Protocol):
    """A grammar's state while one value is written."""

    def mask(self, logits, *, full: bool):
        """A copy of `logits` (vocab,) with forbidden tokens at -inf; `full` checks the whole vocabulary
        (else an implementation may check only the likeliest tokens, falling back to all when none pass)."""

    def accept(self, token: int) -> None:
        """Advances the grammar over an allowed, non-end token."""


def closing_ids(tokenizer) -> tuple[int, ...]:
    """Single tokens of the tokenizer that end a JSON string (with the sentence's last mark)."""
    found = []
    for text in CLOSING_TEXTS:
        ids = tokenizer.encode(text, add_special_tokens=False)
        if len(ids) == 1 and ids[0] not in found:
            found.append(ids[0])
    return tuple(found)


def complete(text: str) -> bool:
    """A string or enum value is complete once it parses and ends on its closing quote."""
    return text.rstrip().endswith('"') and parses(text)


def parses(text: str) -> bool:
    try:
        json.loads(text, strict=False)
    except ValueError:
        return False
    return True


def _without_ends(masked, stop_ids: Sequence[int], text: str):
    """Stop tokens only once the value parses: llama.cpp's grammar passes special tokens other than its
    end-of-generation ones (their text is empty), which would end a value half written."""
    if stop_ids and not parses(text):
        masked[[i for i in stop_ids if i < len(masked)]] = -math.inf
    return masked


def _allowed(masked, ids: Sequence[int]) -> list[int]:
    return [i for i in ids if i < len(masked) and math.isfinite(float(masked[i]))]


def _finishing_token(masked, stop_ids: Sequence[int], closers: Sequence[int], text: str) -> int:
    """Over budget: end the value when the grammar allows it, else close the string, else the likeliest step."""
    if text.strip():
        ends = _allowed(masked, stop_ids)
        if ends:
            return ends[0]
    shut = _allowed(masked, closers)
    if shut:
        return max(shut, key=lambda i: float(masked[i]))
    return int(masked.argmax())


def write_leaf(decoder, tokenizer, prompt_ids: list[int], constraint: Constraint, *, budget: int,
               options: SamplingOptions, stop_ids: Sequence[int], closers: Sequence[int],
               deadline: Optional[float] = None) -> tuple[str, bool]:
    """(the leaf's JSON text as the model writes it after `prompt_ids`, whether the budget or deadline ended it);
    never longer than budget + FINISH_STEPS tokens. A `deadline` (time.monotonic()) that has passed turns the
    rest of the budget into finishing."""
    logits, _ = decoder.prefill(prompt_ids)
    generator = new_generator(options.seed, logits)
    generated: list[int] = []
    text, over = "", False
    for step in range(budget + FINISH_STEPS):
        over = over or step >= budget or (deadline is not None and time.monotonic() > deadline)
        masked = _without_ends(constraint.mask(logits, full=over), stop_ids, text)
        if not bool((masked > -math.inf).any()):  # the likeliest candidates were all forbidden
            masked = _without_ends(constraint.mask(logits, full=True), stop_ids, text)
        if over:
            token = _finishing_token(masked, stop_ids, closers, text)
        else:
            token = sample_next(masked, options, decoder.ids, generator)
        if token in stop_ids:  # the grammar allows an end only after a whole value
            break
        constraint.accept(token)
        generated.append(token)
        text = tokenizer.decode(generated, skip_special_tokens=True)
        if complete(text):
            break
        logits = decoder.step(token)
    return text, over
