"""Real OpenAI-compatible LLM servers on loopback, for the engine tests and the benchmarks: llama-cpp-python's
(`python -m llama_cpp.server`, one request at a time) and llama.cpp's own C++ server through the xllamacpp wheel
(`xllamacpp.Server`, continuous batching over `n_parallel` slots). Not mocks: they load the GGUF and generate."""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from typing import Iterator, Optional


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_llama_server(model: str, *, port: Optional[int] = None, api_key: Optional[str] = None, threads: int = 1,
                       n_ctx: int = 4096, alias: str = "smollm2", interrupt_requests: bool = True,
                       wait: float = 120.0) -> tuple[subprocess.Popen, str]:
    """Starts `python -m llama_cpp.server` and waits until GET /v1/models answers; returns (process, base URL).

    interrupt_requests: llama-cpp-python's own default (true) cuts a running stream off when another request
    arrives; false makes the second wait for the first (it serves one request at a time either way)."""
    port = port or free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1", "--port", str(port),
           "--n_ctx", str(n_ctx), "--n_threads", str(threads), "--n_threads_batch", str(threads),
           "--model_alias", alias, "--verbose", "false", "--flash_attn", "false",
           "--interrupt_requests", str(interrupt_requests).lower()]
    if api_key:
        cmd += ["--api_key", api_key]
    return _wait_ready(cmd, port, "llama_cpp.server", api_key, wait)


# llama.cpp's C++ server in a child process, so that it can be stopped (xllamacpp has no stop call) and its
# memory is its own. argv: model, port, threads, n_ctx, n_parallel, alias.
XLLAMACPP_CHILD = """
import sys, time
import xllamacpp as xlc
model, port, threads, n_ctx, n_parallel, alias = sys.argv[1:7]
params = xlc.CommonParams()
params.model.path = model
params.hostnames = ["127.0.0.1"]  # a list in xllamacpp 2026.x (older: hostname)
params.port = int(port)
params.n_ctx = int(n_ctx)  # divided among the slots: int(n_ctx) / n_parallel tokens each
params.n_parallel = int(n_parallel)
params.cpuparams.n_threads = params.cpuparams_batch.n_threads = int(threads)
params.flash_attn_type = xlc.llama_flash_attn_type.LLAMA_FLASH_ATTN_TYPE_DISABLED  # as personae's llamacpp backend
params.n_gpu_layers = 0
params.model_alias = {alias}
server = xlc.Server(params)  # serves HTTP from its own threads until this process ends
while True:
    time.sleep(3600)
"""


def start_xllamacpp(model: str, *, n_parallel: int = 2, threads: int = 1, n_ctx: Optional[int] = None,
                    port: Optional[int] = None, alias: str = "smollm2",
                    wait: float = 120.0) -> tuple[subprocess.Popen, str]:
    """Starts llama.cpp's own server (the xllamacpp wheel) with `n_parallel` slots batched together, each of
    n_ctx / n_parallel tokens (default 2048 each); waits until GET /v1/models answers; returns (process, URL)."""
    port = port or free_port()
    n_ctx = n_ctx or 2048 * n_parallel
    cmd = [sys.executable, "-c", XLLAMACPP_CHILD, str(model), str(port), str(threads), str(n_ctx), str(n_parallel),
           alias]
    return _wait_ready(cmd, port, "xllamacpp.Server", None, wait)


def _wait_ready(cmd: list[str], port: int, name: str, api_key: Optional[str],
                wait: float) -> tuple[subprocess.Popen, str]:
    import httpx

    log = tempfile.TemporaryFile("w+")  # not a pipe: a server that logs every request would fill it and stall
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + wait
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"{name} exited with {proc.returncode}: {log.read()[-2000:]}")
        try:
            if httpx.get(url + "/v1/models", headers=headers, timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"{name} did not answer on {url} within {wait:g} s")


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
