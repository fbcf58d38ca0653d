"""Voice settings for a created persona from its age, temperament, era (eras.py reads its kind) and voice pitch.

`voice_for(draft_values)` hands `assemble` the `personae: tts:` mapping (Piper length_scale, noise_scale,
pitch_semitones) read later by agent/speech/voice.py, so created personas do not all sound alike.
"""
from __future__ import annotations

import hashlib

from .eras import era_kinds

# temperament -> (speaking time factor, liveliness): calm speakers slow down, excitable ones speed up and vary
TEMPERAMENT = {"calm": (1.08, 0.50), "cheerful": (0.93, 0.80), "gloomy": (1.12, 0.55), "fierce": (0.95, 0.85),
               "nervous": (0.90, 0.90), "stern": (1.05, 0.45), "dreamy": (1.10, 0.70), "sly": (1.00, 0.65),
               "warm": (1.03, 0.65)}
PITCH = {"deep": -3.0, "medium": 0.0, "high": 3.5}  # semitones from the Piper voice's own
ERA_PACE = {"ancient": 1.05, "medieval": 1.04, "1500s-1700s": 1.03, "1800s": 1.03, "future": 0.97}  # formal eras speak slower


def _era_pace(era: str) -> float:
    kinds = era_kinds(era)
    return next((ERA_PACE[k] for k in ERA_PACE if k in kinds), 1.0)


def _age_pace(age: int) -> float:
    return 1.15 if age >= 70 else 1.07 if age >= 50 else 0.95 if age < 18 else 1.0


def _age_pitch(age: int) -> float:
    return 2.5 if age < 13 else 1.0 if age < 18 else -1.0 if age >= 70 else 0.0


def _jitter(name: str) -> float:
    """A small fixed offset in [-0.5, 0.5] per name, so two personas of the same kind still differ."""
    return int(hashlib.sha256(name.encode("utf-8")).hexdigest()[:4], 16) / 0xFFFF - 0.5


def voice_for(values: dict) -> dict:
    """values: a validated draft (schema.LAYOUT) -> {length_scale, noise_scale, pitch_semitones}."""
    age = int(values["age"])
    pace, noise = TEMPERAMENT[values["temperament"]]
    length = pace * _age_pace(age) * _era_pace(values["era"])
    pitch = PITCH[values["voice"]] + _age_pitch(age) + _jitter(values["name"])
    noise = noise + (0.05 if age >= 70 else 0.0)
    return {"length_scale": round(min(1.4, max(0.75, length)), 2),
            "noise_scale": round(min(1.0, max(0.3, noise)), 2),
            "pitch_semitones": round(min(8.0, max(-8.0, pitch)), 1)}
