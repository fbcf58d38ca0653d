"""scripts/persona_data, the package behind scripts/make_training_data.py: it rebuilds the committed data/ byte for byte.

The cards, user_turns.yaml and splits.yaml are regenerated into a temporary folder and compared with the
sha256 prefixes in data/manifest.yaml and with the committed files; the 120 portraits too (a few seconds).
Voices need sox and Piper and take minutes, so they are not rebuilt here.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from scripts.persona_data.dataset import all_personas, write_portraits, write_text
from scripts.persona_data.manifest import sha

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture(scope="module")
def manifest() -> dict:
    return {e["slug"]: e for e in yaml.safe_load((DATA / "manifest.yaml").read_text(encoding="utf-8"))["personas"]}


@pytest.fixture(scope="module")
def personas() -> list[dict]:
    return all_personas()


def test_the_same_personas_as_the_manifest(personas, manifest):
    assert [p["slug"] for p in personas] == list(manifest)
    assert sum(p["origin"] == "procedural" for p in personas) == 85


def test_text_is_rebuilt_byte_for_byte(tmp_path, personas, manifest):
    write_text(tmp_path, personas)
    for slug, entry in manifest.items():
        assert sha(tmp_path / "personas" / slug / "persona.yaml") == entry["card_sha256"], slug
    for name in ("user_turns.yaml", "splits.yaml"):
        assert (tmp_path / name).read_bytes() == (DATA / name).read_bytes(), name


def test_portraits_are_redrawn_byte_for_byte(tmp_path, personas, manifest):
    write_portraits(tmp_path, personas)
    for slug, entry in manifest.items():
        assert sha(tmp_path / slug / "portrait.png") == entry["portrait"]["sha256"], slug
