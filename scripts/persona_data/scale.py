"""The scaled training set: thousands of procedural personas, each with held-back target lines, in a folder of its own.

Composed from components.yaml plus components_scaled.yaml with their own seed; never uses a name word of
a data/personas persona, never re-composes a held-out or validation persona, and never uses a held-out
user turn. Writes out/<slug>/persona.yaml (loads with load_persona), lines.yaml (the targets),
portrait.png (optional) and out/manifest.yaml (every file's sha256 prefix); agent.training.data.load_scaled
reads it. Persona i depends only on the seed and the personas before it, so a smaller N gives a prefix.
"""
from __future__ import annotations

import random
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass, fields
from pathlib import Path

import yaml

from . import augment
from .cards import HEADER, write_card, write_yaml
from .compose import Composer, name_words
from .dataset import all_personas, write_portraits, write_voices
from .lines import persona_lines
from .manifest import sha
from .sources import DATA, load_scaled_components

SCALE_SEED = 20261207  # composes the scaled personas
VAL_PERSONAS = 12  # the last train personas are the validation split (benchmarks/validation_identification.py)
MEDIA = ("none", "portraits", "voices")
PROGRESS_EVERY = 250


@dataclass(frozen=True)
class ScaleConfig:
    count: int = 2000  # scaled personas composed (augmented copies come on top)
    seed: int = SCALE_SEED  # composes them
    media: str = "portraits"  # "none" (text only), "portraits", or "voices" (portraits and voice samples)
    rename: int = 0  # renamed copies of each persona (a new name everywhere)
    shuffle: int = 0  # copies with the sentences of description and personality reordered
    drop: int = 0  # copies with one of personality, scenario, first_mes, mes_example emptied
    augment_seed: int = 0  # seeds renaming, shuffling and dropping

    def __post_init__(self):
        if self.count < 1:
            raise ValueError(f"--scale must be at least 1, not {self.count}")
        if self.media not in MEDIA:
            raise ValueError(f"--media must be one of {', '.join(MEDIA)}, not {self.media!r}")
        for key in ("rename", "shuffle", "drop"):
            if getattr(self, key) < 0:
                raise ValueError(f"--{key} must be 0 or more, not {getattr(self, key)}")

    @classmethod
    def from_args(cls, args) -> "ScaleConfig":
        given = {"count": args.scale, "seed": args.seed, "media": args.media, "rename": args.rename,
                 "shuffle": args.shuffle, "drop": args.drop, "augment_seed": args.augment_seed}
        return cls(**{k: v for k, v in given.items() if v is not None})


@dataclass(frozen=True)
class Protected:
    """What the scaled set must never touch, read from data/."""
    name_words: frozenset[str]  # every word of every data/personas name
    compositions: frozenset[tuple]  # (era, place, role, archetype, style, quirk) of held-out and validation personas
    held_out_turns: frozenset[str]  # held-out user turns, lower-cased


def signature(composition: dict) -> tuple:
    return tuple(composition[k] for k in ("era", "place", "role", "archetype", "speech_style", "quirk"))


def protected(data: Path = DATA) -> Protected:
    personas = all_personas()
    splits = yaml.safe_load((data / "splits.yaml").read_text(encoding="utf-8"))
    turns = yaml.safe_load((data / "user_turns.yaml").read_text(encoding="utf-8"))
    guarded = set(splits["personas"]["held_out"]) | set(splits["personas"]["train"][-VAL_PERSONAS:])
    held_turns = set(splits["user_turns"]["held_out"])
    return Protected(
        name_words=frozenset(w for p in personas for w in name_words(p["name"])),
        compositions=frozenset(signature(p["composition"]) for p in personas if p["slug"] in guarded and "composition" in p),
        held_out_turns=frozenset(t["text"].strip().lower() for t in turns["turns"] if t["id"] in held_turns))


def compose_scaled(config: ScaleConfig, comp: dict, guard: Protected) -> list[dict]:
    """`config.count` scaled personas, each with `lines`; skips any that would re-compose a guarded persona."""
    clash = sorted(u for prompts in comp["user_prompts"].values() for u in prompts if u.strip().lower() in guard.held_out_turns)
    if clash:
        raise SystemExit(f"user_prompts: {clash[0]!r} is a held-out user turn (data/splits.yaml); reword it")
    composer = Composer(comp, set(), set(), seed=config.seed, unique_first=False, reserved_words=guard.name_words)
    out = []
    while len(out) < config.count:
        p = composer.next()
        if signature(p["composition"]) in guard.compositions:
            continue
        p["group"], p["augmentation"] = p["slug"], "none"
        p["lines"] = persona_lines(p, comp, f"{config.seed}/{p['slug']}/lines")
        p["how"] = f"a scaled procedural training persona (data/sources/components*.yaml, seed {config.seed})"
        c = p["composition"]
        p["creator_notes"] = (f"Scaled training persona composed by scripts/make_training_data.py --scale (seed {config.seed}, "
                              f"persona #{c['index']}): era {c['era']}, archetype {c['archetype']}, speech style "
                              f"{c['speech_style']}, quirk #{c['quirk']}. Held-back target lines are in lines.yaml.")
        out.append(p)
    return out


