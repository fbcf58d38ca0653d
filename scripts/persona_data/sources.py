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
