"""Persona encoders on tiny random CLIP / Whisper / LM: token shapes, masking, pooling and layer choice."""
from pathlib import Path

import numpy as np
import pytest
import torch
import whisper
import yaml
from PIL import Image

from agent.embedding.config import EncoderConfig
from agent.embedding.encoders import (MODALITIES, PersonaEncoder, card_text, encode_audio, encode_image, encode_text,
                                      resolve_layer)
from agent.persona.store import Persona, load_persona
from agent.speech.audio import write_wav

TINY_CLIP_TOKENS = 1 + 16  # pooled + a 4x4 grid of patches (32 px images, 8 px patches)


def write_persona(folder: Path, *, name: str = "Mara", description: str = "A pirate captain of the Gull.",
                  portrait: bool = True, voice: bool = True, colour=(200, 40, 10), seconds: float = 2.0,
                  pitch: float = 220.0) -> Persona:
    """A persona folder with persona.yaml and, optionally, portrait.png and a sine-wave voice.wav."""
    folder.mkdir(parents=True, exist_ok=True)
    card = {"name": name, "description": description, "first_mes": "Ahoy, {{user}}!"}
    (folder / "persona.yaml").write_text(yaml.safe_dump(card), encoding="utf-8")
    if portrait:
        Image.new("RGB", (48, 40), colour).save(folder / "portrait.png")
    if voice:
        t = np.arange(int(seconds * 16000)) / 16000
        write_wav(folder / "voice.wav", 0.5 * np.sin(2 * np.pi * pitch * t), 16000)
    return load_persona(folder)


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    pass


@pytest.fixture(scope="session")
def tiny_whisper_model():
    from agent.models.whisper import load_whisper

    return load_whisper("random:tiny")


@pytest.fixture(scope="session")
def tiny_clip():
    from agent.models.clip import load_clip

    return load_clip("random:tiny")


@pytest.fixture
def encoder(tiny_llama, tiny_whisper_model, tiny_clip) -> PersonaEncoder:
    return PersonaEncoder(EncoderConfig(), tiny_llama, whisper_model=tiny_whisper_model, whisper_source="random:tiny",
                          clip=tiny_clip, clip_source="random:tiny")


def test_a_full_persona_gives_tokens_for_every_modality(tmp_path, encoder, tiny_llama):
    persona = write_persona(tmp_path / "mara")
    out = encoder.encode(persona)
    assert set(out) == set(MODALITIES) and all(m.present for m in out.values())
    n_text = len(tiny_llama.tokenizer(card_text(persona.card))["input_ids"])
    assert out["image"].tokens.shape == (TINY_CLIP_TOKENS, 32)
    assert out["audio"].tokens.shape == (8, 64)
    assert out["text"].tokens.shape == (n_text, 64)
    assert encoder.dims == {"image": 32, "audio": 64, "text": 64}
    for m in out.values():
        assert m.tokens.dtype == torch.float32 and m.tokens.device.type == "cpu"
        assert torch.isfinite(m.tokens).all() and not m.tokens.is_inference()  # usable for training the adapter


def test_a_missing_portrait_or_voice_is_masked_out_not_filled(tmp_path, encoder):
    out = encoder.encode(write_persona(tmp_path / "plain", portrait=False, voice=False))
    assert not out["image"].present and out["image"].tokens.shape == (0, 32)
    assert not out["audio"].present and out["audio"].tokens.shape == (0, 64)
    assert out["text"].present


def test_without_clip_weights_the_portrait_is_masked_out(tmp_path, tiny_llama, tiny_whisper_model):
    persona = write_persona(tmp_path / "mara")
    offline = PersonaEncoder(EncoderConfig(), tiny_llama, whisper_model=tiny_whisper_model)  # CLIP offline: none
    out = offline.encode(persona)
    assert not out["image"].present and out["image"].tokens.numel() == 0
    assert "image" not in offline.dims and offline.identity("image") is None and offline.source(persona, "image") is None
    assert out["audio"].present and out["text"].present


def test_config_switches_mask_modalities_even_with_encoders_loaded(tmp_path, tiny_llama, tiny_whisper_model, tiny_clip):
    config = EncoderConfig(image_enabled=False, audio_enabled=False)
    encoder = PersonaEncoder(config, tiny_llama, whisper_model=tiny_whisper_model, clip=tiny_clip)
    out = encoder.encode(write_persona(tmp_path / "mara"))
    assert [m for m in MODALITIES if out[m].present] == ["text"] and encoder.dims == {"text": 64}


