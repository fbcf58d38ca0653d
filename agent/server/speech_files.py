"""Encodes synthesized speech, float32 samples (n,), as the files OpenAI's speech endpoint returns.

WAV is written here; PCM (16-bit little-endian at 24 kHz, as OpenAI sends it), MP3, Opus, AAC and FLAC go
through the ffmpeg binary that personae already uses to read audio.
"""
from __future__ import annotations

import io
import subprocess
import wave

import numpy as np

from ..speech.audio import AudioError

MEDIA_TYPES = {"wav": "audio/wav", "pcm": "audio/pcm", "mp3": "audio/mpeg", "opus": "audio/ogg",
               "aac": "audio/aac", "flac": "audio/flac"}
FFMPEG_OUTPUT = {  # format -> ffmpeg output options
    "pcm": ["-ar", "24000", "-f", "s16le", "-acodec", "pcm_s16le"],
    "mp3": ["-f", "mp3", "-acodec", "libmp3lame", "-q:a", "4"],
    "opus": ["-ar", "48000", "-f", "ogg", "-acodec", "libopus", "-b:a", "48k"],
    "aac": ["-f", "adts", "-acodec", "aac", "-b:a", "96k"],
    "flac": ["-f", "flac", "-acodec", "flac"],
}
ENCODE_TIMEOUT_S = 60.0


def wav_bytes(samples: np.ndarray, sample_rate: int) -> bytes:
    """Mono 16-bit PCM WAV of float samples in [-1, 1], shape (n,)."""
    pcm = (np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0) * 32767).round().astype("<i2")
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(pcm.tobytes())
    return out.getvalue()


def encode(samples: np.ndarray, sample_rate: int, fmt: str) -> bytes:
    """samples (n,) -> the bytes of a `fmt` file (a key of MEDIA_TYPES)."""
    wav = wav_bytes(samples, sample_rate)
    if fmt == "wav":
        return wav
    args = ["ffmpeg", "-nostdin", "-hide_banner", "-v", "error", "-f", "wav", "-i", "pipe:0", "-ac", "1",
            *FFMPEG_OUTPUT[fmt], "pipe:1"]
    try:
        done = subprocess.run(args, input=wav, capture_output=True, timeout=ENCODE_TIMEOUT_S)
    except FileNotFoundError:
        raise RuntimeError(f"ffmpeg is not installed, so {fmt} can't be written; "
                           "ask for wav, or apt-get install ffmpeg") from None
    except subprocess.TimeoutExpired:
        raise AudioError(f"ffmpeg did not finish encoding {fmt} within {ENCODE_TIMEOUT_S:g} s") from None
    if done.returncode != 0 or not done.stdout:
        detail = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"ffmpeg could not encode {fmt}: {detail[0][:300]}; ask for wav instead")
    return done.stdout
