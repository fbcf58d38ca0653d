"""Chat latency benchmark: one scripted chat run twice (KV cache reused across turns, then recomputed),
then this machine's memory bandwidth and the decode speed it allows. Table to stdout, progress to stderr.

    python3 benchmarks/chat_latency.py                      # embedded default LM, persona mara, 20 turns
    python3 benchmarks/chat_latency.py --turns 5 --json /tmp/latency.json

Sessions go to a throwaway database in a temp folder; the converted model is read from (and on the
first run written to) the cache of `--home`, else $PERSONAE_HOME, else the usual XDG cache.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

import torch  # noqa: E402

from agent.agent import Agent  # noqa: E402
from agent.config import load_config  # noqa: E402
from agent.paths import Home, resolve_home  # noqa: E402

# Varied on purpose: short and long, questions and statements, callbacks to earlier turns, so prompts
# grow unevenly and the cache sees both tiny and large new suffixes. Written for Mara but fit any persona.
USER_TURNS = [
    "Hello! I'm looking for work. The harbourmaster said you might need a hand.",
    "I can haul a line, mend a sail and I know my knots. What would you want from me?",
    "Why did you become a captain?",
    "Aye.",
    "Tell me about your crew. Who should I watch out for, and who can I trust when things go wrong at sea?",
    "What's the pay like?",
    "I heard a rumour in the tavern last night that a Spanish galleon is sailing for Havana next week, "
    "heavy with silver and only lightly guarded. The sailors who told me were drunk, but they swore it "
    "was true. Would you go after her?",
    "What happens if we get caught by the navy?",
    "Do you ever miss Bristol?",
    "There's a storm building to the east. Look at those clouds.",
    "Should we reef the sails now or wait?",
    "Captain, one of the new hands was caught stealing biscuits from the stores. What do we do with him?",
    "That seems fair. Where are we headed after this?",
    "Tell me a story from your first voyage.",
    "Ha! And what did you do then?",
    "I've never seen a sea that colour. Why is the water so green here?",
    "What's the most valuable thing you've ever found?",
    "Would you ever give up the sea and settle somewhere quiet, with a garden and a dog?",
    "Thank you for taking me on, Captain. I won't let you down.",
    "One last question before I turn in: what's the first thing you'll teach me tomorrow?",
]


@dataclass
class Turn:
    """One reply's figures (see DecodeStats) and its text."""
    prompt_tokens: int
    prefill_tokens: int
    ttft: float  # seconds to the first token: the prefill plus one sampling step
    new_tokens: int
    decode_seconds: float
    decode_tokens_per_second: float
    stopped_by: str
    prompt_digest: str  # SHA-1 of the prompt's token ids, to tell whether both runs saw the same prompt
    reply: str


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", help="YAML config (default: the embedded default, SmolLM2-135M)")
    p.add_argument("--persona", default=None, help="persona slug (default: the config's chat.default_persona)")
    p.add_argument("--turns", type=int, default=len(USER_TURNS),
                   help=f"user turns, taken from the script in order and repeated past {len(USER_TURNS)}")
    p.add_argument("--max-new-tokens", type=int, default=48, help="reply length cap (default 48)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: the config's lm.threads)")
    p.add_argument("--home", help="personae home whose cache/ holds the converted model "
                                  "(default: $PERSONAE_HOME, else the XDG cache)")
    p.add_argument("--bandwidth-gib", type=float, default=1.0, help="array size for the bandwidth test (GiB)")
    p.add_argument("--json", help="also write every figure to this file")
    args = p.parse_args(argv)
    if args.turns < 1 or args.max_new_tokens < 1:
        p.error("--turns and --max-new-tokens must be >= 1")
    return args


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_chat(agent: Agent, persona: Optional[str], turns: list[str], *, reuse_cache: bool, label: str) -> list[Turn]:
    """A fresh session with `persona`, fed `turns` in order; returns one Turn per reply."""
    session = agent.open_session(persona)
    session.decoder.reuse_cache = reuse_cache
    results = []
    for i, text in enumerate(turns, 1):
        reply = "".join(session.reply(text))
        st = session.last_stats
        ids = session.decoder.ids[:st.prompt_tokens]  # the prompt is the cache's first prompt_tokens ids
        digest = hashlib.sha1(str(ids).encode()).hexdigest()[:12]
        results.append(Turn(st.prompt_tokens, st.prefill_tokens, st.time_to_first_token, st.new_tokens,
                            st.decode_seconds, st.decode_tokens_per_second, st.stopped_by, digest, reply))
        log(f"[{label}] turn {i:2d}/{len(turns)}: prompt {st.prompt_tokens:5d} tok, ran {st.prefill_tokens:5d}, "
            f"TTFT {st.time_to_first_token:6.3f} s, {st.new_tokens:3d} new at {st.decode_tokens_per_second:5.1f} tok/s"
            f" ({st.stopped_by})")
    return results