def test_image_tokens_are_the_pooled_embedding_then_projected_patches(tmp_path, tiny_clip):
    model, preprocess = tiny_clip
    persona = write_persona(tmp_path / "mara")
    tokens = encode_image(model, preprocess, persona.portrait)
    pixels = preprocess(Image.open(persona.portrait).convert("RGB"))[None]
    with torch.no_grad():
        pooled = model.encode_image(pixels)[0]  # (32,)
    assert tokens.shape == (TINY_CLIP_TOKENS, 32)
    torch.testing.assert_close(tokens[0], pooled)
    assert model.visual.output_tokens is False  # the shared model is left as it was


def test_an_unreadable_portrait_names_the_file(tmp_path, tiny_clip):
    bad = tmp_path / "portrait.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="portrait.png"):
        encode_image(*tiny_clip, bad)


def _encoder_frames(model, samples: torch.Tensor) -> torch.Tensor:
    """The encoder states of one 30 s window, (1500, d)."""
    mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(samples))
    with torch.no_grad():
        return model.encoder(mel[None])[0]


def test_audio_is_pooled_over_the_real_frames_only(tmp_path, tiny_whisper_model):
    persona = write_persona(tmp_path / "mara", seconds=2.0)
    tokens = encode_audio(tiny_whisper_model, persona.voice_sample, n_tokens=1)
    from agent.speech.audio import load_audio

    samples = torch.from_numpy(load_audio(persona.voice_sample, max_seconds=60))
    frames = _encoder_frames(tiny_whisper_model, samples)
    torch.testing.assert_close(tokens[0], frames[:100].mean(0))  # 2 s = 100 frames, not the 1500 of the padded window
    assert not torch.allclose(tokens[0], frames.mean(0), atol=1e-3)


def test_audio_over_30_seconds_is_split_into_windows_and_pooled_together(tmp_path, tiny_whisper_model):
    persona = write_persona(tmp_path / "long", seconds=31.0)
    tokens = encode_audio(tiny_whisper_model, persona.voice_sample, n_tokens=4)
    from agent.speech.audio import load_audio

    samples = torch.from_numpy(load_audio(persona.voice_sample, max_seconds=60))
    first, rest = samples[:whisper.audio.N_SAMPLES], samples[whisper.audio.N_SAMPLES:]
    frames = torch.cat([_encoder_frames(tiny_whisper_model, first), _encoder_frames(tiny_whisper_model, rest)[:50]])
    expected = torch.nn.functional.adaptive_avg_pool1d(frames.T[None], 4)[0].T  # (4, 64) over 1550 frames
    assert tokens.shape == (4, 64)
    torch.testing.assert_close(tokens, expected)


def test_text_layer_picks_the_hidden_state(tiny_llama):
    ids = tiny_llama.tokenizer("Ahoy there", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        hidden = tiny_llama.model.base_model(input_ids=ids, output_hidden_states=True).hidden_states  # 3 of (1, n, 64)
    for layer, index in [(-1, 2), (0, 0), (1, 1), (0.5, 1), (0.75, 2)]:
        torch.testing.assert_close(encode_text(tiny_llama, "Ahoy there", layer, 512), hidden[index][0])
    assert encode_text(tiny_llama, "Ahoy there " * 50, -1, max_tokens=7).shape == (7, 64)
    with pytest.raises(ValueError, match="text_layer -4 is out of range.*2 layers"):
        encode_text(tiny_llama, "Ahoy", -4, 512)


def test_resolve_layer():
    assert [resolve_layer(x, 30) for x in (-1, -4, 0, 30, 0.75, 0.5)] == [30, 27, 0, 30, 22, 15]


@pytest.mark.parametrize("field, value", [
    ("audio_tokens", 0), ("audio_max_seconds", 0.0), ("max_text_tokens", 0), ("text_layer", 1.5), ("text_layer", -0.5),
])
def test_encoder_config_refuses_bad_values_naming_the_field(field, value):
    with pytest.raises(ValueError, match=f"encoder.{field}"):
        EncoderConfig(**{field: value})
