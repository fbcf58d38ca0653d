"""A short clip encoded over its own length (agent/speech/short_clip.py): the same encoder as Whisper's over the
frames it is given, used for clips in a known language under whisper.short_clip_seconds, and on Whisper base the
same words as the full 30 s window in less time."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import whisper

from agent.models.whisper import load_whisper
from agent.speech import asr, short_clip
from agent.speech.asr import Transcriber
from agent.speech.short_clip import encode_window, window_features
from test_asr import fake_whisper, heard_most_words, needs_piper, noise, segment, spoken, whisper_base  # noqa: F401

SR = 16000


@pytest.fixture(scope="module")
def tiny():
    return load_whisper("random:tiny")


def test_encode_window_is_the_encoder_over_the_frames_it_is_given(tiny):
    mel = torch.randn(1, tiny.dims.n_mels, 2 * tiny.dims.n_audio_ctx)
    with torch.no_grad():
        assert torch.allclose(encode_window(tiny.encoder, mel), tiny.encoder(mel), atol=1e-5)
        short = encode_window(tiny.encoder, mel[:, :, :200])
    assert short.shape == (1, 100, tiny.dims.n_audio_state)


def test_the_window_covers_the_clip_and_its_margin(tiny):
    features = window_features(tiny, noise(2, -20))
    assert features.shape[1] == int((2 + short_clip.MARGIN_SECONDS) * short_clip.POSITIONS_PER_SECOND)
    assert window_features(tiny, noise(29.9, -20)).shape[1] == tiny.dims.n_audio_ctx  # never past the model's


def test_short_clips_in_a_known_language_try_their_own_window_first(tiny, monkeypatch):
    full_window = fake_whisper(monkeypatch, [segment(" Full window.")])  # records the calls to whisper.transcribe
    tried = []

    def short(*args, **kwargs):  # the real short path, on random weights, its answer recorded
        tried.append(short_clip.transcribe_short(*args, **kwargs))
        return tried[-1]

    monkeypatch.setattr(asr, "transcribe_short", short)
    transcriber = Transcriber(tiny, temperature=0.0, short_clip_seconds=3.0)
    heard = transcriber.transcribe_samples(noise(1, -20), language="en")
    assert len(tried) == 1 and heard.language == "en"
    # random weights write gibberish to the token cap, which is not trusted: then the full window answers
    assert len(full_window) == (tried[0] is None) and (heard.text == "Full window.") == (tried[0] is None)
    assert transcriber.transcribe_samples(noise(4, -20), language="en").text == "Full window."  # too long
    assert transcriber.transcribe_samples(noise(1, -20)).text == "Full window."  # the language is to be detected
    assert len(tried) == 1


def test_a_looping_decoding_is_not_trusted():
    assert short_clip._repeats("What is your name? What is your name?")
    assert not short_clip._repeats("What is your name? Where are we sailing?")


@pytest.mark.slow
@needs_piper
def test_base_hears_the_same_words_in_less_time(whisper_base, spoken):  # noqa: F811 - fixtures
    from agent.speech.audio import load_audio

    samples = load_audio(spoken[0].read_bytes(), sample_rate=SR, max_seconds=300, name="sentence.wav")
    full = Transcriber(whisper_base.model)
    short = Transcriber(whisper_base.model, short_clip_seconds=30.0)
    short.transcribe_samples(samples, language="en")  # warm
    start = time.perf_counter()
    heard_full = full.transcribe_samples(samples, language="en")
    middle = time.perf_counter()
    heard_short = short.transcribe_samples(samples, language="en")
    end = time.perf_counter()
    assert heard_most_words(heard_short), heard_short.text
    assert heard_short.text.lower().strip(".") == heard_full.text.lower().strip(".")
    assert end - middle < middle - start
    print(f"\nWhisper base, {len(samples) / SR:.1f} s clip: full window {middle - start:.2f} s, "
          f"its own window {end - middle:.2f} s")
    hiss = short.transcribe_samples(noise(3, -40), language="en")
    assert hiss.text == "" and hiss.reason == "no speech detected"
    assert whisper.audio.SAMPLE_RATE == SR
