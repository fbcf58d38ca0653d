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
    DATA, PERSONAS = data, data / "personas"  # noqa: N806 - read as the folders they name
    sys.path.insert(0, str(ROOT))
    from agent.persona.store import load_persona
    try:  # personae's chat TTS reads personae.tts; check every card against it when it is there
        from agent.config import TTSConfig
        from agent.speech.voice import voice_settings
    except ImportError:
        voice_settings = TTSConfig = None
    problems = []
    folders = sorted(f for f in PERSONAS.iterdir() if (f / "persona.yaml").is_file())
    names, total = set(), 0
    origins = Counter()
    durations = []
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
        with wave.open(str(persona.voice_sample)) as w:
            dur = w.getnframes() / w.getframerate()
            if (w.getframerate(), w.getnchannels(), w.getsampwidth()) != (SAMPLE_RATE, 1, 2):
                problems.append(f"{folder.name}: voice.wav is not 16 kHz mono 16-bit")
        durations.append(dur)
        if not MIN_VOICE_S <= dur <= MAX_VOICE_S:
            problems.append(f"{folder.name}: voice.wav lasts {dur:.2f} s")
        with Image.open(persona.portrait) as im:
            if im.size != (PORTRAIT_SIZE, PORTRAIT_SIZE):
                problems.append(f"{folder.name}: portrait is {im.size}")
        if persona.portrait.stat().st_size > MAX_PORTRAIT_BYTES:
            problems.append(f"{folder.name}: portrait is {persona.portrait.stat().st_size} bytes")
    # the scaled set (data/scaled, not committed but its manifest) is outside the 25 MB budget
    total = sum(f.stat().st_size for f in DATA.rglob("*") if f.is_file() and f.relative_to(DATA).parts[0] != "scaled")
    if len(folders) < 110 or origins["hand-written"] < 30:
        problems.append(f"only {len(folders)} personas ({origins['hand-written']} hand-written)")
    if total > BUDGET_BYTES:
        problems.append(f"data/ is {total / 2**20:.1f} MiB, over budget")
    turns = yaml.safe_load((DATA / "user_turns.yaml").read_text(encoding="utf-8"))
    splits = yaml.safe_load((DATA / "splits.yaml").read_text(encoding="utf-8"))
    refs = yaml.safe_load((DATA / "reference_lines.yaml").read_text(encoding="utf-8")) if (DATA / "reference_lines.yaml").is_file() else {}
    refs = (refs or {}).get("personas", {})
    n_turns, n_adv = len(turns["turns"]), len(turns["adversarial"])
    held, held_turns = splits["personas"]["held_out"], splits["user_turns"]["held_out"]
    if n_turns < 320 or n_adv < 30:
        problems.append(f"{n_turns} user turns, {n_adv} adversarial")
    if len(held) < 16 or len(held_turns) < 0.2 * n_turns:
        problems.append(f"{len(held)} held-out personas, {len(held_turns)} held-out turns")
    if set(held) & set(splits["personas"]["train"]) or set(held_turns) & set(splits["user_turns"]["train"]):
        problems.append("train and held-out overlap")
    slugs = {f.name for f in folders}
    if set(held) - slugs or set(splits["personas"]["train"]) - slugs or len(held) + len(splits["personas"]["train"]) != len(slugs):
        problems.append("splits.yaml does not match data/personas")
    n_refs = 0
    for slug in held:
        entry = refs.get(slug) or {}
        lines = [x["text"] for x in entry.get("lines", []) if isinstance(x, dict) and str(x.get("text", "")).strip()]
        n_refs += len(lines)
        if len(lines) < MIN_REFERENCE_LINES:
            problems.append(f"reference_lines.yaml: {slug} has {len(lines)} lines (needs {MIN_REFERENCE_LINES})")
        if entry and (PERSONAS / slug).is_dir() and entry.get("name") != load_persona(PERSONAS / slug).card.name:
            problems.append(f"reference_lines.yaml: {slug} is named {entry.get('name')!r}, not as its card")
        for text in lines:
            if not 4 <= len(text.split()) <= 60:  # a short reply (clipped styles use many one-word "sentences")
                problems.append(f"reference_lines.yaml: {slug}: not a short reply: {text[:60]!r}")
    for slug in set(refs) - set(held):
        problems.append(f"reference_lines.yaml: {slug} is not a held-out persona")
    voice_bytes = sum((PERSONAS / s / "voice.wav").stat().st_size for s in slugs if (PERSONAS / s / "voice.wav").is_file())
    portrait_bytes = sum((PERSONAS / s / "portrait.png").stat().st_size for s in slugs if (PERSONAS / s / "portrait.png").is_file())
    print(f"check: {len(folders)} personas ({origins['hand-written']} hand-written, {origins['procedural']} procedural), "
          f"{len(held)} held out; {n_turns} user turns ({len(held_turns)} held out, {len(held_turns) / n_turns:.0%}), "
          f"{n_adv} adversarial; {n_refs} reference lines for {len(refs)} personas")
    if durations:
        print(f"check: voices {min(durations):.2f}-{max(durations):.2f} s, {voice_bytes / 2**20:.1f} MiB; portraits "
              f"{portrait_bytes / 2**20:.2f} MiB (max {max((PERSONAS / s / 'portrait.png').stat().st_size for s in slugs) // 1024} KB); "
              f"data/ total {total / 2**20:.1f} MiB")
    for p in problems:
        print("PROBLEM:", p)
    return problems
