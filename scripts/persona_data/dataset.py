"""The persona data set of data/: the hand-written and procedural personas, and writing their text, portraits and voices.

cli.py calls these in order; scale.py reuses write_portraits and write_voices for the scaled set.
"""
from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

from .cards import HEADER, write_card
from .compose import compose_procedural
from .portraits import draw_portrait, portrait_seed, save_portrait
from .sources import load_components, load_handwritten, load_turns
from .splits import make_splits, write_splits, write_turns
from .voices import Voices


def all_personas() -> list[dict]:
    """The hand-written personas, then the procedural ones (names and slugs distinct from the hand-written)."""
    hand = load_handwritten()
    taken_names = {p["name"] for p in hand} | {p["name"].split()[0] for p in hand}
    personas = hand + compose_procedural(load_components(), taken_names, {p["slug"] for p in hand})
    slugs = [p["slug"] for p in personas]
    if len(set(slugs)) != len(slugs):
        raise SystemExit("duplicate persona slugs: check sources/handwritten_personas.yaml")
    return personas


def write_text(data: Path, personas: list[dict]) -> dict:
    """Every persona.yaml, user_turns.yaml and splits.yaml under `data`; drops folders of personas gone. Returns the splits."""
    folders = data / "personas"
    folders.mkdir(parents=True, exist_ok=True)
    slugs = {p["slug"] for p in personas}
    for folder in folders.iterdir():  # drop folders this script made for personas that no longer exist
        card = folder / "persona.yaml"
        if folder.is_dir() and folder.name not in slugs and card.is_file() and card.read_text(encoding="utf-8").startswith(HEADER):
            shutil.rmtree(folder)
    for p in personas:
        write_card(p, folders / p["slug"])
    turns, adversarial = load_turns()
    write_turns(data, turns, adversarial)
    splits = make_splits(personas, turns, adversarial)
    write_splits(data, splits, personas)
    return splits


def write_portraits(folders: Path, personas: list[dict], *, every: int = 0) -> None:
    """folders/<slug>/portrait.png for each persona; a progress line every `every` portraits (0: none)."""
    t = time.time()
    for i, p in enumerate(personas, 1):
        (folders / p["slug"]).mkdir(parents=True, exist_ok=True)
        save_portrait(draw_portrait(p["look"], portrait_seed(p["slug"])), folders / p["slug"] / "portrait.png")
        if every and i % every == 0:
            print(f"portraits: {i}/{len(personas)} in {time.time() - t:.1f} s", file=sys.stderr, flush=True)


def write_voices(folders: Path, personas: list[dict], *, every: int = 0) -> dict:
    """folders/<slug>/voice.wav for each persona; returns {slug: {speech_s, tempo}}. Exits naming lines too long."""
    voices = Voices()
    info, failed, t = {}, [], time.time()
    try:
        for i, p in enumerate(personas, 1):
            try:
                info[p["slug"]] = voices.make(p["voice_line"], p["tts"], folders / p["slug"] / "voice.wav")
            except ValueError as e:
                failed.append(str(e))
            if every and i % every == 0:
                print(f"voices: {i}/{len(personas)} in {time.time() - t:.1f} s", file=sys.stderr, flush=True)
    finally:
        voices.close()
    if failed:
        raise SystemExit("voice lines too long:\n  " + "\n  ".join(failed))
    return info
