"""Long-chat recall: facts told early in a 200-turn chat, asked for late, with memory off and on.

    python3 benchmarks/long_chat_recall.py                    # embedded default, mara, 200 turns, both modes
    python3 benchmarks/long_chat_recall.py --turns 60 --json /tmp/recall.json

One process runs the same scripted chat twice on the embedded default (greedy): `memory.enabled=false`,
then `memory.enabled=true`. The first turns state facts (a name, a place, a number...); filler turns
follow until the facts have left a small context window (`--context-tokens`); the last turns ask for
each fact. A question counts as recalled when the reply contains one of its answer words.

Also printed per mode: seconds per turn (mean, median, p95), tokens run through the model per turn
(prefill; the rest of the prompt came from the KV cache), the share of the prompt reused from the cache,
and the time spent writing summaries. A small lorebook is attached to the persona, so lore changes
between turns too. `--placement-turns N` (default 24) also runs N turns with lore placed around the card
(`lore.placement=card`, SillyTavern's way) against `recent` (ours) and no lore, to show what each costs
the cache.
Progress goes to stderr, the table to stdout.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

import torch  # noqa: E402

from agent.agent import Agent  # noqa: E402
from agent.config import load_config  # noqa: E402
from agent.paths import Home, resolve_home  # noqa: E402

# (statement, question, answer words): the statement is one user turn early on, the question one late.
FACTS = [
    ("By the way, my name is Tobias Wren, and I was born in Falmouth.",
     "Do you still remember my full name?", ("tobias", "wren")),
    ("I should tell you: my little sister is called Marigold. She's why I need the money.",
     "What was my sister's name again?", ("marigold",)),
    ("I buried my savings, forty-two gold crowns, under the old oak behind the Anchor tavern.",
     "How many gold crowns did I say I buried?", ("forty-two", "42", "forty two")),
    ("Keep this between us: I'm terribly afraid of spiders. Always have been.",
     "What am I afraid of? I told you once.", ("spider",)),
    ("My father's ship was the Grey Heron. She went down off Cape Wrath.",
     "What was the name of my father's ship?", ("heron",)),
    ("The password the smugglers use at the cove is 'blue lantern'.",
     "What's the smugglers' password at the cove?", ("lantern",)),
    ("I play the fiddle. My mother taught me when I was six.",
     "Which instrument do I play?", ("fiddle", "violin")),
    ("My lucky number is seventeen. I carve it on every hull I work on.",
     "What's my lucky number?", ("seventeen", "17")),
]
FILLER = [
    "What's the weather looking like today?", "Tell me about the crew.", "How long until we reach port?",
    "What do sailors eat on long voyages?", "Have you ever seen a whale?", "What's the hardest knot to tie?",
    "Do you trust the new navigator?", "What was your worst storm?", "Why do sailors sing when they work?",
    "What's in the hold this trip?", "How do you keep the powder dry?", "Do you believe in sea monsters?",
    "What's the best port for trading?", "How did you get that scar?", "Should we take on fresh water here?",
    "What's the fastest ship you've sailed?", "How do you read the stars?", "What happens to deserters?",
    "Do you have family ashore?", "What's the first rule of the sea?", "How much is a share of the prize?",
    "Is the cook any good?", "Where did you learn to fence?", "What do you think of the governor?",
    "Can you teach me to navigate?", "Tell me about Havana.", "What's the strangest cargo you've carried?",
    "Have you ever been shipwrecked?", "What do you do when the wind dies?", "Who was your first captain?",
]
LORE = {
    "name": "Caribbean waters", "scan_depth": 2, "token_budget": 200,
    "entries": [
        {"keys": ["havana"], "content": "Havana: Spanish port, heavily guarded; the governor hangs pirates at dawn.",
         "insertion_order": 10, "enabled": True},
        {"keys": ["storm", "wind"], "content": "Hurricane season runs from June to November in these waters.",
         "insertion_order": 20, "enabled": True},
        {"keys": ["crew", "navigator", "cook"], "content": "The Kestrel's crew: Old Finn (cook), Ana Reyes "
         "(navigator), the Dutch twins (gunners).", "insertion_order": 30, "enabled": True},
        {"keys": ["governor"], "content": "Governor Alvarez of Havana has a price on Mara's head.",
         "insertion_order": 40, "enabled": True},
    ],
}


def script(turns: int) -> list[tuple[str, tuple[str, ...]]]:
    """User turns: facts first, filler, then the questions (answer words; () for other turns)."""
    if turns < 2 * len(FACTS) + 1:
        raise SystemExit(f"--turns must be at least {2 * len(FACTS) + 1}")
    middle = turns - 2 * len(FACTS)
    out = [(s, ()) for s, _, _ in FACTS]
    out += [(FILLER[i % len(FILLER)], ()) for i in range(middle)]
    out += [(q, answers) for _, q, answers in FACTS]
    return out


def run(agent: Agent, persona: str, turns: list[tuple[str, tuple[str, ...]]], label: str) -> dict:
    session = agent.open_session(persona)
    rows, hits = [], []
    summary_time = 0.0
    summarize = session.context.summarize if session.context is not None else None
    if summarize is not None:
        def timed(previous, texts):
            nonlocal summary_time
            t = time.perf_counter()
            try:
                return summarize(previous, texts)
            finally:
                summary_time += time.perf_counter() - t
        session.context.summarize = timed
    start = time.perf_counter()
    for i, (text, answers) in enumerate(turns):
        t = time.perf_counter()
        reply = "".join(session.reply(text)).strip()
        elapsed = time.perf_counter() - t
        st = session.last_stats
        rows.append({"turn": i + 1, "seconds": elapsed, "prompt_tokens": st.prompt_tokens,
                     "prefill_tokens": st.prefill_tokens, "new_tokens": st.new_tokens})
        if answers:
            hit = any(a in reply.lower() for a in answers)
            recalled = [r.item.text for r in session.context.report.recalled] if session.context is not None else []
            hits.append({"question": text, "answers": answers, "reply": reply, "recalled": hit,
                         "memories_recalled": [t[:60] for t in recalled],
                         "retrieved": any(a in t.lower() for t in recalled for a in answers)})
        if (i + 1) % 10 == 0 or answers:
            print(f"[{label}] turn {i + 1}/{len(turns)}  {elapsed:.1f}s  prompt {st.prompt_tokens}  "
                  f"ran {st.prefill_tokens}" + (f"  recalled={hits[-1]['recalled']}" if answers else ""),
                  file=sys.stderr, flush=True)
    seconds = [r["seconds"] for r in rows]
    prompt = sum(r["prompt_tokens"] for r in rows)
    ran = sum(r["prefill_tokens"] for r in rows)
    memory = session.memory_snapshot() if session.context is not None and session.context.store is not None else {}
    return {"label": label, "recall": sum(h["recalled"] for h in hits) / len(hits) if hits else None, "questions": hits,
            "total_seconds": time.perf_counter() - start, "turn_mean": statistics.mean(seconds),
            "turn_median": statistics.median(seconds),
            "turn_p95": sorted(seconds)[max(0, int(round(0.95 * len(seconds))) - 1)],
            "prefill_mean": ran / len(rows), "prompt_mean": prompt / len(rows), "reused": 1 - ran / max(prompt, 1),
            "retrieved": sum(h["retrieved"] for h in hits) / len(hits) if hits else None,
            "summary_seconds": summary_time, "archived_turns": memory.get("archived_turns", 0),
            "summary": memory.get("summary", ""), "rows": rows}


def build_agent(args, home: Home, overrides: list[str]) -> Agent:
    common = ["chat.temperature=0", f"chat.max_new_tokens={args.max_new_tokens}",
              f"chat.context_tokens={args.context_tokens}"]
    if args.threads:
        common.append(f"lm.threads={args.threads}")
    return Agent(load_config(args.config, common + overrides), home=home)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=None, help="YAML config (default: the embedded default)")
    ap.add_argument("--persona", default="mara")
    ap.add_argument("--turns", type=int, default=200)
    ap.add_argument("--context-tokens", type=int, default=1536, help="small, so history presses on the window")
    ap.add_argument("--max-new-tokens", type=int, default=40)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's choice)")
    ap.add_argument("--placement-turns", type=int, default=24, help="turns for the lore placement comparison (0: skip)")
    ap.add_argument("--home", type=Path, default=None, help="personae home whose model cache to use")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    cache = resolve_home(args.home).cache
    with tempfile.TemporaryDirectory(prefix="personae-recall-") as tmp:
        home = Home(data=Path(tmp), cache=cache)  # sessions in a throwaway database, models from the usual cache
        lore_file = Path(tmp) / "caribbean.json"
        lore_file.write_text(json.dumps(LORE))
        turns = script(args.turns)
        results = {}
        for label, overrides in (("memory off", ["memory.enabled=false"]), ("memory on", ["memory.enabled=true"])):
            agent = build_agent(args, home, overrides)
            if not agent.lore.names():
                agent.lore.import_file(lore_file)
                agent.lore.attach(agent.persona(args.persona).slug, "caribbean-waters")
            results[label] = run(agent, args.persona, turns, label)
        placement = {}
        if args.placement_turns:
            short = [(FILLER[i % len(FILLER)], ()) for i in range(args.placement_turns)]
            for where in ("off", "recent", "card"):
                lore = ["lore.enabled=false"] if where == "off" else [f"lore.placement={where}"]
                agent = build_agent(args, home, ["memory.enabled=false", *lore])
                placement[where] = run(agent, args.persona, short, f"lore {where}")

    print(f"\nlong-chat recall: {args.turns} turns, persona {args.persona}, context {args.context_tokens} tokens, "
          f"replies <= {args.max_new_tokens} tokens, greedy, torch threads {torch.get_num_threads()}")
    print(f"{'mode':12} {'recall':>8} {'s/turn mean':>12} {'median':>8} {'p95':>7} {'ran/turn':>9} "
          f"{'prompt/turn':>12} {'reused':>7} {'summaries s':>12} {'archived':>9}")
    for r in [*results.values(), *placement.values()]:
        recall = f"{r['recall']:.2f}" if r["questions"] else "-"
        print(f"{r['label']:12} {recall:>8} {r['turn_mean']:12.2f} {r['turn_median']:8.2f} {r['turn_p95']:7.2f} "
              f"{r['prefill_mean']:9.1f} {r['prompt_mean']:12.1f} {r['reused']:7.1%} {r['summary_seconds']:12.1f} "
              f"{r['archived_turns']:9d}")
    off, on = results["memory off"], results["memory on"]
    print(f"\nrecall {off['recall']:.2f} -> {on['recall']:.2f} with memory (the fact was among the recalled turns "
          f"for {on['retrieved']:.0%} of the questions); per-turn cost "
          f"{on['turn_mean'] - off['turn_mean']:+.2f} s mean ({on['turn_mean'] / off['turn_mean']:.2f}x), "
          f"{on['prefill_mean'] - off['prefill_mean']:+.1f} tokens run per turn")
    for q_off, q_on in zip(off["questions"], on["questions"]):
        print(f"  {q_off['question'][:44]:44} off {'yes' if q_off['recalled'] else 'no ':3}  on "
              f"{'yes' if q_on['recalled'] else 'no ':3}  | {q_on['reply'][:60]!r}")
    if placement:
        print(f"lore over {args.placement_turns} turns, tokens run per turn (cache reuse): "
              + ", ".join(f"{w} {placement[w]['prefill_mean']:.1f} ({placement[w]['reused']:.1%})"
                          for w in ("off", "recent", "card")))
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results,
                                         "placement": placement}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
