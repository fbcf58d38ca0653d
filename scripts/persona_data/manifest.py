"""data/manifest.yaml: every persona, how its voice was made, file sizes and sha256 prefixes."""
from __future__ import annotations

import hashlib
from pathlib import Path

import yaml

from .cards import HEADER, write_yaml
from .compose import SEED
from .splits import SPLIT_SEED
from .text import words
from .voices import VOICE_SEED, duration_s

def sha(path: Path) -> str:
    """The first 16 hex digits of the file's sha256 (what manifests record)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def write_manifest(data: Path, personas: list[dict], voice_info: dict):
    """Writes data/manifest.yaml for `personas`, whose folders, voices and portraits are already on disk."""
    splits = yaml.safe_load((data / "splits.yaml").read_text(encoding="utf-8"))
    held = set(splits["personas"]["held_out"])
    entries = []
    for p in personas:
        folder = data / "personas" / p["slug"]
        voice, portrait = folder / "voice.wav", folder / "portrait.png"
        tts = p["tts"]
        engine = ("piper-tts, en_US-joe-medium" if tts["engine"] == "piper" else f"espeak-ng -v {tts['voice']}")
        entries.append({
            "slug": p["slug"], "name": p["name"], "origin": p["origin"],
            "split": "held_out" if p["slug"] in held else "train",
            "card_words": words(p),
            "voice": {"engine": engine, "settings": {k: v for k, v in tts.items() if k not in ("engine", "voice")},
                      "line": p["voice_line"], "seconds": round(duration_s(voice), 2),
                      **voice_info.get(p["slug"], {}), "bytes": voice.stat().st_size, "sha256": sha(voice)},
            "portrait": {"background": p["look"].get("background"), "bytes": portrait.stat().st_size, "sha256": sha(portrait)},
            "card_sha256": sha(folder / "persona.yaml"),
        })
    tree = {"seed": SEED, "split_seed": SPLIT_SEED, "voice_seed": VOICE_SEED,
            "counts": {"personas": len(personas), "hand_written": sum(p["origin"] == "hand-written" for p in personas),
                       "procedural": sum(p["origin"] == "procedural" for p in personas),
                       "piper_voices": sum(p["tts"]["engine"] == "piper" for p in personas),
                       "espeak_voices": sum(p["tts"]["engine"] == "espeak-ng" for p in personas)},
            "personas": entries}
    write_yaml(data / "manifest.yaml", tree, f"{HEADER}: every persona, how its voice was made, sizes and sha256 prefixes.\n")

