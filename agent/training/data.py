"""The distillation data set: train personas and train user turns from data/, and the (persona, turn) pairs drawn.

Reads data/splits.yaml so held-out personas and turns never reach training; hands `Example`s and the
conversation each one is prompted with to the teacher and the student. The scaled set (data/scaled,
`scripts/make_training_data.py --scale N`) streams as `ScaledPersona`s: the card shown to the model and
the persona's lines that card does not contain, as targets.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator


from ..chat.prompt import Message, greeting
from ..persona.card import CharacterCard
from ..persona.store import Persona, load_persona
from ..config import read_yaml_mapping

HELD_BACK = ("first_mes", "mes_example")  # card fields whose lines are targets, not shown, by default
SHOWN_FIELDS = ("description", "personality", "scenario", "first_mes", "mes_example", "system_prompt",
                "post_history_instructions")


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


@dataclass(frozen=True)
class TargetLine:
    kind: str  # greeting, voice, or the dialogue kind it answers (intro, help, danger, want, work, ...)
    to: str  # the user line it answers (a greeting's and a voice line's: "Hello.")
    text: str  # the persona's line, macros as in the card


@dataclass(frozen=True)
class ScaledPersona:
    slug: str
    group: str  # the slug of the persona it was copied from (itself if not a copy): copies share a group
    persona: Persona  # the folder as load_persona reads it: the full card, the portrait when one was drawn
    card: CharacterCard  # the card shown to the model: the held-back fields emptied
    lines: tuple[TargetLine, ...]  # targets: the persona's lines the shown card does not contain


def iter_scaled(folder: str | Path, *, hold_back: tuple[str, ...] = HELD_BACK) -> Iterator[ScaledPersona]:
    """The scaled set's personas one at a time, in manifest.yaml order.

    hold_back: the card fields (of HELD_BACK) emptied from the shown card, their lines becoming targets;
    lines in no card field are always targets. A target the shown card still contains is an error.
    """
    root = Path(folder)
    unknown = sorted(set(hold_back) - set(HELD_BACK))
    if unknown:
        raise ValueError(f"hold_back: {unknown[0]!r} is not one of {', '.join(HELD_BACK)}")
    manifest = read_yaml_mapping(root / "manifest.yaml", "scaled training data")
    try:
        slugs = [str(entry["slug"]) for entry in manifest["personas"]]
    except (KeyError, TypeError) as e:
        raise ValueError(f"{root / 'manifest.yaml'}: lacks personas[].slug ({e}); rebuild it with "
                         "scripts/make_training_data.py --scale N") from None
    for slug in slugs:
        yield _scaled_persona(root / slug, hold_back)


def load_scaled(folder: str | Path, *, hold_back: tuple[str, ...] = HELD_BACK, limit: int = 0) -> list[ScaledPersona]:
    """The first `limit` (0: all) personas of the scaled set; see iter_scaled."""
    out = []
    for item in iter_scaled(folder, hold_back=hold_back):
        out.append(item)
        if len(out) == limit:
            break
    return out


def _scaled_persona(folder: Path, hold_back: tuple[str, ...]) -> ScaledPersona:
    persona = load_persona(folder)
    where = folder / "lines.yaml"
    tree = read_yaml_mapping(where, "scaled training data")
    card = replace(persona.card, **{key: "" for key in hold_back})
    shown = "\n".join(getattr(card, key) for key in SHOWN_FIELDS)
    try:
        lines = tuple(TargetLine(str(x["kind"]), str(x["to"]), str(x["text"])) for x in tree["lines"]
                      if x["field"] in hold_back or x["field"] == "none")
        group = str(tree["group"])
    except (KeyError, TypeError) as e:
        raise ValueError(f"{where}: lacks {e} (each line needs kind, to, text, field)") from None
    for line in lines:
        if line.text in shown:
            raise ValueError(f"{where}: the target line {line.text[:60]!r} is in the card shown to the model")
    return ScaledPersona(folder.name, group, persona, card, lines)
