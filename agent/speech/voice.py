"""Voice settings and what every TTS engine shares: the `Synthesizer` protocol, `VoiceSettings`, pitch shifting.

`voice_settings(config.tts, persona)` merges the config with the persona's `personae.tts` mapping and hands the
`VoiceSettings` to `load_synthesizer` (speech/tts.py); the engines shift the pitch of what they synthesise.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Protocol, runtime_checkable

import numpy as np

from ..config import ConfigError, TTSConfig, from_dict
from ..models.packages import is_package_ref
from ..persona.card import CardError, card_error

if TYPE_CHECKING:
    from ..persona.store import Persona

MAX_PITCH_SEMITONES = 12.0


@runtime_checkable
class Synthesizer(Protocol):
    """A loaded voice. `synthesize("Hello.")` -> float32 mono audio in [-1, 1], shape (n,); n may be 0."""

    sample_rate: int

    def synthesize(self, text: str) -> np.ndarray: ...


@dataclass(frozen=True)
class VoiceSettings:
    engine: str = "piper"  # a name in speech.tts.ENGINES
    voice: str = TTSConfig.voice  # Piper: .onnx file or pkg: ref; Coqui: model name or local model folder
    length_scale: float = 1.0  # speaking time: > 1 slower, < 1 faster (Piper/VITS phoneme durations, XTTS speed)
    noise_scale: Optional[float] = None  # VITS generator noise (liveliness); None keeps the voice's own
    noise_w_scale: Optional[float] = None  # Piper only: phoneme-length noise (rhythm); None keeps the voice's own
    pitch_semitones: float = 0.0  # shifts the pitch after synthesis, keeping the duration; 0 leaves it alone
    speaker_wav: Optional[Path] = None  # reference audio for voice-cloning models (the persona's voice sample)
    read_actions: bool = False  # speak *action text* too, rather than dropping it
    language: str = "en"  # language code for multilingual Coqui models (XTTS); ignored by the others
    speaker: str = ""  # a named speaker of a multi-speaker Coqui model; "" clones speaker_wav or takes the first

    def __post_init__(self):
        if not 0.1 <= self.length_scale <= 10:
            raise ConfigError(f"length_scale must be in [0.1, 10], got {self.length_scale}")
        if self.noise_scale is not None and not 0 <= self.noise_scale <= 2:
            raise ConfigError(f"noise_scale must be in [0, 2], got {self.noise_scale}")
        if self.noise_w_scale is not None and not 0 <= self.noise_w_scale <= 2:
            raise ConfigError(f"noise_w_scale must be in [0, 2], got {self.noise_w_scale}")
        if abs(self.pitch_semitones) > MAX_PITCH_SEMITONES:
            raise ConfigError(f"pitch_semitones must be within ±{MAX_PITCH_SEMITONES:g}, got {self.pitch_semitones}")


VOICE_FIELDS = tuple(f.name for f in dataclasses.fields(VoiceSettings))
PERSONA_KEYS = tuple(name for name in VOICE_FIELDS if name != "speaker_wav")  # that comes from voice_sample


def voice_settings(tts: TTSConfig, persona: Optional["Persona"] = None) -> VoiceSettings:
    """The config's tts section, overridden by the persona's `personae.tts` mapping.

    An unknown key or a bad value in the persona's mapping is a CardError naming its persona.yaml and the
    key. A relative `voice` there is looked up in the persona folder first.
    """
    values = {f.name: getattr(tts, f.name) for f in dataclasses.fields(tts) if f.name in VOICE_FIELDS}
    if persona is None:
        return from_dict(VoiceSettings, values, "tts:")
    where = str(persona.folder / "persona.yaml")
    overrides = persona.settings.get("tts") or {}
    if not isinstance(overrides, dict):
        raise card_error(where, "personae.tts", f"expected a mapping, got {type(overrides).__name__}")
    for key in overrides:
        if key not in PERSONA_KEYS:
            hint = "; the cloning sample is personae.voice_sample" if key == "speaker_wav" else ""
            raise card_error(where, f"personae.tts.{key}", f"unknown key (valid keys: {', '.join(PERSONA_KEYS)}){hint}")
    voice = overrides.get("voice")
    if isinstance(voice, str) and not is_package_ref(voice) and (persona.folder / voice).exists():
        overrides = {**overrides, "voice": str(persona.folder / voice)}
    values.update(overrides, speaker_wav=persona.voice_sample)
    try:
        return from_dict(VoiceSettings, values, f"{where}: personae.tts")
    except ConfigError as e:
        raise CardError(str(e)) from None


# --- pitch ---------------------------------------------------------------------------------------------

def time_stretch(audio: np.ndarray, factor: float, sample_rate: int) -> np.ndarray:
    """WSOLA time stretch (Verhelst & Roelands, 1993): `factor` > 1 makes it longer, the pitch stays.

    audio: (n,) float32 -> (round(n * factor),) float32. Each 30 ms output frame is copied from near its
    nominal input position, shifted by up to ±10 ms to line up with the waveform already written, so
    voiced speech keeps its periods instead of smearing as a phase vocoder does.
    """
    frame = int(0.030 * sample_rate) // 2 * 2
    hop_out = frame // 2  # Hann windows at 50% overlap sum to one
    hop_in = hop_out / factor
    tol = int(0.010 * sample_rate)
    window = np.hanning(frame + 1)[:frame].astype(np.float32)
    n_out = int(round(len(audio) * factor))
    n_frames = n_out // hop_out + 2
    front = frame + tol
    padded = np.concatenate([np.zeros(front, np.float32), audio.astype(np.float32),
                             np.zeros(int(3 * hop_in) + 2 * frame + 2 * tol, np.float32)])
    out = np.zeros(n_frames * hop_out + frame, np.float32)
    prev = None
    for k in range(n_frames):
        nominal = front + int(round(k * hop_in)) - hop_out  # frame k is centred on output sample k * hop_out
        if prev is None:
            pos = nominal
        else:
            natural = padded[prev + hop_out: prev + hop_out + frame]  # how the last frame would carry on
            region = padded[nominal - tol: nominal + tol + frame]
            pos = nominal - tol + int(np.argmax(np.correlate(region, natural, mode="valid")))
        out[k * hop_out: k * hop_out + frame] += window * padded[pos: pos + frame]
        prev = pos
    return out[hop_out: hop_out + n_out]


def shift_pitch(audio: np.ndarray, sample_rate: int, semitones: float) -> np.ndarray:
    """Raises (or lowers) the pitch by `semitones`, keeping the length: stretch in time by the pitch ratio,
    then resample back to the original length. audio: (n,) float32 -> (n,) float32.

    Formants move with the pitch, as with sox's `pitch`; a few semitones make a different-sounding speaker.
    """
    if semitones == 0 or len(audio) == 0:
        return audio
    import soxr

    ratio = 2.0 ** (semitones / 12.0)
    stretched = time_stretch(audio, ratio, sample_rate)  # (n * ratio,) at the original pitch
    shifted = soxr.resample(stretched, sample_rate * ratio, sample_rate).astype(np.float32)  # every frequency x ratio
    shifted = np.pad(shifted, (0, max(0, len(audio) - len(shifted))))[: len(audio)]
    return np.clip(shifted, -1.0, 1.0)
