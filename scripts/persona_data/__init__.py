"""Builds the persona-embedding training data under data/ from the hand-written sources in data/sources/.

    sources.py     where data/ and the sources are, reading them
    text.py        number words, articles, slugs, template filling
    compose.py     procedural personas from the component lists (Composer)
    cards.py       persona.yaml and YAML writing
    canvas.py, backgrounds.py, portraits.py    portraits drawn with Pillow
    voices.py      voice samples: Piper or espeak-ng, then sox
    splits.py      user_turns.yaml and splits.yaml
    manifest.py    manifest.yaml (sizes, sha256)
    dataset.py     the data set of data/personas: which personas, writing text, portraits, voices
    check.py       validates data/ on disk
    scale.py, augment.py, lines.py    the scaled training set (thousands of personas, held-back target lines)
    cli.py         the command line of scripts/make_training_data.py
"""
