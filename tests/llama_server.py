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
from typing import Callable, Iterator, Optional


def free_port() -> int:
    """A loopback port free a moment ago; another process may take it before it is used (see closed_port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def closed_port() -> Iterator[int]:
    """A loopback port that refuses connections for the whole block: bound but never listening, so no other
    process on the machine (another test run) can start a server on it meanwhile."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


class PortTaken(RuntimeError):
    """The server could not bind its port: another process took it after free_port() found it free."""


def _on_a_free_port(start: Callable[[int], tuple[subprocess.Popen, str]],
                    port: Optional[int]) -> tuple[subprocess.Popen, str]:
    """start(port), or without `port` start(a free one), again on another (3 tries) while PortTaken: the
    servers bind only after loading the model, seconds in which another process may take the port."""
    for attempt in range(3):
        try:
            return start(port or free_port())
        except PortTaken:
            if port or attempt == 2:
                raise


def start_llama_server(model: str, *, port: Optional[int] = None, api_key: Optional[str] = None, threads: int = 1,
                       n_ctx: int = 4096, alias: str = "smollm2", interrupt_requests: bool = True,
                       wait: float = 120.0) -> tuple[subprocess.Popen, str]:
    """Starts `python -m llama_cpp.server` and waits until GET /v1/models answers; returns (process, base URL).

    interrupt_requests: llama-cpp-python's own default (true) cuts a running stream off when another request
    arrives; false makes the second wait for the first (it serves one request at a time either way)."""
    def start(port: int) -> tuple[subprocess.Popen, str]:
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1",
               "--port", str(port), "--n_ctx", str(n_ctx), "--n_threads", str(threads),
               "--n_threads_batch", str(threads), "--model_alias", alias, "--verbose", "false", "--flash_attn", "false",
               "--interrupt_requests", str(interrupt_requests).lower()]
        if api_key:
            cmd += ["--api_key", api_key]
        return _wait_ready(cmd, port, "llama_cpp.server", api_key, wait)

    return _on_a_free_port(start, port)


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
    n_ctx = n_ctx or 2048 * n_parallel

    def start(port: int) -> tuple[subprocess.Popen, str]:
        cmd = [sys.executable, "-c", XLLAMACPP_CHILD, str(model), str(port), str(threads), str(n_ctx),
               str(n_parallel), alias]
        return _wait_ready(cmd, port, "xllamacpp.Server", None, wait)

    return _on_a_free_port(start, port)


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
            told = log.read()[-2000:]
            error = PortTaken if "address already in use" in told.lower() else RuntimeError
            raise error(f"{name} on port {port} exited with {proc.returncode}: {told}")
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