def warm_up(agent: Agent, persona: Optional[str]) -> None:
    """One untimed reply, so one-off costs (thread pools, allocator, kernel selection) don't land on turn 1."""
    session = agent.open_session(persona)
    for _ in session.reply("Hello there."):
        pass


def weight_bytes_per_token(model: torch.nn.Module) -> tuple[int, int, bool]:
    """Bytes of weights one decode step reads: every parameter once, except an untied input embedding,
    of which a step reads a single row. A tied embedding is one tensor, read in full by the LM head.

    Returns (bytes read per token, parameter count, whether the embedding is tied).
    """
    params = list(model.parameters())  # shared (tied) tensors appear once
    total = sum(p.numel() * p.element_size() for p in params)
    embedding = model.get_input_embeddings().weight
    head = model.get_output_embeddings()
    tied = head is not None and head.weight is embedding
    if not tied:
        total -= embedding.numel() * embedding.element_size() - embedding[0].numel() * embedding.element_size()
    return total, sum(p.numel() for p in params), tied


def kv_bytes_per_position(model: torch.nn.Module) -> int:
    """Bytes of KV cache one decode step reads per position already in the context (keys + values, all layers)."""
    c = model.config
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    kv_heads = getattr(c, "num_key_value_heads", None) or c.num_attention_heads
    return 2 * c.num_hidden_layers * kv_heads * head_dim * next(model.parameters()).element_size()


def _rates(fn, nbytes: int, reps: int) -> list[float]:
    fn()  # first touch and warm-up, not timed
    rates = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        rates.append(nbytes / (time.perf_counter() - start) / 1e9)
    return rates


def measure_bandwidth(gib: float, reps: int = 5) -> dict:
    """Read bandwidth in GB/s (1e9 bytes) over a float32 array of `gib` GiB, with torch's current threads.

    Two read patterns: a sum, and a matrix-vector product (what a linear layer does for one token).
    """
    n = int(gib * (1 << 30)) // 4
    cols = 4096
    rows = n // cols
    x = torch.ones(rows * cols)  # written here, so its pages are resident before timing
    nbytes = x.numel() * 4
    vec = torch.ones(cols)
    result = {"array_bytes": nbytes, "threads": torch.get_num_threads(), "repetitions": reps}
    for name, fn in (("sum", lambda: x.sum()), ("matvec", lambda: torch.mv(x.view(rows, cols), vec))):
        rates = _rates(fn, nbytes, reps)
        result[name] = {"gb_per_s": rates, "median": statistics.median(rates), "best": max(rates)}
    del x
    result["bandwidth_gb_per_s"] = max(result["sum"]["best"], result["matvec"]["best"])
    return result


def summarize(reuse: list[Turn], fresh: list[Turn]) -> dict:
    def decode_rate(turns):  # token-weighted: all decode steps over all decode time
        steps = sum(max(t.new_tokens - 1, 0) for t in turns)
        seconds = sum(t.decode_seconds for t in turns if t.new_tokens > 1)
        return steps / seconds if seconds else 0.0

    ttft_r, ttft_f = [t.ttft for t in reuse], [t.ttft for t in fresh]
    rates = [t.decode_tokens_per_second for t in reuse + fresh if t.new_tokens > 1] or [0.0]
    return {
        "ttft_reuse_mean": statistics.mean(ttft_r), "ttft_reuse_median": statistics.median(ttft_r),
        "ttft_fresh_mean": statistics.mean(ttft_f), "ttft_fresh_median": statistics.median(ttft_f),
        "ttft_ratio_mean": statistics.mean(ttft_f) / statistics.mean(ttft_r),
        "ttft_ratio_median": statistics.median(ttft_f) / statistics.median(ttft_r),
        "prefill_tokens_reuse": sum(t.prefill_tokens for t in reuse),
        "prefill_tokens_fresh": sum(t.prefill_tokens for t in fresh),
        "decode_tps_reuse": decode_rate(reuse), "decode_tps_fresh": decode_rate(fresh),
        "decode_tps_all": decode_rate(reuse + fresh),
        "decode_tps_per_turn_mean": statistics.mean(rates),
        "decode_tps_per_turn_median": statistics.median(rates),  # robust to a few turns slowed by other processes
        "decode_tps_per_turn_best": max(rates),
        "identical_replies": sum(a.reply == b.reply for a, b in zip(reuse, fresh)),
        "first_divergence": next((i for i, (a, b) in enumerate(zip(reuse, fresh), 1) if a.reply != b.reply), None),
        "mean_context_tokens": statistics.mean(t.prompt_tokens + t.new_tokens / 2 for t in reuse),
    }


