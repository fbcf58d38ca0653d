"""Speech recognition: audio files or uploads -> text with openai-whisper, never inventing words for silence.

Hands the chat engine a `Transcript`; empty text always comes with the reason ("silence", "no speech detected", ...).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import whisper
from whisper.model import Whisper

from ..config import WhisperConfig
from ..models.whisper import load_whisper
from .audio import AudioSource, audio_seconds, load_audio
from .short_clip import transcribe_short

SAMPLE_RATE = whisper.audio.SAMPLE_RATE  # 16 kHz, what Whisper was trained on
FRAME_SECONDS = 0.03  # energy is measured over 30 ms frames
SILENCE_RMS = 0.003  # about -50 dBFS: audio whose loudest frame is quieter than this is silence (room noise, dither)
NEAR_SILENCE_RMS = 0.02  # about -34 dBFS: a known hallucination over a span no louder than this is dropped
TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)  # whisper's fallback: retried hotter when a window repeats or is unsure
NO_SPEECH_PROB = 0.6  # whisper's own rule: a segment is silent when no_speech_prob is above this ...
LOGPROB_FLOOR = -1.0  # ... and its average token log-probability below this
HALLUCINATION_NO_SPEECH = 0.3  # a known hallucination is also dropped when the model half-suspects silence

# What Whisper says, learned from subtitled videos, when it hears nothing (lower case, punctuation stripped)
HALLUCINATIONS = frozenset({
    "you", "thank you", "thanks", "thank you very much", "thank you so much", "thanks for watching",
    "thank you for watching", "thanks for watching and ill see you next time", "please subscribe",
    "subscribe", "like and subscribe", "bye", "bye bye", "so", "okay", "oh", "hmm", "um", "uh",
    "subtitles by the amaraorg community", "transcription by castingwords", "music", "applause", "silence",
    "i", "the end",
})


@dataclass(frozen=True)
class Transcript:
    text: str  # what was said, stripped; "" when nothing was
    language: str  # language code Whisper used ("en"), forced or detected; "" when it never ran
    seconds: float  # length of the audio
    reason: str = ""  # why text is empty: "empty audio" | "silence" | "no speech detected"; "" otherwise


def frame_rms(samples: np.ndarray, frame: int) -> np.ndarray:
    """samples: (n_samples,) -> RMS of each whole `frame`-sample frame (plus a short last one), (n_frames,)."""
    if len(samples) == 0:
        return np.zeros(0, dtype=np.float32)
    pad = (-len(samples)) % frame
    padded = np.pad(samples, (0, pad))
    energy = np.square(padded.reshape(-1, frame), dtype=np.float64).sum(axis=1)  # (n_frames,)
    counts = np.full(len(energy), frame, dtype=np.float64)
    counts[-1] = frame - pad
    return np.sqrt(energy / counts).astype(np.float32)


def _normalised(text: str) -> str:
    return re.sub(r"[^\w\s]", "", text.lower()).strip()


def _peak_rms(samples: np.ndarray, start_s: float, end_s: float) -> float:
    span = samples[int(start_s * SAMPLE_RATE):max(int(end_s * SAMPLE_RATE), int(start_s * SAMPLE_RATE) + 1)]
    rms = frame_rms(span, int(FRAME_SECONDS * SAMPLE_RATE))
    return float(rms.max()) if len(rms) else 0.0


def keep_segment(segment: dict, samples: np.ndarray) -> bool:
    """False for a whisper segment that is silence: by whisper's no-speech rule, or a known hallucination
    over (near) silence. samples: (n_samples,) at 16 kHz, the audio the segment's times refer to."""
    if not segment["text"].strip():
        return False
    if segment["no_speech_prob"] > NO_SPEECH_PROB and segment["avg_logprob"] < LOGPROB_FLOOR:
        return False
    if _normalised(segment["text"]) in HALLUCINATIONS:
        quiet = _peak_rms(samples, segment["start"], segment["end"]) < NEAR_SILENCE_RMS
        return not (quiet or segment["no_speech_prob"] > HALLUCINATION_NO_SPEECH)
    return True


class Transcriber:
    """Turns speech into text with a loaded openai-whisper model."""

    def __init__(self, model: Whisper, *, language: Optional[str] = None, max_seconds: float = 300.0,
                 temperature: float | tuple[float, ...] = TEMPERATURES, short_clip_seconds: float = 0.0):
        self.model = model
        self.language = language  # None detects the language of each clip
        self.max_seconds = max_seconds  # longer audio is refused with an AudioError
        self.temperature = temperature
        # clips up to this long, in a known language, are encoded over their own length (short_clip.py); 0: never
        self.short_clip_seconds = short_clip_seconds

    def transcribe(self, path_or_bytes: AudioSource, *, language: Optional[str] = None,
                   name: Optional[str] = None) -> Transcript:
        """A file path or an upload's bytes (`name` labels errors) -> Transcript.

        language overrides the configured one for this clip. Raises AudioError for unusable audio.
        """
        samples = load_audio(path_or_bytes, sample_rate=SAMPLE_RATE, max_seconds=self.max_seconds, name=name)
        return self.transcribe_samples(samples, language=language)

    def transcribe_samples(self, samples: np.ndarray, *, language: Optional[str] = None) -> Transcript:
        """samples: float32 mono in [-1, 1] at 16 kHz, shape (n_samples,) -> Transcript."""
        language = language or self.language
        seconds = audio_seconds(samples, SAMPLE_RATE)
        if len(samples) == 0:
            return Transcript("", language or "", seconds, "empty audio")
        if frame_rms(samples, int(FRAME_SECONDS * SAMPLE_RATE)).max() < SILENCE_RMS:
            return Transcript("", language or "", seconds, "silence")
        short = transcribe_short(self.model, samples, language=language) \
            if language and seconds <= self.short_clip_seconds else None
        if short is not None:
            segments = [short]
        else:
            result = whisper.transcribe(
                self.model, samples, verbose=None, language=language, temperature=self.temperature,
                fp16=self.model.device.type == "cuda", condition_on_previous_text=False,
                no_speech_threshold=NO_SPEECH_PROB, logprob_threshold=LOGPROB_FLOOR)
            segments, language = result["segments"], result.get("language") or language
        kept = [s["text"].strip() for s in segments if keep_segment(s, samples)]
        text = " ".join(kept).strip()
        return Transcript(text, language or "", seconds, "" if text else "no speech detected")


def load_transcriber(config: WhisperConfig, cache_dir: Optional[Path] = None, *, device: str = "cpu") -> Transcriber:
    """The Transcriber for a `whisper:` config section; loads (and on first use converts) its model."""
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    model = load_whisper(config.name_or_path, device=device, cache_dir=cache_dir)
    return Transcriber(model, language=config.language, max_seconds=config.max_seconds,
                       short_clip_seconds=config.short_clip_seconds)
