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


def test_check_passes_on_data_and_names_what_is_broken_in_a_copy(tmp_path, capsys):
    import shutil

    from scripts.persona_data.check import check
    assert check(DATA) == []
    copy = tmp_path / "data"
    shutil.copytree(DATA, copy, ignore=shutil.ignore_patterns("scaled"))
    (copy / "personas" / "kay" / "voice.wav").unlink()
    refs = yaml.safe_load((copy / "reference_lines.yaml").read_text(encoding="utf-8"))
    del refs["personas"]["quill"]
    (copy / "reference_lines.yaml").write_text(yaml.safe_dump(refs), encoding="utf-8")
    problems = check(copy)
    assert len(problems) == 2 and problems[0].startswith("kay: ") and "voice_sample" in problems[0]
    assert problems[1] == "reference_lines.yaml: quill has 0 lines (needs 6)"
    assert "PROBLEM: kay" in capsys.readouterr().out
