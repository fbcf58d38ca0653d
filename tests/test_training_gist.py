"""Gist-cell training (agent/training/gist.py): line scoring after shared cells, and one step's loss. Tiny random llama."""
from __future__ import annotations

import torch

from agent.chat.decoding import cache_kwarg
from agent.embedding.config import FusionConfig
from agent.embedding.gist import CardRead, copy_cache, new_gist, read_card
from agent.embedding.reader import ReaderConfig, add_reader
from agent.persona.card import CharacterCard
from agent.training.data import TargetLine
from agent.training.gist import LossWeights, Target, TrainPersona, line_texts, step_loss, token_logits

SYSTEM = [1, 40, 41, 42, 43, 44, 45, 46, 2, 10]


def test_lines_after_a_shared_start_score_as_each_alone(tiny_llama):
    model = tiny_llama.model
    read = read_card(model, SYSTEM, [0, 2, 4], 0.5)
    seqs = [([2, 10, 1, 30, 31, 5], [7, 8, 9]), ([2, 10, 1, 30, 33], [11, 12]), ([2, 10, 1, 30, 31, 6, 6], [13])]
    with torch.inference_mode():
        logits, rows, targets = token_logits(model, read.cells, seqs, pad=0)
        for i, (prompt, cont) in enumerate(seqs):
            out = model(input_ids=torch.tensor([prompt + cont]), use_cache=True,
                        **{cache_kwarg(model): copy_cache(model, read.cells)}).logits[0]  # (T, V)
            alone = out[len(prompt) - 1:len(prompt) + len(cont) - 1]
            assert torch.allclose(logits[rows == i], alone, atol=1e-4)
            assert targets[rows == i].tolist() == cont


def test_line_texts_drop_actions_short_lines_and_the_name():
    card = CharacterCard(name="Boone Crank")
    lines = [TargetLine("greeting", "Hello.", "*Boone nods.* Good day to you, traveller, and welcome."),
             TargetLine("intro", "Name?", "I am Boone, a radio operator of some repute."),
             TargetLine("voice", "Hello.", "Hi there."),
             TargetLine("help", "Help me, {{user}}?", "I should be honoured to assist you, {{user}}.")]
    assert line_texts(card, lines, "Ann", 5) == [("Hello.", "Good day to you, traveller, and welcome."),
                                                  ("Help me, Ann?", "I should be honoured to assist you, Ann.")]
    assert len(line_texts(card, lines, "Ann", 1)) == 1


def test_one_step_gives_a_finite_loss_and_gradients_to_every_trained_part():
    from agent.models.lm import load_lm

    lm = load_lm("random:llama")
    model = lm.model
    lora = add_reader(model, ReaderConfig(rank=2, targets=("q_proj", "v_proj")))
    gist = new_gist(FusionConfig(k=2, width=16, heads=2, depth=1, harmless_start="outputs"), model, 1.0)
    personas, chosen = [], []
    for j in range(3):
        ids = [1, 40 + j, 41 + 2 * j, 42, 43 + j, 2, 10]
        read = read_card(model, ids, [0, 1, 2, 3], 0.5)
        target = Target("hi", [20 + j, 21, 22], torch.randint(0, 50, (3, 4)), torch.randn(3, 4))
        personas.append(TrainPersona(f"p{j}", CharacterCard(name=f"P{j}"), len(ids), ids[-2:],
                                     CardRead(read.cells, read.features, None), [target]))
        chosen.append(target)

    def rests(persona, to):
        return persona.tail + [1, 30, 31 + int(persona.slug[1:])]
    loss, stats = step_loss(model, gist, personas, chosen, rests, LossWeights(), pad=0)
    loss.backward()
    assert torch.isfinite(loss) and 0 <= stats["acc"] <= 1
    assert gist.gate.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in gist.adapter.parameters())
    named = [n for n, p in model.named_parameters() if "lora_" in n]
    reached = {n for n, p in model.named_parameters() if "lora_" in n and p.grad is not None}
    # every layer's v_proj writes gist values; the last layer's q_proj only shapes a gist output no one reads
    assert {n for n in named if "v_proj" in n} <= reached
    assert {n for n in named if "q_proj" in n} - reached == {n for n in named if "q_proj" in n and ".1." in n}
