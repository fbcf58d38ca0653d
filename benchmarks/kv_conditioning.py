"""What embedding.conditioning=kv buys on the embedded default (llama.cpp): prompt tokens, time to first token
and how much history fits, against card and summary. Table to stdout, progress to stderr.

    python3 benchmarks/kv_conditioning.py --threads 1                 # mara, hale, pixel; 10 turns each
    python3 benchmarks/kv_conditioning.py --modes card,kv --turns 4 --json /tmp/kv.json

Per mode, each persona gets a fresh Agent (nothing cached) and one chat of --turns turns (greedy, replies
capped at --reply-tokens), then a second session of the same persona in the same Agent answers the first
turn (its persona's prefix or cells are shared, not recomputed). Measured: time to first token of turn 1
(cold: the card pass happens here; from the call to the first piece of text), of the second session's turn 1 (warm), and the median of turns 2..N;
prompt tokens at turn 1 and at turn N (kept cells count as prompt tokens); and with --window tokens of
context, how many of the chat's messages the last prompt could keep (history that fits).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from agent.agent import Agent  # noqa: E402
from agent.chat.prompt import Message  # noqa: E402
from agent.config import load_config  # noqa: E402

TURNS = [
    "Who are you, and where are you headed?",
    "Tell me about the people you trust most.",
    "What do you fear?",
    "Describe the place you call home.",
    "What was the hardest choice you ever made?",
    "What do you want from me?",
    "Tell me a story from your past.",
    "What would make you angry?",
    "What are you proud of?",
    "Say goodbye the way you would to a friend.",
]


def first_piece(session, turn: str) -> float:
    """Seconds from asking to the first piece of the reply (building the cells or the prefix included); the
    rest of the reply is read too."""
    began = time.perf_counter()
    first = None
    for _ in session.reply(turn):
        first = first or time.perf_counter() - began
    return first if first is not None else time.perf_counter() - began


def run_mode(mode: str, slug: str, args, home: Path) -> dict:
    overrides = [f"embedding.conditioning={mode}", f"lm.threads={args.threads}", "chat.temperature=0",
                 f"chat.max_new_tokens={args.reply_tokens}", "chat.guard=false", *args.set]
    agent = Agent(load_config(None, overrides), home=home / f"{mode}-{slug}")
    session = agent.open_session(slug, save=False)
    ttft, prompt_tokens = [], []
    for turn in TURNS[:args.turns]:
        ttft.append(first_piece(session, turn))
        prompt_tokens.append(session.last_stats.prompt_tokens)
        print(f"  {mode} {slug}: turn {len(ttft)} ttft {ttft[-1]:.2f} s, {prompt_tokens[-1]} prompt tokens",
              file=sys.stderr)
    warm = first_piece(agent.open_session(slug, save=False), TURNS[0])
    # history that fits: the same chat repeated until the prompt must drop turns, at --window tokens of context
    window = agent.open_session(slug, save=False)
    history = list(session.messages)
    window.chat = dataclasses.replace(window.chat, context_tokens=args.window)
    long_history = list(history)
    while len(long_history) < 400:  # the chat's turns again and again: far more than any window holds
        long_history += history[1:]
    prompt = window.prompt_for(long_history + [Message("user", TURNS[0])])
    kept = len(long_history) + 1 - prompt.dropped
    agent.close()
    return {"cold_ttft": ttft[0], "warm_ttft": warm, "later_ttft_median": statistics.median(ttft[1:]) if
            len(ttft) > 1 else None, "prompt_tokens_turn1": prompt_tokens[0], "prompt_tokens_last": prompt_tokens[-1],
            "messages_kept_in_window": kept, "ttft": ttft, "prompt_tokens": prompt_tokens}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", default="card,kv,summary")
    parser.add_argument("--personas", default="mara,hale,pixel")
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--reply-tokens", type=int, default=24)
    parser.add_argument("--window", type=int, default=2048, help="context tokens for the history-that-fits count")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("-s", "--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="personae-kv-bench-") as tmp:
        for mode in args.modes.split(","):
            for slug in args.personas.split(","):
                began = time.perf_counter()
                results.setdefault(mode, {})[slug] = run_mode(mode, slug, args, Path(tmp))
                print(f"{mode} {slug}: {time.perf_counter() - began:.0f} s", file=sys.stderr)
    keys = ["prompt_tokens_turn1", "prompt_tokens_last", "cold_ttft", "warm_ttft", "later_ttft_median",
            "messages_kept_in_window"]
    print(f"{'mode':<10} " + " ".join(f"{k:>24}" for k in keys))
    for mode, per in results.items():
        means = [statistics.mean(r[k] for r in per.values()) for k in keys]
        print(f"{mode:<10} " + " ".join(f"{v:>24.2f}" for v in means))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
