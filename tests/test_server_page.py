"""The routes the web chat needs, without a browser: the page and its files (no key, strict CSP), persona
portraits and greetings, and the saved sessions to resume (GET /v1/sessions, .../messages), behind the key."""
from __future__ import annotations

import httpx
import pytest
import yaml

from agent.server import ServerSettings, create_app, running
from agent.server.routes.page import CSP

KEY = "sk-page"
AUTH = {"Authorization": f"Bearer {KEY}"}


def small_persona(agent, slug: str, name: str) -> None:
    """A card short enough for a scene of two on the tiny model's 2048-token context."""
    folder = agent.home.personas / slug
    folder.mkdir(parents=True)
    (folder / "persona.yaml").write_text(yaml.safe_dump({"name": name, "description": f"{name} is terse.",
                                                         "first_mes": f"{name} nods."}), encoding="utf-8")


@pytest.fixture()
def url(tiny_agent):
    small_persona(tiny_agent, "tess", "Tess")
    small_persona(tiny_agent, "finn", "Finn")
    with running(create_app(tiny_agent, ServerSettings(api_key=KEY))) as base:
        yield base


def test_the_page_and_its_files_need_no_key_and_carry_the_csp(url):
    page = httpx.get(url + "/")
    assert page.status_code == 200 and page.headers["content-security-policy"] == CSP
    assert page.headers["x-content-type-options"] == "nosniff" and page.headers["x-frame-options"] == "DENY"
    assert '<script type="module" src="/web/app.js">' in page.text
    script = httpx.get(url + "/web/app.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert script.headers["content-security-policy"] == CSP
    assert httpx.get(url + "/web/../v1/personas").status_code != 200  # no way around the key
    assert httpx.get(url + "/web/nothing.js").status_code == 404
    assert "'unsafe-inline'" not in CSP and "'unsafe-eval'" not in CSP


def test_portraits_and_greetings_need_the_key(url, tiny_agent):
    assert httpx.get(url + "/v1/personas/mara/portrait").status_code == 401
    portrait = httpx.get(url + "/v1/personas/mara/portrait", headers=AUTH)
    assert portrait.status_code == 200 and portrait.headers["content-type"] == "image/png"
    assert portrait.content == tiny_agent.personas.get("mara").portrait.read_bytes()
    tiny_agent.personas.add(tiny_agent.personas.get("mara").card.__class__(name="Plain", first_mes="Hi {{user}}."))
    missing = httpx.get(url + "/v1/personas/plain/portrait", headers=AUTH)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "no_portrait"
    greetings = httpx.get(url + "/v1/personas/plain/greetings", headers=AUTH).json()
    assert greetings["data"] == ["Hi User."]


def test_saved_sessions_are_listed_and_read_back(url):
    assert httpx.get(url + "/v1/sessions").status_code == 401
    assert httpx.get(url + "/v1/sessions", headers=AUTH).json()["data"] == []
    chat = {"model": "mara", "max_tokens": 3, "messages": [{"role": "user", "content": "Ahoy"}]}
    assert httpx.post(url + "/v1/chat/completions", json=chat, headers={**AUTH, "X-Session-Id": "s1"},
                      timeout=60).status_code == 200
    scene = {**chat, "model": "tess+finn"}
    answer = httpx.post(url + "/v1/chat/completions", json=scene, headers={**AUTH, "X-Session-Id": "s2"}, timeout=60)
    assert answer.status_code == 200
    listed = httpx.get(url + "/v1/sessions", headers=AUTH).json()["data"]
    assert [(s["id"], s["model"], s["scene"]) for s in listed] == [("s2", "finn+tess", True), ("s1", "mara", False)]
    assert listed[1]["messages"] == 3  # greeting, message, reply
    one = httpx.get(url + "/v1/sessions/s1/messages", params={"model": "mara"}, headers=AUTH).json()["data"]
    assert [m["role"] for m in one] == ["assistant", "user", "assistant"] and one[1]["content"] == "Ahoy"
    lines = httpx.get(url + "/v1/sessions/s2/messages", params={"model": "tess+finn"}, headers=AUTH).json()["data"]
    assert lines[-2]["content"] == "Ahoy" and lines[-1]["name"] == answer.json()["choices"][0]["message"]["name"]
    none = httpx.get(url + "/v1/sessions/nobody/messages", params={"model": "mara"}, headers=AUTH).json()
    assert none["data"] == []


def test_serve_open_opens_the_page_once_the_server_is_up(monkeypatch):
    import socket
    import webbrowser
    from types import SimpleNamespace

    from agent.server.run import _open_when_up

    opened = []
    monkeypatch.setattr(webbrowser, "open", lambda url: opened.append(url) or True)
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))
        server = SimpleNamespace(started=True, servers=[SimpleNamespace(sockets=[sock])])
        _open_when_up(server)
        assert opened == [f"http://127.0.0.1:{sock.getsockname()[1]}/"]
