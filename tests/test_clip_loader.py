"""load_clip: tiny random CLIP encodes images, local checkpoints load, and missing weights fail fast without downloads."""
from __future__ import annotations

import os

import huggingface_hub.constants
import numpy as np
import pytest
import torch
from PIL import Image

from agent.models.clip import load_clip
from agent.models.packages import MissingWeights, hub_offline


@pytest.fixture
def empty_hub_cache(tmp_path, monkeypatch):
    """A Hugging Face cache with nothing in it, so 'not downloaded' holds on any machine."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HOME", str(tmp_path))  # open_clip's URL downloads go to ~/.cache/clip


def _image(height: int = 48, width: int = 40) -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8))


def test_random_tiny_encodes_images_and_is_frozen():
    model, preprocess = load_clip("random:tiny")
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    pixels = torch.stack([preprocess(_image()), preprocess(_image(20, 70))])  # (2, 3, 32, 32)
    assert pixels.shape == (2, 3, 32, 32)
    embeddings = model.encode_image(pixels, normalize=True)  # (2, embed_dim)
    assert embeddings.shape == (2, 32)
    assert torch.allclose(embeddings.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_local_checkpoint_file_loads_its_weights(tmp_path):
    model, _ = load_clip("random:tiny")
    torch.save(model.state_dict(), tmp_path / "tiny-clip.pt")
    loaded, _ = load_clip("random:tiny", str(tmp_path / "tiny-clip.pt"))
    expected = model.state_dict()
    assert all(torch.equal(t, expected[k]) for k, t in loaded.state_dict().items())


def test_missing_checkpoint_file_names_the_path(tmp_path):
    path = tmp_path / "nowhere" / "clip.pt"
    with pytest.raises(MissingWeights, match=str(path)):
        load_clip("random:tiny", str(path))


def test_pretrained_tag_not_in_cache_fails_fast(empty_hub_cache, network_attempts):
    with pytest.raises(MissingWeights) as err:
        load_clip("ViT-B-32", "openai")
    assert network_attempts == []  # no download tried
    assert "ViT-B-32" in str(err.value) and "'openai'" in str(err.value)


def test_hub_is_offline_only_during_the_call(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    before = huggingface_hub.constants.HF_HUB_OFFLINE
    with hub_offline():
        assert huggingface_hub.constants.HF_HUB_OFFLINE and os.environ["HF_HUB_OFFLINE"] == "1"
    assert huggingface_hub.constants.HF_HUB_OFFLINE == before and "HF_HUB_OFFLINE" not in os.environ


def test_unknown_tag_lists_the_known_ones():
    with pytest.raises(MissingWeights, match="laion2b_s34b_b79k"):
        load_clip("ViT-B-32", "no_such_tag")


def test_unknown_architecture_is_a_value_error():
    with pytest.raises(ValueError, match="random:tiny"):
        load_clip("ViT-Nope-1")
