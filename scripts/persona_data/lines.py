"""The lines a scaled persona says, each marked with the card field it appears in (or `none`): the training targets.

The greeting and the example-dialogue replies are in the card (held back from it when training); the
replies to the dialogue kinds the example dialogue did not use and the voice lines are in no field at
all. Each line answers a user line (`to`), as agent.training.contrast.card_lines pairs them.
"""
from __future__ import annotations

import random

from .text import fill

GREETING_TURN = "Hello."  # the user line a greeting or a voice line answers (agent.training.contrast)


def persona_lines(p: dict, comp: dict, seed: str) -> list[dict]:
    """[{kind, to, text, field}] for composed persona `p`; the user lines of unused kinds are drawn with `seed`."""
    rng = random.Random(seed)
    parts = p["parts"]
    style, fields = parts["style"], parts["fields"]
    out = [{"kind": "greeting", "to": GREETING_TURN, "text": p["first_mes"], "field": "first_mes"}]
    used = {d["kind"] for d in parts["dialogue"]}
    out += [{"kind": d["kind"], "to": d["user"], "text": d["reply"], "field": "mes_example"} for d in parts["dialogue"]]
    for kind, prompts in comp["user_prompts"].items():
        if kind not in used:
            out.append({"kind": kind, "to": rng.choice(prompts), "text": fill(style["replies"][kind], fields), "field": "none"})
    out += [{"kind": "voice", "to": GREETING_TURN, "text": fill(v, fields), "field": "none"} for v in style["voice"]]
    seen: set[str] = set()
    kept = []
    for line in out:
        if line["field"] == "none":  # a voice line may repeat part of the greeting: then it is in that field
            line["field"] = next((f for f in ("first_mes", "mes_example") if line["text"] in p[f]), "none")
        if line["text"] not in seen and not any(line["text"] in p[f] for f in ("description", "personality", "scenario")):
            seen.add(line["text"])
            kept.append(line)
    return kept
