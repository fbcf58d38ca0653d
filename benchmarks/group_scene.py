"""Group scene benchmark: a scripted 20-turn scene with three personas on the embedded default; time to first
token per turn (when the speaker changes and when it does not) and how often a reply speaks as another participant.

    python3 benchmarks/group_scene.py                        # mara, hale, pixel; 20 turns; llama.cpp
    python3 benchmarks/group_scene.py --turns 6 -s lm.kv_contexts=4 --json /tmp/scene.json

The scene goes to a throwaway database in a temp folder; the model cache is the usual one. Replies are
greedy. Per-turn lines go to stderr, the table and the summary to stdout.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from agent.agent import Agent  # noqa: E402
from agent.chat.scene import mentioned  # noqa: E402
from agent.chat.session import name_prefixes  # noqa: E402
from agent.config import load_config  # noqa: E402
from agent.paths import Home, resolve_home  # noqa: E402

# About half name who should answer; the rest leave it to the scene (talkativeness, seeded).
USER_TURNS = [
    "Good evening, all. I found this old map in a bottle on the beach.",
    "Captain Mara, can your ship take us to the island marked here?",
    "Professor Hale, what do you make of the drawings in the margin?",
    "Pixel, could a courier like you get us past the harbour guards?",
    "What does everyone think we should bring?",
    "Mara, how many crew do we need?",
    "And you, Professor, will you come along?",
    "The wind is rising. Should we leave tonight?",
    "Pixel, can you read the strange symbols near the compass rose?",
    "Hale, is that a beetle drawn next to the river?",
    "I think someone is following us.",
    "Captain, what do we do if the navy stops us?",
    "Pixel, you have gone quiet. What is on your mind?",
    "Let's rest here for the night. Any stories before we sleep?",
    "Professor, tell us about the strangest creature you ever found.",
    "Mara, have you ever sailed these waters before?",
    "The map says the treasure is under the old tree. Who will dig?",
    "Pixel, keep watch with your gadgets, please.",
    "Well done, everyone. What will you do with your share?",
    "Captain Mara, one last toast before we part?",
]


@dataclass
class Turn:
    text: str  # the user's message
    named: str  # the persona it names first ("" when none)
    speaker: str  # who answered
    switched: bool  # another persona spoke before this reply
    prompt_tokens: int
    prefill_tokens: int  # of those, how many ran (the rest came from the speaker's KV cache)
    ttft: float  # seconds from the call to the first generated token
    new_tokens: int
    cut_at: str  # the other participant's name that ended the reply ("" when none did)
    speaks_as_other: bool  # the kept reply still gives another participant a line ("Name:")
    reply: str


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", help="YAML config (default: the embedded default, SmolLM2-135M)")
    p.add_argument("-s", "--set", action="append", default=[], help="config override, as for personae: -s lm.kv_contexts=4")
    p.add_argument("--personas", default="mara,hale,pixel", help="comma-separated persona slugs (default mara,hale,pixel)")
    p.add_argument("--turns", type=int, default=len(USER_TURNS), help="user turns (the script repeats past 20)")
    p.add_argument("--max-new-tokens", type=int, default=48, help="reply length cap (default 48)")
    p.add_argument("--home", help="personae home whose cache/ holds the models (default: $PERSONAE_HOME, else XDG)")
    p.add_argument("--json", help="also write every figure to this file")
    args = p.parse_args(argv)
    if args.turns < 1 or args.max_new_tokens < 1:
        p.error("--turns and --max-new-tokens must be >= 1")
    return args


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def speaks_as_other(text: str, others: list[str]) -> bool:
    """Whether `text` holds 'Name:' for another participant anywhere (a line the stop strings did not catch)."""
    return any(prefix in text for name in others for prefix in name_prefixes(name) if len(prefix) > 4)


def run_scene(agent: Agent, slugs: list[str], turns: list[str]) -> list[Turn]:
    scene = agent.open_scene(slugs)
    results = []
    for i, text in enumerate(turns, 1):
        named = mentioned(text, scene.roster())
        for reply in scene.turn(text):  # scene.max_auto_turns=0: one reply per message
            reply.finish()
            st = reply.stats
            others = [name for slug, name in scene.names.items() if slug != reply.slug] + [scene.user_name]
            cut = st.stop_string.strip().rstrip(":") if st.stop_string.startswith("\n") and any(
                st.stop_string == f"\n{p}" for name in others for p in name_prefixes(name)) else ""
            turn = Turn(text, named[0] if named else "", reply.slug, reply.switched, st.prompt_tokens,
                        st.prefill_tokens, st.time_to_first_token, st.new_tokens, cut,
                        speaks_as_other(reply.text, others), reply.text)
            results.append(turn)
            log(f"turn {i:2d}/{len(turns)}: {reply.slug:6} {'switch' if turn.switched else 'same  '} prompt "
                f"{st.prompt_tokens:5d}, ran {st.prefill_tokens:5d}, TTFT {st.time_to_first_token:6.3f} s, "
                f"{st.new_tokens:3d} new{f', cut at {cut}' if cut else ''}")
    return results


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summary(turns: list[Turn]) -> dict:
    switch = [t for t in turns if t.switched]
    same = [t for t in turns if not t.switched]
    named = [t for t in turns if t.named]
    return {
        "turns": len(turns),
        "switch_turns": len(switch), "same_speaker_turns": len(same),
        "ttft_median_switch_s": _median([t.ttft for t in switch]),
        "ttft_median_same_s": _median([t.ttft for t in same]),
        "ttft_mean_s": statistics.mean(t.ttft for t in turns),
        "prefill_median_switch": _median([t.prefill_tokens for t in switch]),
        "prefill_median_same": _median([t.prefill_tokens for t in same]),
        "prefill_total": sum(t.prefill_tokens for t in turns),
        "named_answered_by_named": f"{sum(t.speaker == t.named for t in named)}/{len(named)}",
        "replies_cut_at_another_name": f"{sum(bool(t.cut_at) for t in turns)}/{len(turns)}",
        "replies_still_speaking_as_another": f"{sum(t.speaks_as_other for t in turns)}/{len(turns)}",
    }


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    overrides = [f"chat.max_new_tokens={args.max_new_tokens}", "chat.temperature=0", "scene.max_auto_turns=0",
                 "scene.seed=7", *args.set]
    config = load_config(args.config, overrides)
    real = resolve_home(args.home)
    with tempfile.TemporaryDirectory() as tmp:
        agent = Agent(config, home=Home(data=Path(tmp), cache=real.cache))
        start = time.perf_counter()
        _ = agent.chat_backend
        log(f"backend {agent.chat_backend.name} loaded in {time.perf_counter() - start:.1f} s; "
            f"KV cache {config.lm.kv_contexts} x {config.chat.context_tokens} tokens")
        warm = agent.open_session(args.personas.split(",")[0], save=False)
        for _ in warm.reply("Hello."):  # untimed: one-off costs off turn 1
            pass
        warm.close()
        script = [USER_TURNS[i % len(USER_TURNS)] for i in range(args.turns)]
        turns = run_scene(agent, args.personas.split(","), script)
        table = getattr(getattr(agent.chat_backend, "scheduler", None), "table", None)
        kv = {} if table is None else {"kv_spills": table.spill_count, "kv_restores": table.restore_count,
                                       "kv_recomputes_after_spill": table.recomputed}
    print(f"{'turn':>4} {'speaker':8} {'named':8} {'switch':6} {'prompt':>6} {'ran':>5} {'TTFT s':>7} {'new':>4}  cut at")
    for i, t in enumerate(turns, 1):
        print(f"{i:4d} {t.speaker:8} {t.named or '-':8} {'yes' if t.switched else 'no':6} {t.prompt_tokens:6d} "
              f"{t.prefill_tokens:5d} {t.ttft:7.3f} {t.new_tokens:4d}  {t.cut_at or '-'}")
    figures = {**summary(turns), **kv}
    for key, value in figures.items():
        print(f"{key}: {value:.3f}" if isinstance(value, float) else f"{key}: {value}")
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": figures, "turns": [asdict(t) for t in turns],
                                               "overrides": overrides}, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
