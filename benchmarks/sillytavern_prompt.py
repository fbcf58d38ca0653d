"""What a SillyTavern-shaped request costs: prompt tokens and time to first token on the persona model with the
duplicate-card guard off and on, and on the plain model (the bare LM), on the embedded default.

    python3 benchmarks/sillytavern_prompt.py                 # Captain Mara Vell, configs/default.yaml
    python3 benchmarks/sillytavern_prompt.py -p hale -s lm.threads=2

Each case runs a fresh conversation (its first turn decodes the whole prompt: uncached) and then its second
turn (the first turn's prompt comes from the KV cache), through an in-process server on a throwaway home. The
messages are SillyTavern 1.12.6's Chat Completion defaults built from the persona's card (tests/sillytavern.py).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
sys.path.insert(0, str(ROOT / "tests"))

import openai  # noqa: E402
from sillytavern import sillytavern_messages  # noqa: E402

TURNS = ["Aye, I can haul a line. Where are we bound?", "And what of the pay?"]


def one_turn(client: openai.OpenAI, model: str, messages: list, max_tokens: int) -> tuple[float, str, object, str]:
    """(seconds to the first content piece, reply, usage, X-Personae-Card) of one streamed request."""
    start = time.perf_counter()
    first, pieces, usage = None, [], None
    raw = client.chat.completions.with_raw_response.create(model=model, messages=messages, max_tokens=max_tokens,
                                                           temperature=0.0, stream=True,
                                                           stream_options={"include_usage": True})
    for chunk in raw.parse():
        usage = chunk.usage or usage
        text = chunk.choices[0].delta.content if chunk.choices else None
        if text:
            first = first or time.perf_counter()
            pieces.append(text)
    return (first or time.perf_counter()) - start, "".join(pieces), usage, raw.headers.get("x-personae-card", "")


def run_case(url: str, model: str, card, args) -> list[tuple]:
    client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=300)
    chat: list[dict] = []
    rows = []
    for line in TURNS:
        chat.append({"role": "user", "content": line})
        ttft, reply, usage, owner = one_turn(client, model, sillytavern_messages(card, chat), args.max_tokens)
        chat.append({"role": "assistant", "content": reply})
        rows.append((owner, usage.prompt_tokens, usage.prompt_tokens_details.cached_tokens, ttft))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-c", "--config", default=str(ROOT / "configs" / "default.yaml"))
    p.add_argument("-s", "--set", action="append", help="config override key=value (repeatable)")
    p.add_argument("-p", "--persona", default="mara")
    p.add_argument("--max-tokens", type=int, default=32)
    args = p.parse_args()

    from agent.agent import Agent
    from agent.config import load_config
    from agent.server import ServerSettings, create_app, running

    with tempfile.TemporaryDirectory(prefix="personae-st-") as home:
        agent = Agent(load_config(args.config, args.set or ()), home=Path(home))
        card = agent.personas.get(args.persona).card
        cases = [("persona model, guard off", args.persona, False), ("persona model, guard on", args.persona, True),
                 ("plain model", agent.plain_model, True)]
        results = []
        for guard in (False, True):
            with running(create_app(agent, ServerSettings(card_guard=guard))) as url:
                if not guard:  # load the model and warm llama.cpp up on another persona's prompt
                    run_case(url, "hale" if args.persona != "hale" else "pixel", card, args)
                for label, model, case_guard in cases:
                    if case_guard == guard:
                        results.append((label, model, run_case(url, model, card, args)))
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"SillyTavern-shaped request for {card.name} ({args.config}, {agent.chat_backend.name} backend; "
          f"{os.cpu_count()} CPUs, load average {load})")
    print(f"{'case':<26} {'model':<28} {'card':<9} {'prompt tokens':>13} {'TTFT uncached':>14} "
          f"{'2nd turn prompt (cached)':>25} {'TTFT':>7}")
    for label, model, ((owner, tokens, _, ttft), (_, tokens2, cached2, ttft2)) in results:
        print(f"{label:<26} {model:<28} {owner:<9} {tokens:>13} {ttft:>13.2f}s {f'{tokens2} ({cached2})':>25} "
              f"{ttft2:>6.2f}s")


if __name__ == "__main__":
    main()
