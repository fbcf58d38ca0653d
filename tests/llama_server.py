"""A real llama-cpp-python OpenAI server (`python -m llama_cpp.server`) on loopback, for the engine tests and
benchmarks/any_model.py. Not a mock: it loads the GGUF and generates."""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from typing import Iterator, Optional


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_llama_server(model: str, *, port: Optional[int] = None, api_key: Optional[str] = None, threads: int = 1,
                       n_ctx: int = 4096, alias: str = "smollm2", wait: float = 120.0) -> tuple[subprocess.Popen, str]:
    """Starts the server and waits until GET /v1/models answers; returns (process, base URL)."""
    import httpx

    port = port or free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1", "--port", str(port),
           "--n_ctx", str(n_ctx), "--n_threads", str(threads), "--n_threads_batch", str(threads),
           "--model_alias", alias, "--verbose", "false", "--flash_attn", "false"]
    if api_key:
        cmd += ["--api_key", api_key]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + wait
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"llama_cpp.server exited with {proc.returncode}: {proc.stderr.read()[-2000:]}")
        try:
            if httpx.get(url + "/v1/models", headers=headers, timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"llama_cpp.server did not answer on {url} within {wait:g} s")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def llama_server(model: str, **kwargs) -> Iterator[str]:
    proc, url = start_llama_server(model, **kwargs)
    try:
        yield url
    finally:
        stop(proc)
