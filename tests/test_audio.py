"""load_audio: every format a user or Discord sends decodes to the right length; bad files fail naming the file."""
from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from agent.speech import audio
from agent.speech.audio import AudioError, audio_seconds, load_audio, write_wav

SR = 16000
pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")

# suffix -> ffmpeg output options; opus at 48 kHz stereo is what Discord voice messages carry
FORMATS = {
    "wav": [],
    "ogg": ["-c:a", "libopus", "-b:a", "32k", "-ar", "48000", "-ac", "2"],
    "webm": ["-c:a", "libopus", "-ar", "48000"],
    "mp3": ["-c:a", "libmp3lame", "-ar", "44100", "-ac", "2"],
    "m4a": ["-c:a", "aac", "-ar", "44100"],
    "flac": ["-c:a", "flac", "-ar", "22050"],
}


def tone(seconds: float, freq: float = 440.0, amplitude: float = 0.5, sr: int = SR) -> np.ndarray:
    """A sine wave, shape (round(seconds * sr),)."""
    t = np.arange(round(seconds * sr)) / sr
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def convert(source, target, options) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(source), *options, str(target)],
                   check=True, timeout=60)


def dominant_hz(samples: np.ndarray, sr: int = SR) -> float:
    spectrum = np.abs(np.fft.rfft(samples))
    return float(np.fft.rfftfreq(len(samples), 1 / sr)[spectrum.argmax()])


@pytest.fixture(scope="module")
def tone_files(tmp_path_factory):
    """A 1.5 s 440 Hz tone in every format of FORMATS: {suffix: path}."""
    folder = tmp_path_factory.mktemp("tones")
    wav = write_wav(folder / "tone.wav", tone(1.5), SR)
    files = {"wav": wav}
    for suffix, options in FORMATS.items():
        if suffix != "wav":
            files[suffix] = folder / f"tone.{suffix}"
            convert(wav, files[suffix], options)
    return files


@pytest.mark.parametrize("suffix", list(FORMATS))
def test_every_format_decodes_to_16k_mono_of_the_right_length(tone_files, suffix):
    samples = load_audio(tone_files[suffix], max_seconds=10)
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert audio_seconds(samples, SR) == pytest.approx(1.5, abs=0.05)  # codecs pad a few ms
    assert np.abs(samples).max() <= 1.0
    assert dominant_hz(samples) == pytest.approx(440, abs=5)  # resampled, not garbled


def test_bytes_decode_like_the_file(tone_files):
    from_bytes = load_audio(tone_files["ogg"].read_bytes(), max_seconds=10, name="voice-message.ogg")
    np.testing.assert_array_equal(from_bytes, load_audio(tone_files["ogg"], max_seconds=10))


def test_other_sample_rates_are_honoured(tone_files):
    samples = load_audio(tone_files["flac"], sample_rate=8000, max_seconds=10)
    assert len(samples) == pytest.approx(12000, abs=80)


def test_write_wav_round_trips_and_clips(tmp_path):
    samples = np.array([0.0, 0.5, -0.5, 2.0, -2.0], dtype=np.float32)
    back = load_audio(write_wav(tmp_path / "x.wav", samples, SR), max_seconds=1)
    np.testing.assert_allclose(back, [0.0, 0.5, -0.5, 1.0, -1.0], atol=1e-4)


def test_a_valid_file_with_no_samples_gives_empty_audio(tmp_path):
    samples = load_audio(write_wav(tmp_path / "none.wav", np.zeros(0), SR), max_seconds=1)
    assert samples.shape == (0,)


def _text_file(path):
    path.write_text("this is a shopping list, not audio\n" * 20)
    return path


def _truncated_wav(path):
    write_wav(path, tone(1.0), SR)
    path.write_bytes(path.read_bytes()[:30])  # cut inside the 44-byte header
    return path


def _empty_file(path):
    path.write_bytes(b"")
    return path


@pytest.mark.parametrize("make, problem", [
    (_text_file, "not audio"), (_truncated_wav, "not audio"), (_empty_file, "empty file"),
    (lambda path: path, "file not found")])
def test_unusable_files_fail_naming_the_file_and_problem(tmp_path, make, problem):
    path = make(tmp_path / "clip.wav")
    with pytest.raises(AudioError) as err:
        load_audio(path, max_seconds=10)
    assert str(path) in str(err.value) and problem in str(err.value)
    assert isinstance(err.value, ValueError)
    assert "\n" not in str(err.value)  # ffmpeg's complaint condensed to one line


def test_bad_uploads_fail_naming_the_upload(tmp_path):
    with pytest.raises(AudioError, match=r"^notes\.ogg: not audio, or unreadable \(.+\)$"):
        load_audio(b"definitely not an ogg file", max_seconds=10, name="notes.ogg")
    with pytest.raises(AudioError, match="^uploaded audio: empty file$"):
        load_audio(b"", max_seconds=10)


def test_a_file_with_no_audio_stream_is_refused(tmp_path):
    png = tmp_path / "portrait.png"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i", "color=c=red:s=16x16",
                    "-frames:v", "1", str(png)], check=True, timeout=60)
    with pytest.raises(AudioError, match="no audio stream"):
        load_audio(png, max_seconds=10)


@pytest.mark.parametrize("source", ["path", "bytes"])
def test_overlong_audio_is_refused_with_its_length_and_the_limit(tone_files, source):
    data = tone_files["ogg"] if source == "path" else tone_files["ogg"].read_bytes()
    with pytest.raises(AudioError) as err:
        load_audio(data, max_seconds=1, name="long.ogg")
    message = str(err.value)
    assert "long.ogg" in message and "1.5 s" in message and "1 s limit" in message
    assert "whisper.max_seconds" in message


def test_overlong_audio_without_a_duration_header_is_caught_while_decoding(tone_files, monkeypatch):
    monkeypatch.setattr(audio, "_probe_seconds", lambda path, label: None)
    with pytest.raises(AudioError, match=r"at least 1\.\d s long, over the 0\.5 s limit"):
        load_audio(tone_files["wav"], max_seconds=0.5)
