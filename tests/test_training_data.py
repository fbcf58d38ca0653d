"""agent/training/data.py's scaled-set loader: load_scaled / iter_scaled over a set written by
scripts/make_training_data.py --scale (scripts/persona_data/scale.py), small enough to write in seconds."""
from __future__ import annotations

import types

import pytest
import yaml

from agent.training.data import HELD_BACK, SHOWN_FIELDS, iter_scaled, load_scaled
from scripts.persona_data.scale import ScaleConfig, write_scaled


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("scaled")
    write_scaled(ScaleConfig(count=12, media="portraits", rename=1, drop=1, augment_seed=5), out)
    return out


def shown_text(card) -> str:
    return "\n".join(getattr(card, key) for key in SHOWN_FIELDS)


def test_every_persona_loads_with_its_held_back_lines_as_targets(folder):
    items = load_scaled(folder)
    assert len(items) == 36  # 12 personas, a renamed and a dropped copy of each
    for item in items:
        assert item.card.first_mes == "" and item.card.mes_example == ""
        assert item.persona.card.description == item.card.description  # the rest of the card is shown
        assert item.persona.portrait is not None and item.persona.portrait.name == "portrait.png"
        kinds = [line.kind for line in item.lines]
        assert "greeting" in kinds and len(item.lines) >= 9
        if item.persona.card.first_mes:  # a greeting held back is a target, as it reads in the full card
            assert item.persona.card.first_mes.strip() in [line.text for line in item.lines]
        for line in item.lines:
            assert line.text not in shown_text(item.card) and line.to
    groups = {}
    for item in items:
        groups.setdefault(item.group, []).append(item.slug)
    assert len(groups) == 12 and all(len(v) == 3 and v[0] == g for g, v in groups.items())


def test_showing_the_whole_card_leaves_only_lines_in_no_field(folder):
    held = {item.slug: item for item in load_scaled(folder)}
    for item in load_scaled(folder, hold_back=()):
        assert item.card == item.persona.card
        assert 0 < len(item.lines) < len(held[item.slug].lines)
        assert all(line.text not in shown_text(item.card) for line in item.lines)


def test_the_loader_streams_and_stops_at_the_limit(folder):
    stream = iter_scaled(folder)
    assert isinstance(stream, types.GeneratorType)
    first = next(stream)
    assert [x.slug for x in load_scaled(folder, limit=5)][0] == first.slug
    assert len(load_scaled(folder, limit=5)) == 5


def test_a_target_line_left_in_the_shown_card_is_refused_naming_the_file(folder, tmp_path):
    import shutil
    copy = tmp_path / "scaled"
    shutil.copytree(folder, copy)
    slug = yaml.safe_load((copy / "manifest.yaml").read_text())["personas"][0]["slug"]
    path = copy / slug / "lines.yaml"
    tree = yaml.safe_load(path.read_text())
    description = yaml.safe_load((copy / slug / "persona.yaml").read_text())["description"]
    tree["lines"].append({"kind": "intro", "to": "Hi.", "text": description.split(".")[0], "field": "none"})
    path.write_text(yaml.safe_dump(tree))
    with pytest.raises(ValueError, match=f"{slug}/lines.yaml"):
        load_scaled(copy)


def test_an_unknown_held_back_field_is_refused_naming_it(folder):
    with pytest.raises(ValueError, match="'description'"):
        load_scaled(folder, hold_back=("description",))
    assert set(HELD_BACK) == {"first_mes", "mes_example"}
