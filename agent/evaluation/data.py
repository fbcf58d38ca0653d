"""Reads the evaluation data (data/README.md layout): held-out personas, held-out and adversarial user turns, reference lines.

Only what splits.yaml holds out is read, so nothing here can leak training data into the scores.
Hands an `EvalData` to the metrics.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path


from ..persona.store import Persona, load_persona
from ..config import read_yaml_mapping


@dataclass(frozen=True)
class ReferenceLine:
    to: str  # the user turn the line answers
    text: str  # the persona's hand-written reply


@dataclass(frozen=True)
class EvalData:
    personas: tuple[Persona, ...]  # held-out personas, in splits.yaml order
    turns: tuple[str, ...]  # held-out user turns (user_turns.yaml `turns`, ids from splits.yaml), in id order
    adversarial: tuple[str, ...]  # adversarial turns (eval only), in id order
    references: dict  # persona slug -> tuple[ReferenceLine, ...]

    def sample_turns(self, n: int, seed: int | str) -> list[str]:
        """n held-out turns, sampled without replacement (with it once n exceeds the pool), repeatably."""
        rng = random.Random(f"turns-{seed}")
        if n <= len(self.turns):
            return rng.sample(list(self.turns), n)
        return [rng.choice(self.turns) for _ in range(n)]


def _key(tree: dict, path: Path, *keys: str):
    node = tree
    for i, key in enumerate(keys):
        if not isinstance(node, dict) or key not in node:
            raise ValueError(f"{path}: missing key {'.'.join(keys[:i + 1])!r}")
        node = node[key]
    return node


def load_eval_data(folder: Path, *, personas: int = 0, reference_lines: int = 0, seed: int = 0) -> EvalData:
    """The held-out part of `folder`; `personas` > 0 keeps a seeded sample of that many (in splits order).

    reference_lines > 0 keeps each persona's first that-many lines. Raises ConfigError (missing or malformed file) or
    ValueError naming the file when something is missing.
    """
    folder = Path(folder)
    splits_file, turns_file, refs_file = (folder / name for name in
                                          ("splits.yaml", "user_turns.yaml", "reference_lines.yaml"))
    splits, pool, refs = (read_yaml_mapping(f, "evaluation data") for f in (splits_file, turns_file, refs_file))
    slugs = list(_key(splits, splits_file, "personas", "held_out"))
    if personas:
        if personas > len(slugs):
            raise ValueError(f"eval.personas is {personas}, but {splits_file} holds out only {len(slugs)}")
        chosen = set(random.Random(f"personas-{seed}").sample(slugs, personas))
        slugs = [slug for slug in slugs if slug in chosen]
    held_turns = set(_key(splits, splits_file, "user_turns", "held_out"))
    turns = tuple(t["text"] for t in sorted(_key(pool, turns_file, "turns"), key=lambda t: t["id"])
                  if t["id"] in held_turns)
    adversarial = tuple(t["text"] for t in sorted(pool.get("adversarial") or [], key=lambda t: t["id"]))
    if not turns:
        raise ValueError(f"{turns_file}: none of the held-out turn ids in {splits_file} is in the pool")
    references = {}
    for slug in slugs:
        entry = _key(refs, refs_file, "personas", slug)
        lines = tuple(ReferenceLine(str(line["to"]), str(line["text"])) for line in entry["lines"])
        if not lines:
            raise ValueError(f"{refs_file}: held-out persona {slug!r} has no reference lines")
        references[slug] = lines[:reference_lines] if reference_lines else lines
    loaded = tuple(load_persona(folder / "personas" / slug) for slug in slugs)
    return EvalData(personas=loaded, turns=turns, adversarial=adversarial, references=references)
