"""Server load benchmark: N concurrent `openai` clients stream chat completions for a bounded time, then
requests/s, p50/p95 time to first token and latency, refusals (429) and errors go to stdout.

    python3 benchmarks/server_load.py -c configs/tiny.yaml --clients 4 --seconds 10    # in-process server
    python3 benchmarks/server_load.py --url http://127.0.0.1:8000 --api-key "$PERSONAE_API_KEY" -p mara

Without --url the script starts its own server on a free 127.0.0.1 port, on a throwaway home (temp
folder), so your personas and history are untouched. Traffic only goes to loopback unless --allow-remote.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional
from urllib.parse import urlparse

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

import openai  # noqa: E402

from agent.server.settings import is_loopback  # noqa: E402

LINES = ["Hello! Who are you?", "What are you working on today?", "Tell me something surprising.",
         "Why do you say that?", "What should I do next?", "Thank you. Goodbye for now."]
TURNS_PER_SESSION = 6  # a client with --sessions starts over after this many turns, so prompts stay bounded


@dataclass
class Tally:
    ttft: list = field(default_factory=list)  # seconds to the first content piece, per successful request
    latency: list = field(default_factory=list)  # seconds to the end of the stream
    completion_tokens: int = 0
    refused: int = 0  # 429: the queue was full
    errors: dict = field(default_factory=dict)  # kind -> count
    lock: threading.Lock = field(default_factory=threading.Lock)

    def error(self, kind: str) -> None:
        with self.lock:
            self.errors[kind] = self.errors.get(kind, 0) + 1


def one_request(client: openai.OpenAI, args, messages: list, session: Optional[str], tally: Tally) -> Optional[str]:
    """Streams one reply; records its timings; returns its text (None on failure)."""
    start = time.perf_counter()
    first = None
    pieces = []
    usage = None
    extra = {"user": session} if session else {}
    try:
        stream = client.chat.completions.create(model=args.persona, messages=messages, max_tokens=args.max_tokens,
                                                stream=True, stream_options={"include_usage": True}, **extra)
        for chunk in stream:
            if chunk.usage is not None:
                usage = chunk.usage
            text = chunk.choices[0].delta.content if chunk.choices else None
            if text:
                first = first or time.perf_counter()
                pieces.append(text)
    except openai.RateLimitError as e:
        with tally.lock:
            tally.refused += 1
        time.sleep(min(float(e.response.headers.get("retry-after", 1)), args.max_backoff))
        return None
    except openai.APIStatusError as e:
        tally.error(f"HTTP {e.status_code}")
        return None
    except (openai.APIConnectionError, openai.APITimeoutError) as e:
        tally.error(type(e).__name__)
        return None
    end = time.perf_counter()
    with tally.lock:
        tally.ttft.append((first or end) - start)
        tally.latency.append(end - start)
        tally.completion_tokens += usage.completion_tokens if usage else 0
    return "".join(pieces)


def client_loop(index: int, url: str, args, deadline: float, tally: Tally) -> None:
    client = openai.OpenAI(base_url=url + "/v1", api_key=args.api_key or "none", max_retries=0,
                           timeout=args.request_timeout)
    conversation: list = []
    turn = index  # clients start at different lines
    while time.perf_counter() < deadline:
        if len(conversation) >= 2 * TURNS_PER_SESSION or not args.sessions:
            conversation = []
        conversation.append({"role": "user", "content": LINES[turn % len(LINES)]})
        session = f"bench-{index}" if args.sessions else None
        reply = one_request(client, args, conversation, session, tally)
        if reply is None:
            conversation.pop()
        else:
            conversation.append({"role": "assistant", "content": reply or "..."})
            turn += 1


def percentile(values: list, q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@contextmanager
def own_server(args) -> Iterator[str]:
    """A personae server in this process on a free loopback port, on a throwaway home."""
    from agent.agent import Agent
    from agent.config import load_config
    from agent.server import ServerSettings, create_app, running

    with tempfile.TemporaryDirectory(prefix="personae-load-") as home:
        agent = Agent(load_config(args.config, args.set or ()), home=args.home or Path(home))
        agent.lm  # load before the clock starts
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        settings = ServerSettings(api_key=args.api_key, queue_size=args.queue_size,
                                  max_tokens=max(args.max_tokens, 1024), max_sessions=max(32, args.clients))
        with running(create_app(agent, settings)) as url:
            yield url


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", help="an already running server (default: start one in this process)")
    p.add_argument("--api-key", default=None, help="sent as Bearer token; for the in-process server, its key")
    p.add_argument("--allow-remote", action="store_true", help="let --url point beyond this machine")
    p.add_argument("-c", "--config", help="YAML config for the in-process server (default: embedded default)")
    p.add_argument("-s", "--set", action="append", help="config override for the in-process server, KEY=VALUE")
    p.add_argument("--home", type=Path, help="personae home for the in-process server (default: a temp folder)")
    p.add_argument("-p", "--persona", default="mara", help="the model (persona) to chat with")
    p.add_argument("--clients", type=int, default=4, help="concurrent clients")
    p.add_argument("--seconds", type=float, default=20.0, help="how long clients start new requests")
    p.add_argument("--max-tokens", type=int, default=32, help="max_tokens of each request")
    p.add_argument("--sessions", action="store_true", help="each client keeps a server session and resends its chat")
    p.add_argument("--queue-size", type=int, default=8, help="the in-process server's queue size")
    p.add_argument("--threads", type=int, default=0, help="torch threads of the in-process server (0: torch's choice)")
    p.add_argument("--request-timeout", type=float, default=120.0, help="seconds before a request counts as an error")
    p.add_argument("--max-backoff", type=float, default=2.0, help="longest wait after a 429 before retrying")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args()
    if args.url and not args.allow_remote and not is_loopback(urlparse(args.url).hostname or ""):
        p.error(f"{args.url} is not on this machine; pass --allow-remote if you mean it")

    with ExitStack() as stack:
        url = args.url.rstrip("/") if args.url else stack.enter_context(own_server(args))
        tally = Tally()
        print(f"{args.clients} clients, {args.seconds:g} s, persona {args.persona}, max_tokens {args.max_tokens}, "
              f"{'sessions' if args.sessions else 'stateless'} -> {url}", file=sys.stderr)
        start = time.perf_counter()
        deadline = start + args.seconds
        threads = [threading.Thread(target=client_loop, args=(i, url, args, deadline, tally), daemon=True)
                   for i in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(args.seconds + args.request_timeout + 10)
        elapsed = time.perf_counter() - start

    done = len(tally.latency)
    figures = {
        "clients": args.clients, "seconds": round(elapsed, 2), "requests": done,
        "requests_per_s": round(done / elapsed, 3), "completion_tokens_per_s": round(tally.completion_tokens / elapsed, 1),
        "ttft_p50_s": round(percentile(tally.ttft, 0.5), 4), "ttft_p95_s": round(percentile(tally.ttft, 0.95), 4),
        "latency_p50_s": round(percentile(tally.latency, 0.5), 4),
        "latency_p95_s": round(percentile(tally.latency, 0.95), 4),
        "refused_429": tally.refused, "errors": sum(tally.errors.values()), "error_kinds": tally.errors,
        "mean_ttft_s": round(statistics.fmean(tally.ttft), 4) if tally.ttft else None,
    }
    width = max(len(k) for k in figures)
    for key, value in figures.items():
        print(f"{key:<{width}}  {value}")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items() if k != "api_key"},
                                         **figures}, indent=2))


if __name__ == "__main__":
    main()
