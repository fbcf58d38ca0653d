"""The distillation data set: train personas and train user turns from data/, and the (persona, turn) pairs drawn.

Reads data/splits.yaml so held-out personas and turns never reach training; hands `Example`s and the
conversation each one is prompted with to the teacher and the student.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path


from ..chat.prompt import Message, greeting
from ..persona.card import CharacterCard
from ..persona.store import Persona, load_persona
from ..config import read_yaml_mapping


@dataclass(frozen=True)
class Example:
    persona: str  # train persona slug
    turn_id: int  # id in user_turns.yaml
    turn: str  # the user turn's text


@dataclass(frozen=True)
class TrainingData:
    personas: dict[str, Persona]  # train personas by slug, in splits.yaml order
    turns: dict[int, str]  # train user turns by id
    files: tuple[Path, ...]  # every file the teacher's replies depend on (for cache keys)


def _read_splits(root: Path) -> tuple[dict, dict[int, str]]:
    """(splits.yaml, {turn id: text}) after checking that train and held-out never overlap."""
    splits = read_yaml_mapping(root / "splits.yaml", "training data")
    pool = read_yaml_mapping(root / "user_turns.yaml", "training data")
    try:
        train, held_out = set(splits["personas"]["train"]), set(splits["personas"]["held_out"])
        train_turns, held_turns = set(splits["user_turns"]["train"]), set(splits["user_turns"]["held_out"])
        texts = {int(t["id"]): str(t["text"]) for t in pool["turns"]}
    except (KeyError, TypeError) as e:
        raise ValueError(f"{root}: splits.yaml or user_turns.yaml lacks {e} (see data/README.md)") from None
    overlap = sorted(train & held_out) or sorted(train_turns & held_turns)
    if overlap:
        raise ValueError(f"{root / 'splits.yaml'}: {overlap[0]!r} is both train and held-out")
    missing = sorted(train_turns - set(texts))
    if missing:
        raise ValueError(f"{root / 'splits.yaml'}: train user turn {missing[0]} is not in user_turns.yaml")
    if not train_turns:
        raise ValueError(f"{root / 'splits.yaml'}: no train user turns")
    return splits, {i: texts[i] for i in sorted(train_turns)}


def load_train_turns(data_dir: str | Path) -> tuple[dict[int, str], tuple[Path, ...]]:
    """The train user turns by id, and the files they come from."""
    root = Path(data_dir)
    return _read_splits(root)[1], (root / "splits.yaml", root / "user_turns.yaml")


def load_training_data(data_dir: str | Path, *, max_personas: int = 0) -> TrainingData:
    """Train personas (the first `max_personas`, 0 = all) and train turns; refuses a split that overlaps."""
    root = Path(data_dir)
    splits, turns = _read_splits(root)
    train = list(splits["personas"]["train"])[:max_personas or None]
    if not train:
        raise ValueError(f"{root / 'splits.yaml'}: no train personas")
    personas = {slug: load_persona(root / "personas" / slug) for slug in train}
    files = (root / "splits.yaml", root / "user_turns.yaml", *(p.folder / "persona.yaml" for p in personas.values()))
    return TrainingData(personas, turns, files)


def draw_examples(data: TrainingData, per_persona: int, seed: int) -> list[Example]:
    """`per_persona` distinct train turns for each persona, persona by persona; the same seed draws the same."""
    return [example for slug in data.personas for example in draw_turns(slug, data.turns, per_persona, seed)]


def draw_turns(slug: str, turns: dict[int, str], n: int, seed: int) -> list[Example]:
    """`n` distinct turns for one persona, in id order; depends only on (seed, slug), not on the other personas."""
    ids = sorted(turns)
    if n > len(ids):
        raise ValueError(f"{n} examples per persona asked for, but there are only {len(ids)} train user turns")
    rng = random.Random(f"{seed}/{slug}")  # str seeds hash with sha512: stable across runs and machines
    return [Example(slug, i, turns[i]) for i in sorted(rng.sample(ids, n))]


def conversation(card: CharacterCard, turn: str, user: str, *, with_greeting: bool) -> list[Message]:
    """The history one example is prompted with: optionally the greeting, then the user turn."""
    first = greeting(card, user) if with_greeting else ""
    return ([Message("assistant", first)] if first else []) + [Message("user", turn)]
