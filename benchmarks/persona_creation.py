"""Measures `personae persona create` on the 20 held-out ideas of benchmarks/creation_ideas.txt and prints the table.

For each idea it creates a persona with the chat backend of the config (the embedded default: SmolLM2-135M on
llama.cpp) in a temporary home, then reports:
- validity: the draft validates against agent/creation/schema.py and the saved persona loads (target 100 %);
- seconds per card, and how many fields the budget cut off (closed afterwards; the card stays valid);
- distinctness: `personae eval`'s identification (card mode, agent/evaluation/metrics.py) over the created
  personas, on the lines each persona's own examples and alternate greetings hold, with those lines taken out
  of the card it is shown (so they are predicted from the description, personality, scenario and greeting);
  chance is 1 / the number of personas;
- contradictions: agent/creation/check.py's rules (era, age, off-topic), and copies of the worked example.

    python3 benchmarks/persona_creation.py                   # embedded default, 20 ideas
    python3 benchmarks/persona_creation.py --limit 3 -s lm.threads=1 --json /tmp/creation.json
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

IDEAS = Path(__file__).with_name("creation_ideas.txt")


def read_ideas(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.startswith("#")]


def references(persona):
    """The persona's own lines: each example's reply (to its user line) and each alternate greeting (to "Hello.")."""
    from agent.evaluation.data import ReferenceLine
    from agent.persona.macros import split_examples, substitute

    card, out = persona.card, []
    for block in split_examples(card.mes_example):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "{{user}}" in lines and "{{char}}" in lines:
            out.append(ReferenceLine(to=substitute(lines["{{user}}"], char=card.name, user="User"),
                                     text=substitute(lines["{{char}}"], char=card.name, user="User")))
    out += [ReferenceLine(to="Hello.", text=substitute(g, char=card.name, user="User"))
            for g in card.alternate_greetings]
    return out


def distinctness(agent, personas) -> dict:
    from agent.conditioning import MODES
    from agent.evaluation.conditioning import Conditioning
    from agent.evaluation.metrics import identification

    refs = {p.slug: references(p) for p in personas}
    shown = [dataclasses.replace(p, card=dataclasses.replace(p.card, mes_example="", alternate_greetings=()))
             for p in personas]
    result = identification(agent.lm, Conditioning("card", MODES["card"]), shown, refs, user="User", progress=True)
    return {**result, "chance": 1 / len(personas)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-c", "--config", type=Path, default=None)
    ap.add_argument("-s", "--set", action="append", default=[], help="config override, e.g. lm.threads=1")
    ap.add_argument("--ideas", type=Path, default=IDEAS)
    ap.add_argument("--limit", type=int, default=0, help="only the first N ideas")
    ap.add_argument("--seed", type=int, default=0, help="idea i is created with seed SEED + i")
    ap.add_argument("--no-distinctness", action="store_true", help="skip the identification run (transformers LM)")
    ap.add_argument("--json", type=Path, default=None, help="also write every card's figures here")
    args = ap.parse_args()

    from agent.agent import Agent
    from agent.config import load_config
    from agent.creation.check import contradictions, copied_example
    from agent.creation.schema import validate_draft
    from agent.paths import Home, resolve_home
    from agent.persona.store import load_persona

    ideas = read_ideas(args.ideas)[: args.limit or None]
    config = load_config(args.config, args.set)
    rows, personas = [], []
    with tempfile.TemporaryDirectory(prefix="personae-creation-") as tmp:
        agent = Agent(config, home=Home(data=Path(tmp), cache=resolve_home(None).cache))  # the user's model caches
        agent.chat_backend  # loaded before the clock starts
        for i, idea in enumerate(ideas):
            start = time.perf_counter()
            row = {"idea": idea, "seed": args.seed + i}
            try:
                created = agent.create_persona(idea, seed=args.seed + i)
                validate_draft(created.draft.values)
                persona = load_persona(created.persona.folder)
                row.update(valid=True, name=persona.name, cut_fields=len(created.draft.cut),
                           repaired_fields=len(created.draft.repaired),
                           contradictions=contradictions(idea, created.draft.values),
                           copied_example=copied_example(created.draft.values),
                           era=created.draft.values["era"], age=created.draft.values["age"])
                personas.append(persona)
            except Exception as e:  # noqa: BLE001 - an invalid card is what this counts
                row.update(valid=False, error=f"{type(e).__name__}: {e}")
            row["seconds"] = time.perf_counter() - start
            rows.append(row)
            print(f"[{i + 1}/{len(ideas)}] {row['seconds']:.1f} s {row.get('name', row.get('error'))}: "
                  f"{'; '.join(row.get('contradictions', [])) or 'no contradiction'}", file=sys.stderr, flush=True)
        ident = distinctness(agent, personas) if personas and not args.no_distinctness else None

    valid = [r for r in rows if r["valid"]]
    seconds = [r["seconds"] for r in rows]
    contradicting = [r for r in valid if r["contradictions"]]
    kinds = {k: sum(any(c.startswith(k) for c in r["contradictions"]) for r in valid) for k in ("era", "age", "off-topic")}
    model = Path(config.lm.name_or_path).name
    print(f"\npersona creation on {len(rows)} held-out ideas ({args.ideas.name}), {model}, "
          f"backend {agent.chat_backend.name}\n")
    print("| measure | value | target |")
    print("|---|---|---|")
    print(f"| valid cards | {len(valid)}/{len(rows)} ({100 * len(valid) / len(rows):.0f} %) | 100 % |")
    print(f"| seconds per card (median, max) | {statistics.median(seconds):.1f}, {max(seconds):.1f} | |")
    print(f"| fields cut by their budget, per card (mean of {sum(1 for _ in valid)}) | "
          f"{statistics.mean(r['cut_fields'] for r in valid):.1f} of 25 | |" if valid else "| fields cut | - | |")
    if valid:
        print(f"| fields closed or replaced after writing, per card | "
              f"{statistics.mean(r['repaired_fields'] for r in valid):.1f} of 25 | 0 |")
    if ident:
        print(f"| distinctness: identification accuracy, card mode ({ident['lines']} lines) | "
              f"{ident['identification_accuracy']:.3f} (chance {ident['chance']:.3f}) | above chance |")
    print(f"| cards contradicting their idea | {len(contradicting)}/{len(valid)} (era {kinds['era']}, "
          f"age {kinds['age']}, off-topic {kinds['off-topic']}) | |")
    print(f"| cards reusing a name of the worked example | {sum(r['copied_example'] for r in valid)}/{len(valid)} | |")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "identification": ident}, indent=1, default=str))
    return 0 if len(valid) == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
