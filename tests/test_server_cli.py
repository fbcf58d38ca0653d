"""`personae serve` as a user runs it: a subprocess on the tiny config, driven by the official `openai` client."""
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import openai

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "configs" / "tiny.yaml")


def personae_serve(*args, env=None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "agent", "serve", *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, **(env or {})})


def _url(server: subprocess.Popen) -> tuple[str, list[str]]:
    """The address `personae serve` says it runs on (within 120 s), and the lines it printed until then."""
    url, seen, deadline = None, [], time.monotonic() + 120
    while url is None and time.monotonic() < deadline:
        line = server.stdout.readline()
        if not line:
            break
        seen.append(line)
        found = re.search(r"running on (http://127\.0\.0\.1:\d+)", line)
        url = found and found.group(1)
    assert url, "".join(seen)
    return url, seen


def test_serve_answers_the_openai_client_and_stops_on_ctrl_c(tmp_path):
    server = personae_serve("-c", TINY, "--port", "0", "--home", str(tmp_path), env={"PERSONAE_API_KEY": "sk-cli"})
    try:
        url, seen = _url(server)
        assert "API key required" in "".join(seen) and "sk-cli" not in "".join(seen)
        client = openai.OpenAI(base_url=url + "/v1", api_key="sk-cli", max_retries=0, timeout=60)
        assert {"hale", "mara", "pixel"} <= {m.id for m in client.models.list()}
        reply = client.chat.completions.create(model="hale", max_tokens=3, messages=[{"role": "user", "content": "Hi"}])
        assert reply.choices[0].message.content
        server.send_signal(signal.SIGINT)
        assert server.wait(30) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def test_serve_refuses_an_exposed_address_without_a_key(tmp_path, monkeypatch):
    from test_cli import personae  # in this process: the refusal comes before any model loads

    monkeypatch.delenv("PERSONAE_API_KEY", raising=False)
    done = personae("serve", "--host", "0.0.0.0", "-c", TINY, "--home", str(tmp_path))
    assert done.returncode == 2 and "PERSONAE_API_KEY" in done.stderr and "Traceback" not in done.stderr


def test_sigterm_during_a_long_reply_stops_the_server_within_seconds_and_keeps_finished_turns(tmp_path):
    server = personae_serve("-c", TINY, "--port", "0", "--home", str(tmp_path))
    try:
        url, _ = _url(server)
        client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=60)
        done = client.chat.completions.create(model="hale", max_tokens=3, user="kept",
                                              messages=[{"role": "user", "content": "Hi"}])
        stream = client.chat.completions.create(model="random:llama", max_tokens=1024, stream=True, user="cut",
                                                messages=[{"role": "user", "content": "Tell me everything"}])
        # the plain model (no card): the tiny model's 2048-token context leaves room for a 1024-token reply
        next(iter(stream))  # the long reply is being written
        start = time.monotonic()
        server.send_signal(signal.SIGTERM)
        assert server.wait(30) == 0
        assert time.monotonic() - start < 5
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    from agent.chat.history import HistoryStore
    from agent.paths import resolve_home

    history = HistoryStore(resolve_home(tmp_path).database)
    sid = history.latest_session("hale", "openai:kept")
    assert history.messages(sid)[-1].content == done.choices[0].message.content.strip()
