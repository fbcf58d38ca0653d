"""Decodes any audio file or upload (wav, mp3, ogg/opus, webm, m4a, flac) through the ffmpeg binary.

Hands the ASR stage float32 mono samples in [-1, 1], shape (n_samples,), refusing unreadable or overlong audio.
"""
from __future__ import annotations

import json
import os
import subprocess
import tempfile
import wave
from pathlib import Path
from typing import Optional, Union

import numpy as np

PROBE_TIMEOUT_S = 30.0  # ffprobe only reads headers (and an ogg's last page)
DECODE_TIMEOUT_S = 120.0  # decoding the longest allowed audio takes a few seconds; this catches a hung ffmpeg
UPLOAD_LABEL = "uploaded audio"  # names bytes input in errors when the caller gives no name

AudioSource = Union[str, os.PathLike, bytes, bytearray, memoryview]


class AudioError(ValueError):
    """Audio that can't be used; the message names the file (or upload) and the problem."""


def audio_seconds(samples: np.ndarray, sample_rate: int) -> float:
    """samples: shape (n_samples,) -> duration in seconds."""
    return len(samples) / sample_rate


def write_wav(path: Union[str, os.PathLike], samples: np.ndarray, sample_rate: int) -> Path:
    """Writes float samples in [-1, 1], shape (n_samples,), as a mono 16-bit PCM wav (values outside are clipped)."""
    pcm = (np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0) * 32767).round().astype("<i2")
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(pcm.tobytes())
    return Path(path)


def _ffmpeg_detail(stderr: bytes, path: Path) -> str:
    """ffmpeg's error output -> its last line, without the file path it prefixes."""
    lines = [line.strip() for line in stderr.decode("utf-8", "replace").splitlines() if line.strip()]
    if not lines:
        return "ffmpeg gave no reason"
    last = lines[-1]
    for prefix in (f"{path}: ", f"{path}:"):
        if last.startswith(prefix):
            last = last[len(prefix):]
    return last[:300]


def _run(args: list[str], timeout: float, label: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(args, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise RuntimeError(f"{args[0]} is not installed; personae decodes audio with it (apt-get install ffmpeg)") from None
    except subprocess.TimeoutExpired:
        raise AudioError(f"{label}: {args[0]} did not finish within {timeout:g} s; the file may be damaged") from None


def _too_long(label: str, seconds: float, max_seconds: float, at_least: bool = False) -> AudioError:
    length = f"at least {seconds:.1f} s" if at_least else f"{seconds:.1f} s"
    return AudioError(f"{label}: audio is {length} long, over the {max_seconds:g} s limit "
                      f"(whisper.max_seconds raises it)")


def _probe_seconds(path: Path, label: str) -> Optional[float]:
    """The duration the file's headers claim (None when they don't say); refuses files with no audio stream."""
    done = _run(["ffprobe", "-v", "error", "-show_entries", "format=duration:stream=codec_type",
                 "-of", "json", str(path)], PROBE_TIMEOUT_S, label)
    if done.returncode != 0:
        raise AudioError(f"{label}: not audio, or unreadable ({_ffmpeg_detail(done.stderr, path)})")
    try:
        info = json.loads(done.stdout or b"{}")
    except json.JSONDecodeError:
        info = {}
    if not any(s.get("codec_type") == "audio" for s in info.get("streams", [])):
        raise AudioError(f"{label}: has no audio stream")
    try:
        return float(info.get("format", {}).get("duration"))
    except (TypeError, ValueError):
        return None  # e.g. "N/A": the capped decode below still bounds the work


def _decode(path: Path, label: str, sample_rate: int, max_seconds: float) -> np.ndarray:
    """Decodes at most max_seconds + 1 s, so lying headers can't make us decode (or hold) more."""
    done = _run(["ffmpeg", "-nostdin", "-hide_banner", "-v", "error", "-threads", "0", "-i", str(path),
                 "-t", f"{max_seconds + 1:g}", "-vn", "-ac", "1", "-ar", str(sample_rate),
                 "-f", "f32le", "-acodec", "pcm_f32le", "-"], DECODE_TIMEOUT_S, label)
    if done.returncode != 0:
        raise AudioError(f"{label}: not audio, or unreadable ({_ffmpeg_detail(done.stderr, path)})")
    samples = np.frombuffer(done.stdout, dtype="<f4").astype(np.float32)  # (n_samples,)
    return np.clip(samples, -1.0, 1.0)  # lossy decoders overshoot a little


def _load_file(path: Path, label: str, sample_rate: int, max_seconds: float) -> np.ndarray:
    if not path.exists():
        raise AudioError(f"{label}: file not found")
    if not path.is_file():
        raise AudioError(f"{label}: not a file")
    if path.stat().st_size == 0:
        raise AudioError(f"{label}: empty file")
    claimed = _probe_seconds(path, label)
    if claimed is not None and claimed > max_seconds + 0.5:  # headers estimate (VBR mp3), so allow a little
        raise _too_long(label, claimed, max_seconds)
    samples = _decode(path, label, sample_rate, max_seconds)
    seconds = audio_seconds(samples, sample_rate)
    if seconds > max_seconds:
        raise _too_long(label, seconds, max_seconds, at_least=True)
    return samples


def load_audio(path_or_bytes: AudioSource, *, sample_rate: int = 16000, max_seconds: float,
               name: Optional[str] = None) -> np.ndarray:
    """A file path or the bytes of an audio file -> float32 mono samples in [-1, 1], shape (n_samples,).

    Any format ffmpeg reads works; the sample rate and channels are converted. `name` labels errors
    (the upload's file name for bytes; defaults to the path). Raises AudioError for a missing, empty,
    non-audio or unreadable file, and for audio longer than `max_seconds`.
    """
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        label = name or UPLOAD_LABEL
        if len(path_or_bytes) == 0:
            raise AudioError(f"{label}: empty file")
        # A real file rather than stdin: ffprobe can then read durations (an ogg's is at its end) and
        # m4a files with their index after the audio decode in every ffmpeg version.
        with tempfile.TemporaryDirectory(prefix="personae-audio-") as tmp:
            path = Path(tmp) / "upload"
            path.write_bytes(path_or_bytes)
            return _load_file(path, label, sample_rate, max_seconds)
    path = Path(path_or_bytes).expanduser()
    return _load_file(path, name or str(path), sample_rate, max_seconds)
