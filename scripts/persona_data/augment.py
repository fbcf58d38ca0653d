"""Augmented copies of a scaled persona: renamed (a new name everywhere), sentences shuffled, or one field dropped.

Each takes a persona dict with its `lines` and an RNG, and returns a new dict (the input is not changed);
scale.py seeds the RNG from (augment seed, slug, kind, copy) so every copy is repeatable on its own.
"""
from __future__ import annotations

import copy
import random
import re


TEXT_FIELDS = ("description", "personality", "scenario", "first_mes", "mes_example", "post_history_instructions", "voice_line")
SHUFFLED = ("description", "personality")  # prose fields whose sentences are reordered
DROPPABLE = ("personality", "scenario", "first_mes", "mes_example")


def _replace_name(text: str, old_full: str, old_first: str, new_full: str, new_first: str) -> str:
    text = text.replace(old_full, new_full)
    return re.sub(rf"\b{re.escape(old_first)}\b", new_first, text) if old_first != old_full else text


def rename(p: dict, first: str, full: str, slug: str) -> dict:
    """`p` with its name replaced by (first, full) in every card field, line and voice line."""
    old_full, old_first = p["name"], p["parts"]["fields"]["name"]
    q = copy.deepcopy(p)
    q.update({"name": full, "slug": slug})
    for key in TEXT_FIELDS:
        q[key] = _replace_name(q[key], old_full, old_first, full, first)
    for line in q["lines"]:
        line["text"] = _replace_name(line["text"], old_full, old_first, full, first)
    q["parts"]["fields"]["name"] = first
    return q


def sentences(text: str) -> list[str]:
    """Sentences of card prose (split after . ! ? and a space)."""
    return [s for s in re.split(r"(?<=[.!?])\s+", " ".join(text.split())) if s]


def shuffle(p: dict, rng: random.Random, slug: str) -> dict:
    """`p` with the sentences of its description and personality in a new order (never the old one when there are 2+)."""
    q = copy.deepcopy(p)
    q["slug"] = slug
    for key in SHUFFLED:
        parts = sentences(q[key])
        order = list(parts)
        while len(set(parts)) > 1 and order == parts:
            rng.shuffle(order)
        q[key] = " ".join(order)
    return q


def drop(p: dict, rng: random.Random, slug: str) -> tuple[dict, str]:
    """(`p` with one of DROPPABLE emptied, which one); lines that were in that field are then in no field."""
    field = rng.choice(DROPPABLE)
    q = copy.deepcopy(p)
    q.update({"slug": slug, field: ""})
    for line in q["lines"]:
        if line["field"] == field:
            line["field"] = "none"
    return q, field


def copy_slug(slug: str, kind: str, k: int) -> str:
    """The slug of the k-th (1-based) `kind` copy of `slug`: 'ada-lovell--shuffle-1'."""
    return f"{slug}--{kind}-{k}"
