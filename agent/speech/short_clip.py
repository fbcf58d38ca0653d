"""A short clip transcribed over its own length: Whisper's encoder reads the clip plus a margin instead of a 30 s
window padded with silence, and the decoder attends over those frames only; hands `Transcriber` one segment.

Whisper always encodes 30 s (1500 positions); for a 2 s push-to-talk question that is ~15 times the work the
speech needs, and the decoder's cross-attention reads every padded position for every token. Reading fewer
positions is whisper.cpp's `audio_ctx`. Whisper was trained on full windows: without enough silence after the
speech (MARGIN_SECONDS) it loops ("What is your name? What is your name? ..."), so the decoding is capped by the clip's
length and a result that hits the cap, repeats itself or is unsure is thrown away for the full window's. The
language must be known (detection wants the full window). Transcripts against the full window's: docs/web.md.
"""
from __future__ import annotations

import math
import re
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
import whisper
from whisper.decoding import DecodingOptions, DecodingTask
from whisper.model import AudioEncoder, Whisper

MARGIN_SECONDS = 5.0  # silence kept after the clip: with 1 s, 6 of 10 spoken test questions looped; 3 s, 1; 5 s, none
POSITIONS_PER_SECOND = whisper.audio.N_FRAMES // whisper.audio.CHUNK_LENGTH // 2  # 50: the encoder halves 100 mel frames/s
MAX_TOKENS_PER_SECOND = 8  # a decoding longer than this (plus 8) is a loop: people say 2 to 4 words a second
COMPRESSION_LIMIT = 2.4  # whisper.transcribe's rules for a result not to trust: a repetitive text ...
LOGPROB_FLOOR = -1.0  # ... or an unsure one ...
NO_SPEECH_PROB = 0.6  # ... unless the model thinks it heard nothing


def encode_window(encoder: AudioEncoder, mel: torch.Tensor) -> torch.Tensor:
    """AudioEncoder.forward over fewer than 3000 mel frames. mel: (batch, n_mels, 2 * k) -> (batch, k, n_state)."""
    x = F.gelu(encoder.conv1(mel))
    x = F.gelu(encoder.conv2(x)).permute(0, 2, 1)  # (batch, k, n_state)
    x = (x + encoder.positional_embedding[:x.shape[1]]).to(x.dtype)
    for block in encoder.blocks:
        x = block(x)
    return encoder.ln_post(x)


class _Encoded(DecodingTask):
    """DecodingTask given audio features already encoded (over a window shorter than the model's)."""

    def _get_audio_features(self, mel: torch.Tensor) -> torch.Tensor:
        return mel


def window_features(model: Whisper, samples: np.ndarray) -> torch.Tensor:
    """samples: (n,) float32 at 16 kHz, under 30 s -> audio features (1, k, n_state) over the clip and its margin."""
    seconds = len(samples) / whisper.audio.SAMPLE_RATE
    positions = min(model.dims.n_audio_ctx, math.ceil((seconds + MARGIN_SECONDS) * POSITIONS_PER_SECOND))
    # the mel of the clip padded as whisper.transcribe pads it, so its log-mel scaling is the same
    mel = whisper.log_mel_spectrogram(samples, model.dims.n_mels, padding=whisper.audio.N_SAMPLES)
    mel = mel[:, :2 * positions].to(model.device)
    with torch.no_grad():
        return encode_window(model.encoder, mel.unsqueeze(0))


def transcribe_short(model: Whisper, samples: np.ndarray, *, language: str) -> Optional[dict]:
    """One segment as whisper.transcribe gives them ({text, start, end, no_speech_prob, avg_logprob}), decoded
    greedily without timestamps over the clip's own window; None when that decoding is not to be trusted (it
    ran to its token cap or repeats itself, as a short window can make Whisper loop, or it is unsure): the
    caller then reads the full window."""
    seconds = len(samples) / whisper.audio.SAMPLE_RATE
    cap = math.ceil(seconds * MAX_TOKENS_PER_SECOND) + 8
    options = DecodingOptions(language=language, task="transcribe", temperature=0.0, sample_len=cap,
                              without_timestamps=True, fp16=False)
    result = _Encoded(model, options).run(window_features(model, samples))[0]
    silent = result.no_speech_prob > NO_SPEECH_PROB and result.avg_logprob < LOGPROB_FLOOR
    if not silent and (len(result.tokens) >= cap or result.compression_ratio > COMPRESSION_LIMIT
                       or result.avg_logprob < LOGPROB_FLOOR or _repeats(result.text)):
        return None
    return {"text": result.text, "start": 0.0, "end": seconds, "no_speech_prob": result.no_speech_prob,
            "avg_logprob": result.avg_logprob}


def _repeats(text: str) -> bool:
    """True when a sentence of `text` comes again ('What is your name? What is your name?'): a short window's loop."""
    sentences = [s.strip().lower() for s in re.split(r"(?<=[.!?])\s+", text) if s.strip()]
    return len(set(sentences)) < len(sentences)
