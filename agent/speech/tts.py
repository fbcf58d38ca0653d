"""Text to speech: the engine registry, from an engine name to the module that loads its voices.

`load_synthesizer(voice_settings(config.tts, persona))` hands the speech stage a `Synthesizer` whose
`synthesize(sentence)` gives float32 mono audio at its `sample_rate`; engines load lazily, voices are cached.
"""
from __future__ import annotations

from typing import Callable

from .voice import Synthesizer, VoiceSettings


def _load_piper(settings: VoiceSettings, device: str) -> Synthesizer:
    from .piper_tts import load_piper

    return load_piper(settings, device=device)


def _load_coqui(settings: VoiceSettings, device: str) -> Synthesizer:
    from .coqui_tts import load_coqui

    return load_coqui(settings, device=device)


# engine name -> loader; each engine's module (and its heavy imports) loads only when it is chosen
ENGINES: dict[str, Callable[[VoiceSettings, str], Synthesizer]] = {"piper": _load_piper, "coqui": _load_coqui}


def load_synthesizer(settings: VoiceSettings, *, device: str = "cpu") -> Synthesizer:
    """The voice `settings` describe, on `device` ("cpu", "cuda", "cuda:N"). The model behind a voice path
    loads once per process; asking again with other scales or pitch reuses it.

    Raises ValueError for an unknown engine (listing the valid ones) and MissingWeights when the voice's
    files are not on this machine (saying where it looked and how to provide them).
    """
    if settings.engine not in ENGINES:
        raise ValueError(f"unknown TTS engine {settings.engine!r}; valid engines: {', '.join(sorted(ENGINES))}")
    return ENGINES[settings.engine](settings, device)
