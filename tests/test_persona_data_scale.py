"""scripts/persona_data/scale.py (with lines.py and augment.py): the scaled training set never touches held-out or
validation data, its target lines are not in the card they are held back from, and it is repeatable.

The scaled personas are composed in memory (2,000 in a few seconds); only the prefix test writes files.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from scripts.persona_data import augment
from scripts.persona_data.compose import Composer, name_words
from scripts.persona_data.dataset import all_personas
from scripts.persona_data.scale import VAL_PERSONAS, ScaleConfig, augmented, compose_scaled, protected, write_scaled
from scripts.persona_data.sources import load_components, load_scaled_components

DATA = Path(__file__).resolve().parents[1] / "data"
CARD = ("description", "personality", "scenario", "first_mes", "mes_example", "post_history_instructions")


@pytest.fixture(scope="module")
def comp() -> dict:
    return load_scaled_components()


@pytest.fixture(scope="module")
def guard():
    return protected()


@pytest.fixture(scope="module")
def scaled(comp, guard) -> list[dict]:
    return compose_scaled(ScaleConfig(count=2000, media="none"), comp, guard)


@pytest.fixture(scope="module")
def guarded() -> list[dict]:
    """The held-out and validation personas of data/personas."""
    splits = yaml.safe_load((DATA / "splits.yaml").read_text(encoding="utf-8"))
    slugs = set(splits["personas"]["held_out"]) | set(splits["personas"]["train"][-VAL_PERSONAS:])
    assert len(slugs) == 30
    return [p for p in all_personas() if p["slug"] in slugs]


def everything(p: dict) -> str:
    return "\n".join([p["name"], p["voice_line"], *(p[k] for k in CARD), *(x["text"] for x in p["lines"]),
                      *(x["to"] for x in p["lines"])])


def test_more_archetypes_styles_eras_and_quirks_than_components_yaml(comp, scaled):
    old = load_components()
    for key in ("eras", "archetypes", "speech_styles", "quirks", "user_prompts"):
        assert len(comp[key]) > len(old[key]), key
    for key, part in (("era", "eras"), ("speech_style", "speech_styles"), ("archetype", "archetypes")):
        assert {p["composition"][key] for p in scaled} == set(comp[part]), key


def test_names_are_unique_and_share_no_word_with_any_data_persona(scaled, guard):
    assert len({p["slug"] for p in scaled}) == len({p["name"] for p in scaled}) == 2000
    for p in scaled:
        assert not set(name_words(p["name"])) & guard.name_words, p["name"]


def test_no_held_out_or_validation_persona_appears(scaled, guarded):
    words = set(re.findall(r"\b[A-Z][a-z]{3,}\b", "\n".join(everything(p) for p in scaled)))
    for g in guarded:
        for word in re.findall(r"[A-Z][a-z]{3,}", g["name"]):  # names, not titles like "Dr."
            assert word not in words, (g["name"], word)
    signatures = {tuple(g["composition"][k] for k in ("era", "place", "role", "archetype", "speech_style", "quirk"))
                  for g in guarded if "composition" in g}
    assert signatures
    for p in scaled:
        c = p["composition"]
        assert (c["era"], c["place"], c["role"], c["archetype"], c["speech_style"], c["quirk"]) not in signatures


def test_no_reference_line_or_held_out_user_turn_appears(scaled, guarded):
    text = "\n".join(everything(p) for p in scaled)
    refs = yaml.safe_load((DATA / "reference_lines.yaml").read_text(encoding="utf-8"))["personas"]
    lines = [x["text"] for entry in refs.values() for x in entry["lines"]]
    assert len(lines) >= 100
    train_cards = "\n".join(p[k] for p in all_personas() if p not in guarded for k in CARD)
    for line in lines:
        assert line not in text
        for sentence in re.split(r"(?<=[.!?])\s+", line):  # only the shared style templates of train cards
            assert len(sentence.split()) < 5 or sentence not in text or sentence in train_cards, sentence
    splits = yaml.safe_load((DATA / "splits.yaml").read_text(encoding="utf-8"))
    turns = yaml.safe_load((DATA / "user_turns.yaml").read_text(encoding="utf-8"))["turns"]
    held = [t["text"] for t in turns if t["id"] in set(splits["user_turns"]["held_out"])]
    users = {x["to"] for p in scaled for x in p["lines"]} | set(re.findall(r"\{\{user\}\}: (.*)", text))
    for turn in held:
        assert turn not in users
        assert len(turn.split()) < 3 or turn not in text, turn


def test_a_held_out_user_turn_among_the_prompts_is_refused(comp, guard):
    turn = sorted(guard.held_out_turns)[0]
    bad = {**comp, "user_prompts": {**comp["user_prompts"], "intro": [turn]}}
    with pytest.raises(SystemExit, match="held-out user turn"):
        compose_scaled(ScaleConfig(count=5), bad, guard)


def test_lines_marked_none_are_in_no_card_field_and_the_others_in_theirs(scaled):
    kinds = set()
    for p in scaled[:500]:
        assert len(p["lines"]) >= 9
        for x in p["lines"]:
            kinds.add(x["kind"])
            if x["field"] == "none":
                assert not any(x["text"] in p[k] for k in CARD), x
            else:
                assert x["text"] in p[x["field"]], x
        assert sum(x["field"] == "none" for x in p["lines"]) >= 5
    assert {"greeting", "voice", "past", "farewell", "intro", "opinion"} <= kinds


def test_augmented_copies_are_repeatable_and_do_what_they_say(comp, guard, scaled):
    config = ScaleConfig(count=30, rename=1, shuffle=1, drop=1, augment_seed=3)
    bases = scaled[:30]

    def copies():
        namer = Composer(comp, {p["name"] for p in bases}, {p["slug"] for p in bases}, unique_first=False,
                         reserved_words=guard.name_words)
        return augmented(config, bases, namer)

    first = copies()
    assert first == copies() and len(first) == 90
    by = {p["slug"]: p for p in bases}
    for q in first:
        base = by[q["group"]]
        if q["augmentation"] == "rename":
            old = base["parts"]["fields"]["name"]
            assert q["name"] != base["name"] and not set(name_words(q["name"])) & guard.name_words
            assert not re.search(rf"\b{re.escape(old)}\b", everything(q)), (old, q["name"])
            assert q["description"] == base["description"].replace(base["name"], q["name"]).replace(old, q["parts"]["fields"]["name"])
        elif q["augmentation"] == "shuffle":
            for key in augment.SHUFFLED:
                assert sorted(augment.sentences(q[key])) == sorted(augment.sentences(base[key]))
            assert q["description"] != base["description"]
        else:
            field = q["augmentation"].split()[1]
            assert q[field] == "" and base[field]
            assert all(x["field"] != field for x in q["lines"])
    assert first[0]["slug"] != bases[0]["slug"]


def test_scale_config_refuses_bad_values_naming_the_flag():
    with pytest.raises(ValueError, match="--scale"):
        ScaleConfig(count=0)
    with pytest.raises(ValueError, match="--media"):
        ScaleConfig(media="video")
    with pytest.raises(ValueError, match="--drop"):
        ScaleConfig(drop=-1)


def test_a_small_run_is_a_prefix_of_the_committed_scaled_manifest(tmp_path):
    committed = yaml.safe_load((DATA / "scaled" / "manifest.yaml").read_text(encoding="utf-8"))
    assert committed["config"]["count"] >= 1500 and committed["counts"]["personas"] == committed["config"]["count"]
    written = write_scaled(ScaleConfig(count=25, media=committed["config"]["media"]), tmp_path)
    assert len(written) == 25
    mine = yaml.safe_load((tmp_path / "manifest.yaml").read_text(encoding="utf-8"))["personas"]
    assert mine == committed["personas"][:25]
