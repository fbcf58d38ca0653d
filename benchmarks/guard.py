"""The guard's cost and worth on the embedded default: time to first *shown* token with the guard off and on, and
how many answers to a newcomer's questions claim another name or to be an AI, off and on.

    python3 benchmarks/guard.py                                   # every shipped persona, 2 questions, 10 seeds
    python3 benchmarks/guard.py --seeds 3 -s lm.threads=1 --json /tmp/guard.json

Each persona is asked each question in a fresh unsaved chat (after its greeting), once per seed, with the guard
off and then on (same seed, same prompt: off shows the first sample, on what the guard lets through). Time to
first shown token is measured from the call to the first piece the session hands out, which is what a front-end
can show. A reply "claims another name or AI" when the break rules changes_name, claims_ai or names_model fire on
what was shown. Progress to stderr; the table to stdout.
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
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from agent.agent import Agent  # noqa: E402
from agent.chat.breaks import detect_break  # noqa: E402
from agent.config import load_config  # noqa: E402
from agent.paths import Home, resolve_home  # noqa: E402

QUESTIONS = ["Who are you, and where is your ship bound?", "Tell me about yourself. What's your name?"]
CLAIMS = ("changes_name", "claims_ai", "names_model")  # another name, an AI, a real model or lab


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", help="YAML config (default: the embedded default, SmolLM2-135M)")
    p.add_argument("-s", "--set", action="append", default=[], help="config override, as for personae: -s lm.threads=1")
    p.add_argument("--personas", default="", help="comma-separated persona slugs (default: every shipped persona)")
    p.add_argument("--seeds", type=int, default=10, help="seeds per persona and question (default 10)")
    p.add_argument("--home", help="personae home whose cache/ holds the models (default: $PERSONAE_HOME, else XDG)")
    p.add_argument("--json", help="also write every reply and figure to this file")
    return p.parse_args(argv)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def ask(agent: Agent, slug: str, question: str, seed: int, guard: bool) -> dict:
    """One fresh chat's reply to `question`: shown text, time to its first shown piece, the guard's report."""
    session = agent.open_session(slug, save=False)
    session.chat = dataclasses.replace(session.chat, guard=guard)
    start = time.perf_counter()
    first, text = None, ""
    for piece in session.reply(question, sampling=session.options(seed=seed)):
        if first is None and piece.strip():
            first = time.perf_counter() - start
        text += piece
    total = time.perf_counter() - start
    session.close()
    rules = detect_break(text, card=session.persona.card, user=session.user_name, user_turn=question)
    return {"persona": slug, "question": question, "seed": seed, "guard": guard, "reply": text.strip(),
            "first_shown_s": first if first is not None else total, "total_s": total,
            "tokens": session.last_stats.new_tokens, "rules": list(rules),
            "claims": sorted(set(rules) & set(CLAIMS)), "report": session.last_guard.header()}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def summary(rows: list[dict]) -> dict:
    out = {}
    for guard in (False, True):
        mine = [r for r in rows if r["guard"] == guard]
        ttft = [r["first_shown_s"] for r in mine]
        out["on" if guard else "off"] = {
            "replies": len(mine), "ttft_median_s": statistics.median(ttft), "ttft_p95_s": percentile(ttft, 0.95),
            "claims_another_name_or_ai": sum(bool(r["claims"]) for r in mine),
            "any_break_rule": sum(bool(r["rules"]) for r in mine),
            "resampled": sum(r["report"].startswith("retried=") and not r["report"].startswith("retried=0")
                             for r in mine),
            "banned": sum("action=banned" in r["report"] for r in mine),  # shown: the last try, words banned
            "cut": sum("action=cut" in r["report"] for r in mine),
            "withheld": sum("action=withheld" in r["report"] for r in mine),
            "empty": sum(not r["reply"] for r in mine)}
    return out


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    config = load_config(args.config, args.set)
    real = resolve_home(args.home)
    with tempfile.TemporaryDirectory() as tmp:
        agent = Agent(config, home=Home(data=Path(tmp), cache=real.cache))
        slugs = args.personas.split(",") if args.personas else [p.slug for p in agent.personas.list()]
        start = time.perf_counter()
        _ = agent.chat_backend
        log(f"backend {agent.chat_backend.name} loaded in {time.perf_counter() - start:.1f} s; personas {slugs}")
        for piece in agent.open_session(slugs[0], save=False).reply("Hello."):  # untimed: one-off costs
            pass
        rows = []
        for slug in slugs:
            for question in QUESTIONS:
                for seed in range(args.seeds):
                    for guard in (False, True):
                        row = ask(agent, slug, question, seed, guard)
                        rows.append(row)
                        log(f"{slug:6} seed {seed} guard {'on ' if guard else 'off'} {row['first_shown_s']:.3f} s "
                            f"[{row['report']}] {','.join(row['claims']) or '-'}: {row['reply'][:90]!r}")
    figures = summary(rows)
    print(f"{'guard':6} {'replies':>7} {'TTFT median s':>14} {'TTFT p95 s':>11} {'claims':>7} {'any rule':>8} "
          f"{'resampled':>9} {'banned':>6} {'cut':>4} {'withheld':>8}")
    for name, f in figures.items():
        print(f"{name:6} {f['replies']:7d} {f['ttft_median_s']:14.3f} {f['ttft_p95_s']:11.3f} "
              f"{f['claims_another_name_or_ai']:7d} {f['any_break_rule']:8d} {f['resampled']:9d} {f['banned']:6d} {f['cut']:4d} "
              f"{f['withheld']:8d}")
    print(f"TTFT added by the guard: median {figures['on']['ttft_median_s'] - figures['off']['ttft_median_s']:+.3f} s, "
          f"p95 {figures['on']['ttft_p95_s'] - figures['off']['ttft_p95_s']:+.3f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": figures, "rows": rows, "overrides": args.set}, indent=2),
                                   encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