def same_label(a: Turn, b: Turn) -> str:
    if a.reply == b.reply:
        return "yes"
    return "NO" if a.prompt_digest == b.prompt_digest else "no*"  # *: the prompts already differed


def print_table(reuse: list[Turn], fresh: list[Turn]) -> None:
    print(f"{'turn':>4} {'prompt':>6} {'prefill':>7} {'TTFT reuse':>10} {'TTFT fresh':>10} {'fresh/reuse':>11} "
          f"{'new':>4} {'decode tok/s':>12}  same reply")
    for i, (a, b) in enumerate(zip(reuse, fresh), 1):
        prompt = f"{a.prompt_tokens}" if a.prompt_tokens == b.prompt_tokens else f"{a.prompt_tokens}/{b.prompt_tokens}"
        print(f"{i:>4} {prompt:>6} {a.prefill_tokens:>7} {a.ttft:>9.3f}s {b.ttft:>9.3f}s {b.ttft / a.ttft:>10.1f}x "
              f"{a.new_tokens:>4} {a.decode_tokens_per_second:>12.1f}  {same_label(a, b)}")
    print("prompt: tokens in the prompt; prefill: of those, tokens run with reuse (fresh runs them all); "
          "new, decode tok/s: the reuse run's reply")


def print_divergences(reuse: list[Turn], fresh: list[Turn]) -> None:
    for i, (a, b) in enumerate(zip(reuse, fresh), 1):
        if a.reply != b.reply:
            why = " (the prompts already differed)" if same_label(a, b) == "no*" else ""
            print(f"\nturn {i}: the replies differ{why}")
            print(f"  reuse: {a.reply[:300]!r}\n  fresh: {b.reply[:300]!r}")


def print_summary(s: dict, bw: dict, bound: dict, turns: int, load: dict) -> None:
    print(f"\nTTFT with reuse:    mean {s['ttft_reuse_mean']:.3f} s, median {s['ttft_reuse_median']:.3f} s")
    print(f"TTFT without reuse: mean {s['ttft_fresh_mean']:.3f} s, median {s['ttft_fresh_median']:.3f} s")
    print(f"TTFT ratio (without / with): {s['ttft_ratio_mean']:.2f}x on means, "
          f"{s['ttft_ratio_median']:.2f}x on medians")
    print(f"prompt tokens run through the model: {s['prefill_tokens_reuse']} with reuse, "
          f"{s['prefill_tokens_fresh']} without")
    print(f"decode tok/s (all steps / all time): {s['decode_tps_reuse']:.1f} with reuse, {s['decode_tps_fresh']:.1f} "
          f"without, {s['decode_tps_all']:.1f} overall")
    print(f"decode tok/s per turn (both runs): mean {s['decode_tps_per_turn_mean']:.1f}, "
          f"median {s['decode_tps_per_turn_median']:.1f}, best {s['decode_tps_per_turn_best']:.1f}")
    div = s["first_divergence"]
    print(f"greedy replies identical: {s['identical_replies']}/{turns} turns"
          + (f" (first difference at turn {div}; later turns build on different histories)" if div else ""))
    print(f"\nmemory read bandwidth ({bw['array_bytes'] / 2**30:.1f} GiB float32, {bw['threads']} threads, "
          f"{bw['repetitions']} reps): sum median {bw['sum']['median']:.1f} / best {bw['sum']['best']:.1f} GB/s, "
          f"matvec median {bw['matvec']['median']:.1f} / best {bw['matvec']['best']:.1f} GB/s")
    embedding = "tied, counted once: the LM head reads it all" if bound["tied"] else "untied: one row read"
    print(f"weights read per token: {bound['weight_bytes'] / 1e6:.1f} MB ({bound['parameters'] / 1e6:.1f} M "
          f"parameters, {bound['dtype']}; embedding {embedding})")
    print(f"decode bound at {bound['bandwidth_gb_per_s']:.1f} GB/s (best read): "
          f"{bound['bound_tps']:.1f} tok/s; measured {s['decode_tps_all']:.1f} tok/s overall = {bound['fraction']:.0%} "
          f"of it, best turn {s['decode_tps_per_turn_best']:.1f} tok/s = {bound['fraction_best']:.0%}")
    print(f"with the KV cache read too ({bound['kv_bytes_per_position'] / 1e3:.1f} kB/position, mean context "
          f"{s['mean_context_tokens']:.0f} tokens: +{bound['kv_bytes_mean'] / 1e6:.1f} MB/token): bound "
          f"{bound['bound_tps_with_kv']:.1f} tok/s, measured overall = {bound['fraction_with_kv']:.0%} of it")
    print(f"\nload average (1 min) before the chats {load['before']:.2f}, after {load['after']:.2f}, "
          f"on {load['cpus']} CPUs (other busy processes slow every figure above, decode most)")


