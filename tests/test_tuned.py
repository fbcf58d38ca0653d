"""The tuned soft-prompt file: it round-trips, refuses other files by name, and fits only its LM and card."""
import dataclasses

import pytest
import torch

from agent.embedding.tuned import card_fingerprint, load_tuned, save_tuned
from agent.persona.card import CharacterCard


def test_load_tuned_refuses_other_files(tmp_path):
    from safetensors.torch import save_file

    save_file({"soft_prompt": torch.zeros(4, 8)}, tmp_path / "plain.safetensors")
    with pytest.raises(ValueError, match="plain.safetensors"):
        load_tuned(tmp_path / "plain.safetensors")
    good = save_tuned(tmp_path / "good.safetensors", torch.ones(4, 8), {"persona": "mara", "lm": "x"})
    assert torch.equal(load_tuned(good).soft, torch.ones(4, 8))
    with pytest.raises(FileNotFoundError, match="personae tune"):
        load_tuned(tmp_path / "missing.safetensors")


def test_a_tuned_prompt_fits_only_the_lm_and_the_card_it_was_fitted_to(tmp_path):
    card = CharacterCard.from_fields({"name": "Echo", "description": "A test voice."}, "t")
    path = save_tuned(tmp_path / "t.safetensors", torch.ones(2, 4),
                      {"persona": "echo", "lm": "random:llama", "card": card_fingerprint(card)})
    tuned = load_tuned(path)
    assert tuned.fits("random:llama", card)
    assert not tuned.fits("random:qwen", card)
    assert not tuned.fits("random:llama", dataclasses.replace(card, description="Another voice."))
