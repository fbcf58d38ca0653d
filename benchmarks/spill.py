"""Spilled vs recomputed sessions: 8 sessions take turns round robin on the embedded default with a KV cache
too small for all of them (lm.kv_contexts=2), so each returning session has been pushed out of the cache by the
others. With spilling (the default) its KV state waits in RAM and is restored; with lm.spill_ram_mb=0 (and
unsaved sessions, which have no disk file) it is dropped and the prompt recomputed, as before the scheduler.

    python3 benchmarks/spill.py                 # 8 sessions, 3 rounds, both modes in one run
    python3 benchmarks/spill.py --sessions 6 --rounds 2 -s lm.threads=1

Prints, per mode, the median and p95 time to first token of the returning turns and the prompt tokens they ran.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from agent.agent import Agent  # noqa: E402
from agent.config import load_config  # noqa: E402
from agent.paths import Home, resolve_home  # noqa: E402

PERSONAS = ["mara", "hale", "pixel"]
OPENING = ("I have come a long way to find you, and I have many questions about your life, your work, the people "
           "you trust and the places you have seen. Tell me first, in a few words, who you are and what you are "
           "doing here today, and then what you fear most when the night comes. ") * 3
FOLLOW_UPS = ["And what happened next?", "Who else was there with you?", "Would you do it again?",
              "What did you learn from it?"]


def run(overrides: list[str], sessions: int, rounds: int, label: str) -> dict:
    config = load_config(None, ["lm.kv_contexts=2", "chat.temperature=0", "chat.max_new_tokens=16",
                                "memory.enabled=false", "lore.enabled=false", *overrides])
    with tempfile.TemporaryDirectory() as tmp:
        home = Home(data=Path(tmp), cache=resolve_home(None).cache)
        agent = Agent(config, home=home)
        backend = agent.chat_backend
        if backend.name != "llamacpp":
            sys.exit(f"this benchmark needs the llama.cpp backend, got {backend.name}")
        opened = [agent.open_session(PERSONAS[i % len(PERSONAS)], save=False) for i in range(sessions)]
        returning = []
        for r in range(rounds):
            for i, session in enumerate(opened):
                text = OPENING if r == 0 else FOLLOW_UPS[(r + i) % len(FOLLOW_UPS)]
                start = time.perf_counter()
                "".join(session.reply(text))
                stats = session.last_stats
                if r > 0:
                    returning.append((stats.time_to_first_token, stats.prefill_tokens, stats.prompt_tokens))
                print(f"[{label}] round {r + 1} session {i + 1}: prompt {stats.prompt_tokens}, ran "
                      f"{stats.prefill_tokens}, TTFT {stats.time_to_first_token:.2f} s "
                      f"({time.perf_counter() - start:.2f} s whole)", file=sys.stderr)
        table = backend.scheduler.table
        result = {"ttft": [t for t, _, _ in returning], "ran": [n for _, n, _ in returning],
                  "prompt": [p for _, _, p in returning], "spilled": table.spill_count,
                  "restored": table.restore_count, "recomputed": table.recomputed}
        agent.close()
        return result


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("-s", "--set", action="append", default=[], help="config override key=value")
    args = parser.parse_args()
    spilled = run(args.set, args.sessions, args.rounds, "spill")
    recomputed = run([*args.set, "lm.spill_ram_mb=0"], args.sessions, args.rounds, "recompute")
    print(f"{args.sessions} sessions round robin, {args.rounds - 1} returning turns each, lm.kv_contexts=2")
    print(f"{'mode':<12}{'median TTFT':>13}{'p95 TTFT':>10}{'median ran':>12}{'median prompt':>15}"
          f"{'spills':>8}{'restores':>10}{'recomputes':>12}")
    for label, r in (("spill", spilled), ("recompute", recomputed)):
        print(f"{label:<12}{statistics.median(r['ttft']):>12.2f}s{p95(r['ttft']):>9.2f}s"
              f"{statistics.median(r['ran']):>12.0f}{statistics.median(r['prompt']):>15.0f}"
              f"{r['spilled']:>8}{r['restored']:>10}{r['recomputed']:>12}")
    ratio = statistics.median(spilled["ttft"]) / statistics.median(recomputed["ttft"])
    print(f"spilled / recomputed median TTFT: {ratio:.2f}x (target <= 0.2x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
