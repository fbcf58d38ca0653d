"""Validates data/ on disk: cards load, word counts, voices and portraits in range, splits and reference lines."""
from __future__ import annotations

import sys
import wave
from collections import Counter
from pathlib import Path

import yaml
from PIL import Image

from .canvas import PORTRAIT_SIZE
from .sources import ROOT
from .voices import MAX_VOICE_S, MIN_VOICE_S, SAMPLE_RATE

BUDGET_BYTES = 25 * 1024 * 1024
MAX_PORTRAIT_BYTES = 15 * 1024
MIN_REFERENCE_LINES = 6


def check(data: Path) -> list[str]:
    """Validates data/ on disk; returns the problems (empty when all is well) and prints a summary."""
    sys.path.insert(0, str(ROOT))
    folders = sorted(f for f in (data / "personas").iterdir() if (f / "persona.yaml").is_file())
    problems: list[str] = []
    origins, durations = check_folders(folders, problems)
    # the scaled set (data/scaled, not committed but its manifest) is outside the 25 MB budget
    total = sum(f.stat().st_size for f in data.rglob("*") if f.is_file() and f.relative_to(data).parts[0] != "scaled")
    if len(folders) < 110 or origins["hand-written"] < 30:
        problems.append(f"only {len(folders)} personas ({origins['hand-written']} hand-written)")
    if total > BUDGET_BYTES:
        problems.append(f"data/ is {total / 2**20:.1f} MiB, over budget")
    counts = check_splits(data, {f.name for f in folders}, problems)
    summarise(folders, origins, durations, total, counts)
    for p in problems:
        print("PROBLEM:", p)
    return problems


def check_folders(folders: list[Path], problems: list[str]) -> tuple[Counter, list[float]]:
    """Each persona folder: loads, usable TTS settings, unique name, card words, example lines, voice, portrait.

    Appends to `problems`; returns (personas by origin, voice durations in seconds).
    """
    from agent.persona.store import load_persona
    try:  # personae's chat TTS reads personae.tts; check every card against it when it is there
        from agent.config import TTSConfig
        from agent.speech.voice import voice_settings
    except ImportError:
        voice_settings = TTSConfig = None
    names, origins, durations = set(), Counter(), []
    for folder in folders:
        try:
            persona = load_persona(folder)
        except Exception as e:  # noqa: BLE001 - report every broken folder
            problems.append(f"{folder.name}: {e}")
            continue
        if voice_settings is not None:
            try:
                voice_settings(TTSConfig(), persona)
            except Exception as e:  # noqa: BLE001
                problems.append(f"{folder.name}: personae.tts is not usable by agent.speech.voice: {e}")
        card = persona.card
        if card.name in names:
            problems.append(f"{folder.name}: duplicate name {card.name!r}")
        names.add(card.name)
        origins[persona.settings.get("origin")] += 1
        n = sum(len(getattr(card, k).split()) for k in ("description", "personality", "scenario"))
        if not 60 <= n <= 155:
            problems.append(f"{folder.name}: description+personality+scenario is {n} words")
        if "<START>" not in card.mes_example or "{{user}}:" not in card.mes_example or "{{char}}:" not in card.mes_example:
            problems.append(f"{folder.name}: mes_example lacks <START>/{{{{user}}}}:/{{{{char}}}}: lines")
        if persona.voice_sample is None or persona.portrait is None:
            problems.append(f"{folder.name}: missing voice sample or portrait")
            continue
        durations.append(check_media(folder.name, persona.voice_sample, persona.portrait, problems))
    return origins, durations


def check_media(slug: str, voice: Path, portrait: Path, problems: list[str]) -> float:
    """voice.wav 16 kHz mono 16-bit and 3-6 s, portrait 224x224 and small; returns the voice's seconds."""
    with wave.open(str(voice)) as w:
        dur = w.getnframes() / w.getframerate()
        if (w.getframerate(), w.getnchannels(), w.getsampwidth()) != (SAMPLE_RATE, 1, 2):
            problems.append(f"{slug}: voice.wav is not 16 kHz mono 16-bit")
    if not MIN_VOICE_S <= dur <= MAX_VOICE_S:
        problems.append(f"{slug}: voice.wav lasts {dur:.2f} s")
    with Image.open(portrait) as im:
        if im.size != (PORTRAIT_SIZE, PORTRAIT_SIZE):
            problems.append(f"{slug}: portrait is {im.size}")
    if portrait.stat().st_size > MAX_PORTRAIT_BYTES:
        problems.append(f"{slug}: portrait is {portrait.stat().st_size} bytes")
    return dur


