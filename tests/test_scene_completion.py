"""agent/server/scene_completion.py: a group scene as a model (`model: "tess+bo"`), through the official client."""
from __future__ import annotations

import httpx
import openai
import pytest
import yaml

from agent.server import ServerSettings, create_app, running
from agent.server.scene_completion import read_scene_turn, scene_names

PERSONAS = {"tess": {"name": "Tess", "description": "{{char}} is a terse sailor.", "first_mes": "Ahoy."},
            "bo": {"name": "Bo Finch", "description": "{{char}} is a cook.", "first_mes": "Soup's on."}}


@pytest.fixture()
def agent(tiny_agent):
    import torch

    torch.set_num_threads(1)
    for slug, fields in PERSONAS.items():
        folder = tiny_agent.home.personas / slug
        folder.mkdir(parents=True)
        (folder / "persona.yaml").write_text(yaml.safe_dump(fields), encoding="utf-8")
    return tiny_agent


@pytest.fixture()
def server(agent):
    with running(create_app(agent, ServerSettings(api_key="sk-test"))) as url:
        yield openai.OpenAI(base_url=url + "/v1", api_key="sk-test", max_retries=0, timeout=60), url


def test_scene_names():
    assert scene_names("tess") is None and scene_names("tess+bo") == ["tess", "bo"]
    with pytest.raises(ValueError, match="joined by"):
        scene_names("tess+")


def test_read_scene_turn_names_the_speakers(agent):
    personas = [agent.personas.get("tess"), agent.personas.get("bo")]
    system, prior, text, human, resent = read_scene_turn(
        [("system", "Be brief.", ""), ("assistant", "Ahoy.", "tess"), ("user", "hi", "Sam"),
         ("assistant", "Bo Finch: Soup?", ""), ("user", "Tess?", "Sam")], personas)
    assert system == "Be brief." and text == "Tess?" and human == "Sam" and resent
    assert [(m.name, m.content) for m in prior] == [("tess", "Ahoy."), ("Sam", "hi"), ("bo", "Soup?")]


def test_the_named_persona_answers_with_its_name_in_the_message_and_a_header(server):
    client, _ = server
    raw = client.chat.completions.with_raw_response.create(
        model="tess+bo", messages=[{"role": "user", "content": "Bo, what's cooking?"}])
    reply = raw.parse()
    assert raw.headers["x-personae-speaker"] == "bo"
    assert (reply.choices[0].message.model_extra or {}).get("name") == "bo"


def test_streaming_names_the_speaker_first(server):
    client, url = server
    with httpx.stream("POST", url + "/v1/chat/completions", headers={"Authorization": "Bearer sk-test"},
                      json={"model": "tess+bo", "stream": True,
                            "messages": [{"role": "user", "content": "Tess, the wind?"}]}, timeout=60) as r:
        assert r.headers["x-personae-speaker"] == "tess"
        first = next(line for line in r.iter_lines() if line.startswith("data: "))
    assert '"name": "tess"' in first


def test_a_session_saves_the_scene_and_the_speaker_can_be_asked(server, agent):
    client, _ = server
    for text in ("hello all", "and again"):
        client.chat.completions.create(model="tess+bo", messages=[{"role": "user", "content": text}],
                                       extra_headers={"X-Session-Id": "s1", "X-Personae-Speaker": "Tess"})
    sid = agent.history.latest_scene(["bo", "tess"], "openai:s1")
    lines = agent.history.messages(sid)
    assert [m.content for m in lines if m.role == "user"] == ["hello all", "and again"]
    assert [m.name for m in lines if m.role == "assistant"][-2:] == ["tess", "tess"]  # asked twice: it may


def test_unknown_scene_members_are_404(server):
    client, _ = server
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="tess+nobody", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="tess+bo", messages=[{"role": "user", "content": "hi"}],
                                       extra_headers={"X-Personae-Speaker": "zed"})


def test_a_named_scene_is_a_model_too(server, agent):
    client, _ = server
    scene = agent.open_scene(["tess", "bo"])
    agent.history.name_scene(scene.id, "galley")
    raw = client.chat.completions.with_raw_response.create(
        model="galley", messages=[{"role": "user", "content": "Bo, soup?"}])
    assert raw.headers["x-personae-speaker"] == "bo"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-scene", messages=[{"role": "user", "content": "hi"}])


def test_a_scene_client_that_disconnects_mid_stream_leaves_only_the_line_it_received(agent, held_reply):
    """As for one persona (tests/test_server.py): the scene keeps the message and the part of the line received."""
    from conftest import read_held_stream
    from tests.test_server import wait_for

    def last_lines() -> list[tuple[str, str]]:
        sid = agent.history.latest_scene(["bo", "tess"], "openai:cut")
        return [] if sid is None else [(m.role, m.content) for m in agent.history.messages(sid)][-2:]

    app = create_app(agent, ServerSettings(api_key="sk-test"))
    jobs = app.state.personae.jobs
    with running(app) as url:
        with httpx.stream("POST", url + "/v1/chat/completions", json={
                "model": "tess+bo", "stream": True, "max_tokens": 200, "user": "cut",
                "messages": [{"role": "user", "content": "Bo, soup?"}]},
                headers={"Authorization": "Bearer sk-test", "X-Personae-Speaker": "bo"}, timeout=60) as response:
            received = read_held_stream(response, held_reply)
        wait_for(lambda: any(job.cancel.is_set() for job in jobs.running_jobs()))  # the disconnect is seen
        held_reply.release.set()
        expected = [("user", "Bo, soup?"), ("assistant", received.strip())]
        try:
            wait_for(lambda: last_lines() == expected)
        except AssertionError:
            pass  # the comparison below shows the difference
    assert received.strip() and last_lines() == expected
