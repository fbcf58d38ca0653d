"""Persona embedding cache: unchanged personas load without encoding, a changed file or encoder recomputes."""

import pytest
import torch
import yaml
from PIL import Image

from agent.embedding.cache import EmbeddingCache
from agent.embedding.config import EncoderConfig
from agent.embedding.encoders import MODALITIES, PersonaEncoder
from agent.persona.store import load_persona

from test_encoders import write_persona


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    pass


@pytest.fixture(scope="module")
def models(tiny_llama):
    from agent.models.clip import load_clip
    from agent.models.whisper import load_whisper

    return tiny_llama, load_whisper("random:tiny"), load_clip("random:tiny")


def make_encoder(models, **options) -> PersonaEncoder:
    lm, whisper_model, clip = models
    return PersonaEncoder(EncoderConfig(**options), lm, whisper_model=whisper_model, whisper_source="random:tiny",
                          clip=clip, clip_source="random:tiny")


class CountingEncoder:
    """Wraps a PersonaEncoder and records which modalities were really encoded."""

    def __init__(self, encoder: PersonaEncoder):
        self.inner, self.encoded = encoder, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def encode_modality(self, persona, modality):
        self.encoded.append(modality)
        return self.inner.encode_modality(persona, modality)


def same(a: dict, b: dict) -> bool:
    return all(a[m].present == b[m].present and torch.equal(a[m].tokens, b[m].tokens) for m in MODALITIES)


def test_an_unchanged_persona_is_read_back_without_encoding(tmp_path, models):
    persona = write_persona(tmp_path / "mara")
    cache, encoder = EmbeddingCache(tmp_path / "cache"), CountingEncoder(make_encoder(models))
    first = cache.encode(persona, encoder)
    assert sorted(encoder.encoded) == sorted(MODALITIES) and cache.misses == 3
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 3
    encoder.encoded.clear()
    again = cache.encode(load_persona(persona.folder), encoder)
    assert encoder.encoded == [] and cache.hits == 3
    assert same(again, first) and same(first, encoder.inner.encode(persona))


def test_a_changed_card_or_portrait_recomputes_only_that_modality(tmp_path, models):
    persona = write_persona(tmp_path / "mara")
    cache, encoder = EmbeddingCache(tmp_path / "cache"), CountingEncoder(make_encoder(models))
    before = cache.encode(persona, encoder)
    encoder.encoded.clear()

    card = yaml.safe_load((persona.folder / "persona.yaml").read_text())
    card["description"] = "A pirate captain, now retired to a lighthouse."
    (persona.folder / "persona.yaml").write_text(yaml.safe_dump(card))
    after = cache.encode(load_persona(persona.folder), encoder)
    assert encoder.encoded == ["text"] and not torch.equal(after["text"].tokens, before["text"].tokens)

    encoder.encoded.clear()
    Image.new("RGB", (48, 40), (10, 90, 250)).save(persona.folder / "portrait.png")
    after = cache.encode(load_persona(persona.folder), encoder)
    assert encoder.encoded == ["image"] and not torch.equal(after["image"].tokens, before["image"].tokens)


def test_another_encoder_setting_is_another_entry(tmp_path, models):
    persona = write_persona(tmp_path / "mara")
    cache = EmbeddingCache(tmp_path / "cache")
    cache.encode(persona, make_encoder(models))
    encoder = CountingEncoder(make_encoder(models, audio_tokens=4, text_layer=-1))
    out = cache.encode(persona, encoder)
    assert sorted(encoder.encoded) == ["audio", "text"] and out["audio"].tokens.shape == (4, 64)


def test_missing_modalities_are_not_cached_and_stay_masked(tmp_path, models):
    persona = write_persona(tmp_path / "plain", portrait=False, voice=False)
    cache = EmbeddingCache(tmp_path / "cache")
    out = cache.encode(persona, make_encoder(models))
    assert [m for m in MODALITIES if out[m].present] == ["text"] and out["audio"].tokens.shape == (0, 64)
    assert [p.name.split("-")[0] for p in (tmp_path / "cache").glob("*.safetensors")] == ["text"]


def test_identical_files_share_entries_across_personas(tmp_path, models):
    cache = EmbeddingCache(tmp_path / "cache")
    cache.encode(write_persona(tmp_path / "a"), make_encoder(models))
    encoder = CountingEncoder(make_encoder(models))
    cache.encode(write_persona(tmp_path / "b", name="Nell"), encoder)
    assert encoder.encoded == ["text"]  # same portrait and voice bytes, another card


def test_a_damaged_entry_is_recomputed(tmp_path, models, caplog):
    persona = write_persona(tmp_path / "mara")
    cache = EmbeddingCache(tmp_path / "cache")
    first = cache.encode(persona, make_encoder(models))
    for file in (tmp_path / "cache").glob("audio-*.safetensors"):
        file.write_bytes(b"garbage")
    encoder = CountingEncoder(make_encoder(models))
    again = cache.encode(persona, encoder)
    assert encoder.encoded == ["audio"] and same(again, first) and "unreadable" in caplog.text
    assert cache.encode(persona, encoder) and encoder.encoded == ["audio"]  # rewritten, read back next time
