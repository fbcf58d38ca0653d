"""Where data/ and its hand-written sources live, and how the sources are read: components, personas, user turns.

Hands plain dicts and lists to compose.py (procedural personas), splits.py (turns) and cli.py.
"""
from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "data"
SOURCES = DATA / "sources"


def read_source(name: str) -> dict:
    """data/sources/<name> as a mapping; a missing or malformed file is an error naming it."""
    path = SOURCES / name
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise SystemExit(f"{path}: cannot read the source file: {e}") from None
    if not isinstance(tree, dict):
        raise SystemExit(f"{path}: expected a mapping at the top")
    return tree


def load_components() -> dict:
    """sources/components.yaml: the lists the 85 procedural personas of data/personas are composed from."""
    return read_source("components.yaml")


def load_handwritten() -> list[dict]:
    """The hand-written personas of sources/handwritten_personas.yaml, marked `origin: hand-written`."""
    return [{**p, "origin": "hand-written"} for p in read_source("handwritten_personas.yaml")["personas"]]


def load_turns() -> tuple[list[dict], list[str]]:
    """(user turns as {id, kind, text}, adversarial turns) from sources/user_turns.txt, in file order."""
    turns, adversarial, kind = [], [], None
    for line in (SOURCES / "user_turns.txt").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line.startswith("## "):
            kind = line[3:].strip()
        elif line and not line.startswith("#"):
            if kind == "adversarial":
                adversarial.append(line)
            else:
                turns.append({"id": len(turns), "kind": kind, "text": line})
    return turns, adversarial


def load_scaled_components() -> dict:
    """components.yaml with components_scaled.yaml merged in: new eras, archetypes, styles, prompt kinds; lists and name pools appended.

    Every style must then answer every dialogue kind and every era must have a child role; either gap is
    an error naming the style or era.
    """
    comp, extra = load_components(), read_source("components_scaled.yaml")
    where = SOURCES / "components_scaled.yaml"
    for key in ("eras", "archetypes", "speech_styles", "user_prompts"):
        clash = sorted(set(comp[key]) & set(extra.get(key, {})))
        if clash:
            raise SystemExit(f"{where}: {key}.{clash[0]} is already in components.yaml")
        comp[key] = {**comp[key], **extra.get(key, {})}
    for key in ("quirks", "child_roles", "robot_names"):
        comp[key] = comp[key] + extra.get(key, [])
    for era, pools in extra.get("era_names", {}).items():
        if era not in comp["eras"]:
            raise SystemExit(f"{where}: era_names.{era} is not an era")
        e = comp["eras"][era]
        comp["eras"][era] = {**e, "names": {g: e["names"][g] + pools.get(g, []) for g in e["names"]},
                             "surnames": e["surnames"] + pools.get("surnames", [])}
    for style, replies in extra.get("style_replies", {}).items():
        if style not in comp["speech_styles"]:
            raise SystemExit(f"{where}: style_replies.{style} is not a speech style")
        comp["speech_styles"][style] = {**comp["speech_styles"][style],
                                        "replies": {**comp["speech_styles"][style]["replies"], **replies}}
    for style, s in comp["speech_styles"].items():
        missing = sorted(set(comp["user_prompts"]) - set(s["replies"]))
        if missing:
            raise SystemExit(f"{where}: speech style {style} has no reply for the dialogue kind {missing[0]!r}")
    for era in comp["eras"]:
        if not any(era in r["eras"] for r in comp["child_roles"]):
            raise SystemExit(f"{where}: no child_roles entry lists the era {era!r}")
    return comp
