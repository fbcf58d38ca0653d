"""Builds the persona-embedding training data under data/: personas, portraits, voices, turns, splits.

Everything is made from the hand-written sources in data/sources/ and is deterministic: a rerun with
the same package versions rewrites the same bytes.

* data/personas/<slug>/persona.yaml: the hand-written personas (sources/handwritten_personas.yaml) and
  N_PROCEDURAL personas composed from sources/components.yaml with random.Random(SEED);
* portrait.png: 224x224, drawn with Pillow from each persona's `look`, 64-colour PNG;
* voice.wav: one in-character line, 16 kHz mono 16-bit, 3-6 s, spoken by Piper (en_US-joe-medium) or
  espeak-ng, then trimmed, pitch-shifted, time-fitted and resampled with sox (dither off);
* data/user_turns.yaml from sources/user_turns.txt; data/splits.yaml (fixed SPLIT_SEED);
* data/manifest.yaml: every file, how it was made, its size and sha256.

data/reference_lines.yaml is hand-written and only checked here (it must cover every held-out persona).

    python3 scripts/make_training_data.py            # everything, then --check
    python3 scripts/make_training_data.py --only text   # cards, turns, splits (no portraits/voices)
    python3 scripts/make_training_data.py --check    # validate what is on disk
    python3 scripts/make_training_data.py --scale 2000   # the scaled training set in data/scaled (not committed)

The code is the package scripts/persona_data/ (one module per job); this file is its entry point.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from scripts.persona_data.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