def check_splits(data: Path, slugs: set[str], problems: list[str]) -> dict:
    """user_turns.yaml, splits.yaml and reference_lines.yaml against each other and the persona folders.

    Appends to `problems`; returns the counts the summary prints.
    """
    from agent.persona.store import load_persona
    turns = yaml.safe_load((data / "user_turns.yaml").read_text(encoding="utf-8"))
    splits = yaml.safe_load((data / "splits.yaml").read_text(encoding="utf-8"))
    refs_file = data / "reference_lines.yaml"
    refs = (yaml.safe_load(refs_file.read_text(encoding="utf-8")) if refs_file.is_file() else {}) or {}
    refs = refs.get("personas", {})
    n_turns, n_adv = len(turns["turns"]), len(turns["adversarial"])
    held, held_turns, train = splits["personas"]["held_out"], splits["user_turns"]["held_out"], splits["personas"]["train"]
    if n_turns < 320 or n_adv < 30:
        problems.append(f"{n_turns} user turns, {n_adv} adversarial")
    if len(held) < 16 or len(held_turns) < 0.2 * n_turns:
        problems.append(f"{len(held)} held-out personas, {len(held_turns)} held-out turns")
    if set(held) & set(train) or set(held_turns) & set(splits["user_turns"]["train"]):
        problems.append("train and held-out overlap")
    if set(held) - slugs or set(train) - slugs or len(held) + len(train) != len(slugs):
        problems.append("splits.yaml does not match data/personas")
    n_refs = 0
    for slug in held:
        entry = refs.get(slug) or {}
        lines = [x["text"] for x in entry.get("lines", []) if isinstance(x, dict) and str(x.get("text", "")).strip()]
        n_refs += len(lines)
        if len(lines) < MIN_REFERENCE_LINES:
            problems.append(f"reference_lines.yaml: {slug} has {len(lines)} lines (needs {MIN_REFERENCE_LINES})")
        folder = data / "personas" / slug
        if entry and folder.is_dir() and entry.get("name") != load_persona(folder).card.name:
            problems.append(f"reference_lines.yaml: {slug} is named {entry.get('name')!r}, not as its card")
        for text in lines:
            if not 4 <= len(text.split()) <= 60:  # a short reply (clipped styles use many one-word "sentences")
                problems.append(f"reference_lines.yaml: {slug}: not a short reply: {text[:60]!r}")
    for slug in set(refs) - set(held):
        problems.append(f"reference_lines.yaml: {slug} is not a held-out persona")
    return {"held": len(held), "turns": n_turns, "held_turns": len(held_turns), "adversarial": n_adv,
            "refs": n_refs, "ref_personas": len(refs)}


def summarise(folders: list[Path], origins: Counter, durations: list[float], total: int, c: dict):
    """The two summary lines of --check."""
    sizes = {kind: [f / kind for f in folders if (f / kind).is_file()] for kind in ("voice.wav", "portrait.png")}
    voice_bytes = sum(p.stat().st_size for p in sizes["voice.wav"])
    portrait_bytes = sum(p.stat().st_size for p in sizes["portrait.png"])
    print(f"check: {len(folders)} personas ({origins['hand-written']} hand-written, {origins['procedural']} procedural), "
          f"{c['held']} held out; {c['turns']} user turns ({c['held_turns']} held out, {c['held_turns'] / c['turns']:.0%}), "
          f"{c['adversarial']} adversarial; {c['refs']} reference lines for {c['ref_personas']} personas")
    if durations:
        largest = max(p.stat().st_size for p in sizes["portrait.png"]) // 1024
        print(f"check: voices {min(durations):.2f}-{max(durations):.2f} s, {voice_bytes / 2**20:.1f} MiB; portraits "
              f"{portrait_bytes / 2**20:.2f} MiB (max {largest} KB); data/ total {total / 2**20:.1f} MiB")
