"""user_turns.yaml and splits.yaml: numbers the hand-written user turns and picks the held-out personas and turns."""
from __future__ import annotations

import math
import random
from collections import Counter
from pathlib import Path

from .cards import HEADER, write_yaml

SPLIT_SEED = 515  # picks the held-out personas and user turns
HELD_OUT_HANDWRITTEN = 6
HELD_OUT_PROCEDURAL = 12
HELD_OUT_TURN_FRACTION = 0.2  # per kind, rounded up

def write_turns(data: Path, turns: list[dict], adversarial: list[str]):
    """data/user_turns.yaml: the turn pool with ids and kinds, then the adversarial (eval-only) turns."""
    kinds = Counter(t["kind"] for t in turns)
    tree = {"count": len(turns), "kinds": dict(kinds), "turns": [{"id": t["id"], "kind": t["kind"], "text": t["text"]} for t in turns],
            "adversarial_count": len(adversarial),
            "adversarial": [{"id": i, "text": t} for i, t in enumerate(adversarial)]}
    write_yaml(data / "user_turns.yaml", tree,
               f"{HEADER} from data/sources/user_turns.txt (hand-written, CC0).\n"
               "# `turns`: the pool of user turns; `adversarial`: eval-only turns for the break-rate test.\n"
               "# Which turn ids are held out is in splits.yaml.\n")


def make_splits(personas: list[dict], turns: list[dict], adversarial: list[str]) -> dict:
    """Held-out personas (some hand-written, some procedural) and ⌈20%⌉ of each kind of user turn, by SPLIT_SEED."""
    rng = random.Random(SPLIT_SEED)
    hand = sorted(p["slug"] for p in personas if p["origin"] == "hand-written")
    proc = sorted(p["slug"] for p in personas if p["origin"] == "procedural")
    held = sorted(rng.sample(hand, HELD_OUT_HANDWRITTEN) + rng.sample(proc, HELD_OUT_PROCEDURAL))
    held_turns = []
    for kind in dict.fromkeys(t["kind"] for t in turns):
        ids = [t["id"] for t in turns if t["kind"] == kind]
        held_turns += rng.sample(ids, math.ceil(len(ids) * HELD_OUT_TURN_FRACTION))
    held_turns.sort()
    all_slugs = sorted(p["slug"] for p in personas)
    return {
        "seed": SPLIT_SEED,
        "personas": {"train": [s for s in all_slugs if s not in held], "held_out": held},
        "user_turns": {"train": [t["id"] for t in turns if t["id"] not in set(held_turns)], "held_out": held_turns},
        "adversarial_turns": {"eval_only": list(range(len(adversarial)))},
    }


def write_splits(data: Path, splits: dict, personas: list[dict]):
    by = {p["slug"]: p for p in personas}
    held = splits["personas"]["held_out"]
    head = (f"{HEADER} (random.Random({SPLIT_SEED})).\n"
            f"# Held-out personas ({len(held)}: {sum(by[s]['origin'] == 'hand-written' for s in held)} hand-written, "
            f"{sum(by[s]['origin'] == 'procedural' for s in held)} procedural) and held-out user turns (ids in\n"
            "# user_turns.yaml, at least 20% of each kind) are never trained on. Adversarial turns are eval-only.\n")
    write_yaml(data / "splits.yaml", splits, head)
