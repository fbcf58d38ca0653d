"""Decoding settings judged on the validation split: break rate and reply identification per (temperature, top_p,
min_p, repetition penalty), with the guard off, so the settings are judged on what the model itself samples.

    python3 benchmarks/decoding_validation.py -s lm.threads=1                  # the default small grid
    python3 benchmarks/decoding_validation.py --turns 2 --grid 0.7,0.9,0,1.1 --grid 0.5,0.9,0.05,1.1

Personas: the last 12 train personas of data/splits.yaml (the ones `personae train -t val_personas=12` and
benchmarks/validation_identification.py leave out of training), with their full cards, as chat shows them; never
the held-out personas. Turns: the adversarial turns of data/user_turns.yaml, dealt out per persona as
`personae eval` deals them (a seeded order); each reply is a fresh one-turn chat, eval.reply_tokens (48) long, seeded
per (persona, turn) so every grid point answers the same questions with the same seeds.
  break rate      share of replies any break rule fires on (agent/chat/breaks.py, as `personae eval` counts
                  them: the system turn for reveals_prompt, a user-line stop for speaks_as_user)
  reply ident     share of replies whose MiniLM embedding is closer to their own persona's card description than
                  to any other validation persona's (chance 1/12): whether sampling keeps replies recognisable.
                  personae eval's identification scores fixed reference lines by log-probability and does not
                  depend on sampling at all, so it cannot tell these settings apart.
Progress to stderr; the table to stdout.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from agent.agent import Agent  # noqa: E402
from agent.chat.breaks import detect_break  # noqa: E402
from agent.chat.prompt import Message  # noqa: E402
from agent.config import load_config, read_yaml_mapping  # noqa: E402
from agent.paths import Home, resolve_home  # noqa: E402
from agent.persona.macros import substitute  # noqa: E402

VAL_PERSONAS = 12  # as benchmarks/validation_identification.py
# (temperature, top_p, min_p, repetition_penalty): today's default, then one setting moved at a time
GRID = [(0.7, 0.9, 0.0, 1.1), (0.5, 0.9, 0.0, 1.1), (0.3, 0.9, 0.0, 1.1), (0.7, 0.8, 0.0, 1.1),
        (0.7, 0.9, 0.1, 1.1), (0.7, 0.9, 0.0, 1.2)]


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", help="YAML config (default: the embedded default, SmolLM2-135M)")
    p.add_argument("-s", "--set", action="append", default=[], help="config override, as for personae: -s lm.threads=1")
    p.add_argument("--data", default=str(ROOT / "data"), help="the data folder (data/README.md layout)")
    p.add_argument("--turns", type=int, default=2, help="adversarial turns per persona (default 2)")
    p.add_argument("--reply-tokens", type=int, default=48, help="tokens per reply (default 48, as personae eval)")
    p.add_argument("--grid", action="append", default=[], help="T,top_p,min_p,penalty (repeatable; default: GRID)")
    p.add_argument("--seed", type=int, default=0, help="fixes the turn order and the reply seeds")
    p.add_argument("--home", help="personae home whose cache/ holds the models (default: $PERSONAE_HOME, else XDG)")
    p.add_argument("--json", help="also write every reply and figure to this file")
    return p.parse_args(argv)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def validation_cases(data: Path, turns: int, seed: int) -> list[tuple[Path, str]]:
    """(persona folder, adversarial turn) pairs: each validation persona gets `turns` of them, dealt in a seeded order."""
    splits = read_yaml_mapping(data / "splits.yaml", "training data")
    folders = [data / "personas" / slug for slug in list(splits["personas"]["train"])[-VAL_PERSONAS:]]
    pool = read_yaml_mapping(data / "user_turns.yaml", "training data")
    order = [t["text"] for t in sorted(pool["adversarial"], key=lambda t: t["id"])]
    random.Random(f"adversarial-{seed}").shuffle(order)
    return [(folder, order[(p * turns + j) % len(order)]) for p, folder in enumerate(folders) for j in range(turns)]


def reply(agent: Agent, folder: Path, turn: str, point: tuple, tokens: int, seed: int) -> dict:
    temperature, top_p, min_p, penalty = point
    session = agent.open_session(str(folder), save=False)
    session.chat = dataclasses.replace(session.chat, guard=False)
    options = session.options(temperature=temperature, top_p=top_p, min_p=min_p, repetition_penalty=penalty,
                              max_new_tokens=tokens, seed=zlib.crc32(f"{seed}/{folder.name}/{turn}".encode()))
    text = "".join(session.reply(turn, sampling=options)).strip()
    system = session.prompt_for([Message("user", turn)]).messages[0]["content"]
    rules = detect_break(text, card=session.persona.card, user=session.user_name, user_turn=turn, system_text=system,
                         wrote_user_line=session.last_stats.stopped_by == "stop string")
    session.close()
    return {"persona": folder.name, "turn": turn, "reply": text, "rules": list(rules)}


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    grid = [tuple(float(x) for x in g.split(",")) for g in args.grid] or GRID
    config = load_config(args.config, args.set)
    cases = validation_cases(Path(args.data), args.turns, args.seed)
    real = resolve_home(args.home)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        agent = Agent(config, home=Home(data=Path(tmp), cache=real.cache))
        _ = agent.chat_backend
        folders = list(dict.fromkeys(folder for folder, _ in cases))
        cards = {f.name: agent.persona(str(f)).card for f in folders}
        descriptions = [substitute(cards[f.name].description, char=cards[f.name].name, user="User") for f in folders]
        embed = agent.embedder()
        card_vectors = embed(descriptions)  # (12, 384), unit
        for point in grid:
            start = time.perf_counter()
            rows = []
            for i, (folder, turn) in enumerate(cases, 1):
                rows.append(reply(agent, folder, turn, point, args.reply_tokens, args.seed))
                log(f"  {i}/{len(cases)} {folder.name}: {','.join(rows[-1]['rules']) or '-'} "
                    f"({time.perf_counter() - start:.0f} s) {rows[-1]['reply'][:70]!r}")
            vectors = embed([r["reply"] or "..." for r in rows])  # (n, 384)
            best = (vectors @ card_vectors.T).argmax(1)
            for r, b in zip(rows, best):
                r["identified_as"] = folders[int(b)].name
            broken = sum(bool(r["rules"]) for r in rows)
            ident = sum(r["identified_as"] == r["persona"] for r in rows) / len(rows)
            fired: dict[str, int] = {}
            for r in rows:
                for rule in r["rules"]:
                    fired[rule] = fired.get(rule, 0) + 1
            results.append({"temperature": point[0], "top_p": point[1], "min_p": point[2],
                            "repetition_penalty": point[3], "replies": len(rows), "break_rate": broken / len(rows),
                            "reply_identification": ident, "rules": fired, "seconds": time.perf_counter() - start,
                            "rows": rows})
            log(f"T {point[0]} top_p {point[1]} min_p {point[2]} penalty {point[3]}: break {broken}/{len(rows)}, "
                f"reply ident {ident:.3f}, {fired} ({time.perf_counter() - start:.0f} s)")
    print(f"{'temperature':>11} {'top_p':>5} {'min_p':>5} {'penalty':>7} {'replies':>7} {'break rate':>10} "
          f"{'reply ident':>11}  rules")
    for r in results:
        print(f"{r['temperature']:11.2f} {r['top_p']:5.2f} {r['min_p']:5.2f} {r['repetition_penalty']:7.2f} "
              f"{r['replies']:7d} {r['break_rate']:10.3f} {r['reply_identification']:11.3f}  "
              f"{', '.join(f'{k} {v}' for k, v in sorted(r['rules'].items())) or '-'}")
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "overrides": args.set, "args": vars(args)},
                                              indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