def augmented(config: ScaleConfig, bases: list[dict], composer: Composer) -> list[dict]:
    """The renamed, shuffled and dropped copies of `bases`, in base order; each seeded by (seed, slug, kind, copy)."""
    out = []
    for p in bases:
        for k in range(1, config.rename + 1):
            rng = random.Random(f"{config.augment_seed}/{p['slug']}/rename/{k}")
            era = composer.comp["eras"][p["composition"]["era"]]
            first = p["parts"]["fields"]["name"]
            while first == p["parts"]["fields"]["name"]:  # a new first name too, or the name is still there
                first, full, slug = composer.draw_name(era, p["composition"]["gender"], p["parts"]["robot"], rng)
            out.append({**augment.rename(p, first, full, slug), "augmentation": "rename"})
        for k in range(1, config.shuffle + 1):
            rng = random.Random(f"{config.augment_seed}/{p['slug']}/shuffle/{k}")
            out.append({**augment.shuffle(p, rng, augment.copy_slug(p["slug"], "shuffle", k)), "augmentation": "shuffle"})
        for k in range(1, config.drop + 1):
            rng = random.Random(f"{config.augment_seed}/{p['slug']}/drop/{k}")
            q, field = augment.drop(p, rng, augment.copy_slug(p["slug"], "drop", k))
            out.append({**q, "augmentation": f"drop {field}"})
    return out


def lines_tree(p: dict) -> dict:
    return {"name": p["name"], "group": p["group"], "augmentation": p["augmentation"], "lines": p["lines"]}


def write_scaled(config: ScaleConfig, out: Path) -> list[dict]:
    """Composes the scaled set and writes it to `out` (progress on stderr); returns the personas written."""
    t0 = time.time()
    comp, guard = load_scaled_components(), protected()
    bases = compose_scaled(config, comp, guard)
    namer = Composer(comp, {p["name"] for p in bases}, {p["slug"] for p in bases}, unique_first=False,
                     reserved_words=guard.name_words)
    personas = bases + augmented(config, bases, namer)
    print(f"scaled: composed {len(bases)} personas and {len(personas) - len(bases)} copies in {time.time() - t0:.1f} s",
          file=sys.stderr, flush=True)
    out.mkdir(parents=True, exist_ok=True)
    _drop_stale(out, {p["slug"] for p in personas})
    files = {"none": {}, "portraits": {"portrait": "portrait.png"}}.get(config.media, None)
    t = time.time()
    for i, p in enumerate(personas, 1):
        if files is not None:
            p["files"] = files
        write_card(p, out / p["slug"])
        write_yaml(out / p["slug"] / "lines.yaml", lines_tree(p),
                   f"{HEADER} --scale: the lines {p['name']} says; `field` is the card field a line is in (none: no field).\n")
        if i % PROGRESS_EVERY == 0 or i == len(personas):
            rate = i / max(time.time() - t, 1e-9)
            print(f"scaled: text {i}/{len(personas)}, {time.time() - t:.1f} s, ~{(len(personas) - i) / rate:.0f} s left",
                  file=sys.stderr, flush=True)
    if config.media in ("portraits", "voices"):
        write_portraits(out, personas, every=PROGRESS_EVERY)
    if config.media == "voices":
        write_voices(out, personas, every=PROGRESS_EVERY // 5)
    write_scaled_manifest(out, config, personas)
    print(f"scaled: {len(personas)} personas in {out} in {time.time() - t0:.1f} s", file=sys.stderr, flush=True)
    return personas


def _drop_stale(out: Path, slugs: set[str]):
    """Removes folders a previous --scale run wrote for personas this run does not have."""
    for folder in out.iterdir():
        card = folder / "persona.yaml"
        if folder.is_dir() and folder.name not in slugs and card.is_file() and card.read_text(encoding="utf-8").startswith(HEADER):
            shutil.rmtree(folder)


def write_scaled_manifest(out: Path, config: ScaleConfig, personas: list[dict]):
    """out/manifest.yaml: the settings, counts by era/style/archetype/augmentation, and each file's sha256 prefix."""
    def count(key):
        return dict(sorted(Counter(p["composition"][key] for p in personas if p["augmentation"] == "none").items()))

    entries = []
    for p in personas:
        folder = out / p["slug"]
        entry = {"slug": p["slug"], "card": sha(folder / "persona.yaml"), "lines": sha(folder / "lines.yaml")}
        if (folder / "portrait.png").is_file() and config.media != "none":
            entry["portrait"] = sha(folder / "portrait.png")
        entries.append(entry)
    tree = {"config": {f.name: getattr(config, f.name) for f in fields(config)},
            "counts": {"personas": sum(p["augmentation"] == "none" for p in personas), "copies": len(personas) - config.count,
                       "lines": sum(len(p["lines"]) for p in personas),
                       "augmentation": dict(Counter(p["augmentation"].split()[0] for p in personas)),
                       "era": count("era"), "speech_style": count("speech_style"), "archetype": count("archetype")},
            "personas": entries}
    write_yaml(out / "manifest.yaml", tree, f"{HEADER} --scale: the scaled training set, its settings, counts and sha256 prefixes.\n")