def decode_bound(model: torch.nn.Module, bandwidth: float, measured_tps: float, best_tps: float,
                 mean_context: float) -> dict:
    weights, params, tied = weight_bytes_per_token(model)
    kv = kv_bytes_per_position(model)
    bound = bandwidth * 1e9 / weights
    bound_kv = bandwidth * 1e9 / (weights + kv * mean_context)
    return {"weight_bytes": weights, "parameters": params, "tied": tied, "dtype": str(next(model.parameters()).dtype),
            "bandwidth_gb_per_s": bandwidth, "bound_tps": bound,
            "fraction": measured_tps / bound, "fraction_best": best_tps / bound,
            "kv_bytes_per_position": kv, "kv_bytes_mean": kv * mean_context,
            "bound_tps_with_kv": bound_kv, "fraction_with_kv": measured_tps / bound_kv}


def main(argv: Optional[list[str]] = None) -> None:
    args = parse_args(argv)
    # transformers: the memory bound below is the float32 model's; benchmarks/backends.py measures llama.cpp
    overrides = ["lm.backend=transformers", "chat.temperature=0", f"chat.max_new_tokens={args.max_new_tokens}"]
    if args.threads:
        overrides.append(f"lm.threads={args.threads}")
    config = load_config(args.config, overrides)
    turns = [USER_TURNS[i % len(USER_TURNS)] for i in range(args.turns)]
    with tempfile.TemporaryDirectory(prefix="personae-bench-") as data:
        home = Home(data=Path(data), cache=resolve_home(args.home).cache)
        agent = Agent(config, home=home)
        log(f"loading {config.lm.name_or_path} (cache: {home.cache_dir('lm')}; the first run converts a GGUF, ~20 s)")
        start = time.perf_counter()
        model = agent.lm.model
        log(f"loaded in {time.perf_counter() - start:.1f} s; torch threads: {torch.get_num_threads()}")
        warm_up(agent, args.persona)
        load = {"cpus": os.cpu_count(), "before": os.getloadavg()[0]}
        reuse = run_chat(agent, args.persona, turns, reuse_cache=True, label="reuse")
        fresh = run_chat(agent, args.persona, turns, reuse_cache=False, label="fresh")
        load["after"] = os.getloadavg()[0]
    summary = summarize(reuse, fresh)
    log(f"measuring memory bandwidth over {args.bandwidth_gib:g} GiB")
    bandwidth = measure_bandwidth(args.bandwidth_gib)
    bound = decode_bound(model, bandwidth["bandwidth_gb_per_s"], summary["decode_tps_all"],
                         summary["decode_tps_per_turn_best"], summary["mean_context_tokens"])
    print_table(reuse, fresh)
    print_divergences(reuse, fresh)
    print_summary(summary, bandwidth, bound, len(turns), load)
    if args.json:
        figures = {"lm": config.lm.name_or_path, "persona": args.persona or config.chat.default_persona,
                   "max_new_tokens": args.max_new_tokens, "threads": torch.get_num_threads(),
                   "machine": {"platform": platform.platform(), "processor": platform.processor(),
                               "torch": torch.__version__},
                   "turns": [{"user": u, "reuse": asdict(a), "fresh": asdict(b), "same_reply": a.reply == b.reply}
                             for u, a, b in zip(turns, reuse, fresh)],
                   "summary": summary, "bandwidth": bandwidth, "decode_bound": bound, "load_average": load}
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
        log(f"wrote {args.json}")


if __name__ == "__main__":
    main()
