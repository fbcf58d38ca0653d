"""The identification term of adapter training: card lines, candidates, the loss and its place in `train`."""
import dataclasses
import math

import pytest
import torch
import yaml

from agent.config import load_config
from agent.persona.card import CharacterCard
from agent.persona.store import load_persona
from agent.training import train, training_personas
from agent.training.contrast import GREETING_TURN, Contrast, card_lines, contrast_lines, draw_negatives
from agent.training.distill import pad_id

from conftest import TINY_CONFIG
from test_training import SMALL_FUSION, train_config, write_dataset


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    pass


EXAMPLES = """<START>
{{user}}: Where are we?
{{char}}: *She points.* South of the reef, {{user}}.
Mind the swell.
<START>
{{char}}: Sit. Be still.
{{user}}: Why?
{{char}}: Because {{char}} says so."""


def test_card_lines_are_the_greeting_and_each_example_reply_with_its_user_line():
    card = CharacterCard(name="Kalani", first_mes="Welcome aboard, {{user}}.", mes_example=EXAMPLES)
    assert card_lines(card, "Ana") == [
        (GREETING_TURN, "Welcome aboard, Ana."),
        ("Where are we?", "*She points.* South of the reef, Ana.\nMind the swell."),  # continuation line kept
        (GREETING_TURN, "Sit. Be still."),  # no user line before it in its block
        ("Why?", "Because Kalani says so."),
    ]
    assert card_lines(CharacterCard(name="Empty"), "Ana") == []


def test_negatives_are_other_personas_drawn_reproducibly():
    slugs = ["a", "b", "c", "d", "e"]
    first = draw_negatives(slugs, "c", 3, torch.Generator().manual_seed(1))
    assert len(first) == len(set(first)) == 3 and "c" not in first
    assert first == draw_negatives(slugs, "c", 3, torch.Generator().manual_seed(1))
    assert sorted(draw_negatives(slugs, "c", 9, torch.Generator().manual_seed(1))) == ["a", "b", "d", "e"]


@pytest.fixture()
def contrast_setup(tmp_path, tiny_llama):
    root = write_dataset(tmp_path / "data")
    personas = {slug: load_persona(root / "personas" / slug) for slug in ("mara", "hale", "pixel")}
    personas = {slug: dataclasses.replace(p, card=dataclasses.replace(p.card, mes_example=EXAMPLES))
                for slug, p in personas.items()}
    lines = contrast_lines(tiny_llama.tokenizer, personas, "User", max_tokens=6)
    contrast = Contrast(tiny_llama.tokenizer, personas, lines, user="User", k=2, budget=200, negatives=2,
                        pad=pad_id(tiny_llama.tokenizer))
    return contrast, personas


def test_contrast_lines_are_cut_and_every_candidate_reads_the_lines_own_prompt(contrast_setup, tiny_llama):
    contrast, personas = contrast_setup
    assert len(contrast.lines) == 3 * 4 and all(0 < len(line.ids) <= 6 for line in contrast.lines)
    prompt = contrast.prompt("mara", "Why?")
    assert sorted(i for i in prompt if i < 0) == [-2, -1]  # K=2 soft slots
    text = tiny_llama.tokenizer.decode([i for i in prompt if i >= 0])
    assert "Mara" in text and "few words" not in text  # the name, no card text
    candidates = contrast.candidates(contrast.lines[:2], torch.Generator().manual_seed(0))
    assert [c[0] for c in candidates] == ["mara", "mara"] and all(len(set(c)) == 3 for c in candidates)


def test_equal_soft_prompts_give_chance_and_the_loss_teaches_the_soft_prompts_apart(contrast_setup, tiny_llama):
    contrast, personas = contrast_setup
    model, d = tiny_llama.model, tiny_llama.model.config.hidden_size
    chosen = [line for line in contrast.lines if line.to == "Why?"]  # one line per persona
    candidates = contrast.candidates(chosen, torch.Generator().manual_seed(0))
    torch.manual_seed(0)  # `same` and the nudges below are the same whatever test ran before
    same = torch.randn(2, d)
    loss, parts = contrast.loss(model, chosen, candidates, {slug: same for slug in personas})
    assert loss.item() == pytest.approx(math.log(3), abs=1e-4)  # nothing tells the candidates apart

    soft = {slug: torch.nn.Parameter(same + 0.01 * torch.randn(2, d)) for slug in personas}
    optimizer = torch.optim.Adam(soft.values(), lr=0.05)
    first = None
    for _ in range(15):
        loss, _ = contrast.loss(model, chosen, candidates, soft)
        first = first if first is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.5 * first


def test_training_with_the_identification_term_and_validation_personas(tmp_path, tiny_llama):
    dataset = write_dataset(tmp_path / "data")
    for slug in ("mara", "hale", "pixel"):  # give the cards example dialogue
        path = dataset / "personas" / slug / "persona.yaml"
        card = yaml.safe_load(path.read_text())
        path.write_text(yaml.safe_dump({**card, "mes_example": EXAMPLES}))
    config = load_config(TINY_CONFIG, SMALL_FUSION)
    cfg = train_config(dataset, tmp_path, epochs=2, contrast_weight=1.0, contrast_lines=2, contrast_negatives=1,
                       val_personas=1)
    summary = train(config, cfg, home=tmp_path / "home", lm=tiny_llama)
    assert summary["examples"] == 2 * 2  # pixel, the last train persona, is left out: 2 personas x 2 turns
    assert len(summary["id_losses"]) == summary["steps"] and all(x > 0 for x in summary["id_losses"])
    again = train(config, dataclasses.replace(cfg, work_dir=str(tmp_path / "again"),
                                              out=str(tmp_path / "again.safetensors")),
                  home=tmp_path / "home", lm=tiny_llama)
    assert again["id_losses"] == summary["id_losses"]  # lines and negatives are drawn from the seed


def test_validation_personas_must_leave_some_to_train_on():
    personas = {"a": 1, "b": 2, "c": 3}
    assert list(training_personas(personas, 1)) == ["a", "b"]
    assert list(training_personas(personas, 0)) == ["a", "b", "c"]
    with pytest.raises(ValueError, match="val_personas"):
        training_personas(personas, 3)
