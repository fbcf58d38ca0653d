"""The command line of scripts/make_training_data.py: builds data/, checks it, or writes the scaled training set.

data/: text (cards, turns, splits), portraits, voices, manifest. `--scale N`: scale.py.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .check import check
from .dataset import all_personas, write_portraits, write_text, write_voices
from .manifest import write_manifest
from .sources import DATA


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=["text", "portraits", "voices"], help="rebuild just one part (text = cards, turns, splits)")
    ap.add_argument("--check", action="store_true", help="only validate what is on disk")
    ap.add_argument("--data", type=Path, default=DATA, help="where data/ is written (default: the checkout's data/)")
    ap.add_argument("slugs", nargs="*", help="limit portraits/voices to these personas")
    scale = ap.add_argument_group("scaled training set (data/README.md, 'Scaled set')")
    scale.add_argument("--scale", type=int, metavar="N", help="write N scaled procedural personas to --out instead")
    scale.add_argument("--out", type=Path, help="folder of the scaled set (default: data/scaled)")
    scale.add_argument("--seed", type=int, help="composes the scaled personas (default: scale.SCALE_SEED)")
    scale.add_argument("--media", choices=["none", "portraits", "voices"], default="portraits",
                       help="scaled personas get portraits (default), portraits and voices, or text only")
    scale.add_argument("--rename", type=int, default=0, metavar="K", help="K renamed copies of each scaled persona")
    scale.add_argument("--shuffle", type=int, default=0, metavar="K", help="K copies with their sentences shuffled")
    scale.add_argument("--drop", type=int, default=0, metavar="K", help="K copies with one field dropped")
    scale.add_argument("--augment-seed", type=int, default=0, help="seeds the renaming, shuffling and dropping")
    return ap


def main(argv=None):
    args = parser().parse_args(argv)
    if args.scale is not None:
        from .scale import ScaleConfig, write_scaled
        config = ScaleConfig.from_args(args)
        write_scaled(config, args.out or args.data / "scaled")
        return
    if args.check:
        sys.exit(1 if check(args.data) else 0)
    t0 = time.time()
    personas = all_personas()
    todo = [p for p in personas if not args.slugs or p["slug"] in args.slugs]
    folders = args.data / "personas"
    if args.only in (None, "text"):
        write_text(args.data, personas)
        print(f"cards, turns, splits: {time.time() - t0:.1f} s")
    if args.only in (None, "portraits"):
        t = time.time()
        write_portraits(folders, todo)
        print(f"portraits: {len(todo)} in {time.time() - t:.1f} s")
    voice_info = {}
    if args.only in (None, "voices"):
        t = time.time()
        voice_info = write_voices(folders, todo)
        print(f"voices: {len(todo)} in {time.time() - t:.1f} s")
    if args.only is None and not args.slugs:
        write_manifest(args.data, personas, voice_info)
        print(f"total: {time.time() - t0:.1f} s")
        sys.exit(1 if check(args.data) else 0)
