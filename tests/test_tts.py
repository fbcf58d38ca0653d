"""Text to speech: the engine registry, per-persona voice settings, pitch shifting, Piper and Coqui voices.

Piper tests use the real packaged joe voice (slow; skipped when absent). Coqui has no offline weights, so a
tiny randomly initialised VITS is built from its config, saved as a model folder and loaded like a real one.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import yaml

from agent.config import TTSConfig
from agent.models.packages import MissingWeights
from agent.paths import SHIPPED_PERSONAS
from agent.persona import CardError
from agent.persona.store import load_persona
from agent.speech.coqui_tiny import save_tiny_vits
from agent.speech.tts import ENGINES, load_synthesizer
from agent.speech.voice import Synthesizer, VoiceSettings, shift_pitch, time_stretch, voice_settings

LINES = ("Aye, I've room for one more hand, if you can haul a line and keep a secret. "
         "The tide turns at dawn, so tell me true. What brings you to my deck, sailor?")


def median_f0(audio: np.ndarray, sample_rate: int) -> float:
    """Median pitch (Hz) of the loud frames, from each 40 ms frame's autocorrelation peak in 60-400 Hz."""
    size = int(0.04 * sample_rate)
    frames = [audio[i:i + size] for i in range(0, len(audio) - size, size // 2)]
    loudest = max(np.sqrt(np.mean(f ** 2)) for f in frames)
    lo, hi = sample_rate // 400, sample_rate // 60
    pitches = []
    for frame in frames:
        if np.sqrt(np.mean(frame ** 2)) < 0.3 * loudest:
            continue
        frame = frame - frame.mean()
        corr = np.fft.irfft(np.abs(np.fft.rfft(frame, 2 * size)) ** 2)[:size]  # autocorrelation, lags 0..size-1
        lag = lo + int(np.argmax(corr[lo:hi]))
        if corr[lag] > 0.3 * corr[0]:  # voiced
            pitches.append(sample_rate / lag)
    return float(np.median(pitches))


def write_persona(folder, tts) -> object:
    folder.mkdir(parents=True)
    tree = {"name": "Tess", "description": "A test sailor.", "personae": {"tts": tts}}
    (folder / "persona.yaml").write_text(yaml.safe_dump(tree), encoding="utf-8")
    return load_persona(folder)


# --- registry and settings ---------------------------------------------------------------------------

def test_an_unknown_engine_is_refused_with_the_valid_names():
    assert sorted(ENGINES) == ["coqui", "piper"]
    with pytest.raises(ValueError, match=r"unknown TTS engine 'espeak'; valid engines: coqui, piper"):
        load_synthesizer(VoiceSettings(engine="espeak"))


def test_settings_come_from_the_config_then_the_persona():
    plain = voice_settings(TTSConfig())
    assert (plain.engine, plain.voice, plain.length_scale) == ("piper", TTSConfig.voice, 1.0)
    assert plain.pitch_semitones == 0.0 and plain.speaker_wav is None
    mara = load_persona(SHIPPED_PERSONAS / "mara")
    settings = voice_settings(TTSConfig(), mara)
    assert (settings.length_scale, settings.noise_scale, settings.pitch_semitones) == (1.15, 0.6, -3.0)
    assert settings.speaker_wav == mara.voice_sample and settings.speaker_wav.is_file()
    assert settings.engine == "piper" and not settings.read_actions
    coqui = voice_settings(TTSConfig(engine="coqui", voice="tts_models/multilingual/multi-dataset/xtts_v2"), mara)
    assert coqui.engine == "coqui" and coqui.pitch_semitones == -3.0


def test_shipped_personas_do_not_all_sound_alike():
    personas = [load_persona(SHIPPED_PERSONAS / slug) for slug in ("mara", "hale", "pixel")]
    settings = [voice_settings(TTSConfig(), persona) for persona in personas]
    assert len({(s.length_scale, s.pitch_semitones) for s in settings}) == 3


def test_an_unknown_persona_tts_key_names_the_file_and_key(tmp_path):
    persona = write_persona(tmp_path / "tess", {"length_scale": 1.1, "pitch": 2})
    with pytest.raises(CardError) as caught:
        voice_settings(TTSConfig(), persona)
    message = str(caught.value)
    assert str(tmp_path / "tess" / "persona.yaml") in message and "personae.tts.pitch" in message
    assert "pitch_semitones" in message  # the valid keys are listed


@pytest.mark.parametrize("tts, problem", [
    ({"length_scale": "slow"}, "personae.tts.length_scale: expected float"),
    ({"pitch_semitones": 40}, "pitch_semitones must be within"),
    ({"noise_w_scale": -0.5}, "noise_w_scale must be in [0, 2]"),
    ({"speaker_wav": "other.wav"}, "personae.voice_sample"),
    ({"read_actions": "yes"}, "personae.tts.read_actions: expected bool"),
])
def test_bad_persona_tts_values_name_the_file(tmp_path, tts, problem):
    persona = write_persona(tmp_path / "tess", tts)
    with pytest.raises(CardError, match="persona.yaml") as caught:
        voice_settings(TTSConfig(), persona)
    assert problem in str(caught.value)


def test_a_persona_may_switch_voice_to_a_file_in_its_folder(tmp_path):
    persona = write_persona(tmp_path / "tess", {"voice": "tess.onnx", "read_actions": True})
    (persona.folder / "tess.onnx").write_bytes(b"")
    settings = voice_settings(TTSConfig(), persona)
    assert settings.voice == str(persona.folder / "tess.onnx") and settings.read_actions


# --- pitch ---------------------------------------------------------------------------------------------

def test_shift_pitch_moves_every_harmonic_and_keeps_the_length():
    sample_rate = 22050
    t = np.arange(3 * sample_rate) / sample_rate
    tone = (0.3 * np.sin(2 * np.pi * 150 * t) + 0.2 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    for semitones in (-3, 2, 5):
        shifted = shift_pitch(tone, sample_rate, semitones)
        assert shifted.shape == tone.shape and shifted.dtype == np.float32
        assert median_f0(shifted, sample_rate) == pytest.approx(150 * 2 ** (semitones / 12), rel=0.02)
    assert shift_pitch(tone, sample_rate, 0) is tone


def test_time_stretch_changes_the_length_not_the_pitch():
    sample_rate = 16000
    t = np.arange(2 * sample_rate) / sample_rate
    tone = np.sin(2 * np.pi * 200 * t).astype(np.float32) * 0.5
    for factor in (0.7, 1.3):
        stretched = time_stretch(tone, factor, sample_rate)
        assert len(stretched) == round(len(tone) * factor)
        assert median_f0(stretched, sample_rate) == pytest.approx(200, rel=0.02)


# --- Piper (the real joe voice) ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def joe():
    pytest.importorskip("piper")
    try:
        return load_synthesizer(VoiceSettings())
    except MissingWeights as e:
        pytest.skip(str(e))


@pytest.mark.slow
def test_piper_speaks_for_a_plausible_time(joe):
    assert isinstance(joe, Synthesizer) and joe.sample_rate == 22050
    audio = joe.synthesize(LINES)
    assert audio.dtype == np.float32 and audio.ndim == 1
    duration = len(audio) / joe.sample_rate
    assert 0.2 < duration / len(LINES.split()) < 0.6  # 2-5 words a second
    assert 0.05 < np.sqrt(np.mean(audio ** 2)) and np.abs(audio).max() <= 1.0
    assert joe.synthesize("").shape == (0,)


@pytest.mark.slow
def test_piper_without_noise_says_a_line_the_same_way_every_time(joe):
    line = "The tide turns at dawn."
    steady = load_synthesizer(dataclasses.replace(joe.settings, noise_scale=0.0, noise_w_scale=0.0))
    assert np.array_equal(steady.synthesize(line), steady.synthesize(line))
    # the phoneme lengths are random too: without noise_w_scale the takes still differ
    calm = load_synthesizer(dataclasses.replace(joe.settings, noise_scale=0.0))
    assert not np.array_equal(calm.synthesize(line), calm.synthesize(line))


@pytest.mark.slow
def test_piper_pitch_shift_keeps_duration_and_length_scale_slows_it(joe):
    steady = dataclasses.replace(joe.settings, noise_scale=0.0, noise_w_scale=0.0)  # one take, the same every run
    variants = {"base": steady, "low": dataclasses.replace(steady, pitch_semitones=-3),
                "high": dataclasses.replace(steady, pitch_semitones=3),
                "slow": dataclasses.replace(steady, length_scale=1.3)}
    synths = {name: load_synthesizer(settings) for name, settings in variants.items()}
    assert all(synth.voice is joe.voice for synth in synths.values())  # the .onnx loaded once
    audio = {name: synth.synthesize(LINES) for name, synth in synths.items()}
    base = audio["base"]
    assert len(audio["low"]) == len(audio["high"]) == len(base)
    assert np.array_equal(audio["low"], shift_pitch(base, joe.sample_rate, -3))  # the same take, shifted
    # Piper rounds each phoneme up to whole frames and keeps its pauses: 1.3 gives about +20%, not +30%.
    assert 1.12 < len(audio["slow"]) / len(base) < 1.45
    f0 = {name: median_f0(a, joe.sample_rate) for name, a in audio.items()}
    assert f0["low"] / f0["base"] == pytest.approx(2 ** (-3 / 12), rel=0.08)
    assert f0["high"] / f0["base"] == pytest.approx(2 ** (3 / 12), rel=0.08)


def test_a_missing_piper_voice_names_the_path(tmp_path):
    pytest.importorskip("piper")
    with pytest.raises(MissingWeights, match=str(tmp_path / "nobody.onnx")):
        load_synthesizer(VoiceSettings(voice=str(tmp_path / "nobody.onnx")))
    (tmp_path / "half.onnx").write_bytes(b"")
    with pytest.raises(MissingWeights, match=r"half\.onnx\.json"):
        load_synthesizer(VoiceSettings(voice=str(tmp_path / "half.onnx")))


# --- Coqui (a tiny random VITS, and missing models) ----------------------------------------------------

@pytest.fixture(scope="module")
def tiny_coqui(tmp_path_factory):
    pytest.importorskip("TTS.tts.models.vits")
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model gains nothing from threads, and loses a lot on a busy CPU
    folder = tmp_path_factory.mktemp("coqui") / "tiny-vits"
    save_tiny_vits(folder)
    yield folder
    torch.set_num_threads(threads)


def test_a_tiny_coqui_model_speaks_from_its_folder(tiny_coqui):
    synth = load_synthesizer(VoiceSettings(engine="coqui", voice=str(tiny_coqui)))
    assert isinstance(synth, Synthesizer) and synth.sample_rate == 16000
    audio = synth.synthesize("Hello there, captain.")
    assert audio.dtype == np.float32 and audio.ndim == 1 and len(audio) > 0
    assert np.isfinite(audio).all() and np.abs(audio).max() <= 1.0
    assert synth.synthesize("  ").shape == (0,)


def test_coqui_models_load_once_and_honour_each_personas_settings(tiny_coqui):
    base = load_synthesizer(VoiceSettings(engine="coqui", voice=str(tiny_coqui)))
    slow = load_synthesizer(VoiceSettings(engine="coqui", voice=str(tiny_coqui / "model.pth"), length_scale=2.0))
    assert slow.engine is base.engine
    text = "The tide turns at dawn."
    assert len(slow.synthesize(text)) > 1.6 * len(base.synthesize(text))
    shifted = load_synthesizer(VoiceSettings(engine="coqui", voice=str(tiny_coqui), pitch_semitones=4))
    assert len(shifted.synthesize(text)) == len(base.synthesize(text))  # durations are deterministic here


def test_a_coqui_folder_without_a_checkpoint_is_refused(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(MissingWeights, match="expected config.json and one checkpoint"):
        load_synthesizer(VoiceSettings(engine="coqui", voice=str(tmp_path)))


@pytest.mark.parametrize("name, looked_in", [
    ("tts_models/en/ljspeech/vits", "tts/tts_models--en--ljspeech--vits"),
    ("tts_models/multilingual/multi-dataset/xtts_v2", "hub/models--tts-hub--XTTS-v2"),
])
def test_a_missing_coqui_model_fails_fast_saying_where_it_looked(tmp_path, monkeypatch, network_attempts, name,
                                                                 looked_in):
    pytest.importorskip("huggingface_hub")
    from huggingface_hub import constants

    monkeypatch.setenv("TTS_HOME", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(MissingWeights) as caught:
        load_synthesizer(VoiceSettings(engine="coqui", voice=name))
    assert network_attempts == []  # personae never downloads
    message = str(caught.value)
    assert str(tmp_path / looked_in) in message and "never downloads" in message and name in message


def test_an_unknown_coqui_name_or_path_is_refused(tmp_path):
    with pytest.raises(MissingWeights, match="not a Coqui model name"):
        load_synthesizer(VoiceSettings(engine="coqui", voice="tts_models/en/nowhere/nothing"))
    with pytest.raises(MissingWeights, match="no such folder"):
        load_synthesizer(VoiceSettings(engine="coqui", voice=str(tmp_path / "missing")))


class _FakeCloningModel:
    """Stands in for XTTS (no offline weights): clones from a sample, has built-in speakers and 2 languages."""

    def __init__(self):
        from types import SimpleNamespace

        self.config = SimpleNamespace(supports_cloning=True)
        self.speaker_manager = SimpleNamespace(num_speakers=2, speaker_names=["Ana Florence", "Bob"])
        self.language_manager = SimpleNamespace(language_names=["en", "de"])

    def inference(self, text, language, gpt_cond_latent, speaker_embedding, speed=1.0): ...


class _FakeEngine:
    """Records TTS.utils.synthesizer.Synthesizer.tts calls; 'clones' by saving a file as TTS does."""
    output_sample_rate = 24000

    def __init__(self):
        self.tts_model, self.calls = _FakeCloningModel(), []

    def tts(self, text, speaker_name=None, language_name=None, speaker_wav=None, **kwargs):
        from pathlib import Path

        from TTS.utils.synthesizer import PAD_SILENCE_SAMPLES

        self.calls.append({"speaker": speaker_name, "language": language_name, "speaker_wav": speaker_wav, **kwargs})
        if speaker_wav is not None:
            (Path(kwargs["voice_dir"]) / f"{speaker_name}.pth").write_bytes(b"latents")
        return [0.25] * 2400 + [0.0] * PAD_SILENCE_SAMPLES


def test_a_cloning_coqui_model_speaks_with_the_personas_voice_sample_analysed_once():
    pytest.importorskip("TTS.utils.synthesizer")
    import threading

    from agent.speech.coqui_tts import CoquiSynthesizer, _Loaded

    sample = load_persona(SHIPPED_PERSONAS / "mara").voice_sample
    engine = _FakeEngine()
    settings = VoiceSettings(engine="coqui", voice="xtts", speaker_wav=sample, length_scale=1.25, pitch_semitones=-3)
    synth = CoquiSynthesizer(_Loaded(engine, threading.Lock(), None, None), settings)
    first, second = synth.synthesize("Ahoy there."), synth.synthesize("Come aboard.")
    assert synth.clones and synth.sample_rate == 24000
    assert engine.calls[0]["speaker_wav"] == str(sample) and engine.calls[1]["speaker_wav"] is None
    assert engine.calls[0]["speaker"] == engine.calls[1]["speaker"]  # the saved clone, reused
    assert engine.calls[0]["language"] == "en" and engine.calls[0]["speed"] == pytest.approx(0.8)
    # the padding TTS adds is gone, and the sample's own pitch is kept (no second shift)
    assert np.array_equal(first, np.full(2400, 0.25, np.float32)) and np.array_equal(first, second)

    plain = CoquiSynthesizer(_Loaded(engine, threading.Lock(), None, None), VoiceSettings(engine="coqui", voice="x"))
    plain.synthesize("Hello.")  # no voice sample: a built-in speaker
    assert not plain.clones and engine.calls[-1]["speaker"] == "Ana Florence"
    assert engine.calls[-1]["speaker_wav"] is None
    with pytest.raises(ValueError, match="has no language 'xx'; it has: en, de"):
        CoquiSynthesizer(_Loaded(engine, threading.Lock(), None, None), dataclasses.replace(settings, language="xx"))


@pytest.mark.parametrize("name, folder", [
    ("tts_models/en/ljspeech/vits", "tts/tts_models--en--ljspeech--vits"),  # TTS(name) fetched it from GitHub
    ("tts_models/multilingual/multi-dataset/xtts_v2", "hub/models--tts-hub--XTTS-v2/snapshots/" + "0" * 40),  # HF hub
])
def test_a_coqui_model_name_loads_from_where_tts_keeps_it(tiny_coqui, tmp_path, monkeypatch, name, folder):
    import shutil

    from huggingface_hub import constants

    monkeypatch.setenv("TTS_HOME", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    shutil.copytree(tiny_coqui, tmp_path / folder)
    refs = tmp_path / "hub/models--tts-hub--XTTS-v2/refs"
    refs.mkdir(parents=True)
    (refs / "main").write_text("0" * 40)
    synth = load_synthesizer(VoiceSettings(engine="coqui", voice=name))
    assert len(synth.synthesize("Hello there.")) > 0
