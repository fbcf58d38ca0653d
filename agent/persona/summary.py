"""The card cut to a token budget: who the character is, in the card's own first words.

`conditioning: summary` shows the LM this instead of the whole card, to save context. The card's fields
(description, then personality, then scenario) are read in order, whitespace collapsed, and cut to at
most `max_tokens` tokens of the chat LM's tokenizer, at the last sentence end that keeps at least half of
the budget, else at the last word there (text without spaces, as in Chinese or Japanese, at the last
whole character). Cards usually open with who, where and when the character is, which
is what tells characters apart most (docs/persona_embedding.md, run 8). Macros ({{char}}, {{user}}) stay
as they are, so the prompt resolves them per chat; a cut never falls inside one.
"""
from __future__ import annotations

import dataclasses
import re

from .card import CharacterCard

_SENTENCE_END = re.compile(r"[.!?][\"')\]]*(?=\s)|[。！？][」』）\"']*")  # Latin ends need a space after; CJK ones don't


def summary_text(card: CharacterCard, tokenizer, max_tokens: int) -> str:
    """At most `max_tokens` tokens of the card's description, personality and scenario, cut as the module says."""
    if max_tokens < 1:
        raise ValueError(f"embedding.summary_tokens must be at least 1, got {max_tokens}")
    parts = [card.description, card.personality, card.scenario]
    text = " ".join(" ".join(p.split()) for p in parts if p.strip())

    def length(s: str) -> int:
        return len(tokenizer(s, add_special_tokens=False)["input_ids"])

    if length(text) <= max_tokens:
        return text
    head = tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"][:max_tokens])
    head = text[:len(head)] if text.startswith(head) else head.replace("\ufffd", "")  # a split character goes
    cut = _cut(head)
    while cut and length(cut) > max_tokens:  # re-tokenising a prefix can cost a token more
        cut = _cut(cut[:-1])
    return cut


def _cut(head: str) -> str:
    """`head` cut at its last sentence end in its second half, else at its last space in its second half, else
    as it is (text without spaces); never inside a {{macro}}."""
    ends = [m.end() for m in _SENTENCE_END.finditer(head + " ")]
    if ends and ends[-1] >= len(head) // 2:
        head = head[:ends[-1]]
    elif head.rfind(" ") >= len(head) // 2:
        head = head[:head.rfind(" ")]
    opened = head.rfind("{{")
    if opened > head.rfind("}}"):
        head = head[:opened]
    return head.rstrip()


def summary_card(card: CharacterCard, tokenizer, max_tokens: int) -> CharacterCard:
    """`card` as `conditioning: summary` shows it: the summary as its description and no other prompt text.

    The name, greetings and everything not sent to the LM stay; the system prompt, personality, scenario,
    example dialogue and post-history instructions go (they are card text the summary stands in for).
    """
    return dataclasses.replace(card, description=summary_text(card, tokenizer, max_tokens), personality="",
                               scenario="", mes_example="", system_prompt="", post_history_instructions="")
