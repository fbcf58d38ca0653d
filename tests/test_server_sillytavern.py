"""The server as SillyTavern drives it (tiny config, real uvicorn server, official `openai` client): its own copy
of the card in system messages, example turns as named system messages, against a persona model (with and
without the duplicate-card guard) and against the plain model (the bare LM).
"""
from __future__ import annotations

import logging

import httpx
import pytest
from sillytavern import sillytavern_messages
from test_server import add_persona, serve

from agent.chat.session import ChatSession

TESS = {"name": "Tess Marlow", "description": "{{char}} is a terse sailor who mends nets on the quay at dawn.",
        "personality": "dry, patient", "scenario": "{{user}} asks {{char}} for passage.", "first_mes": "Ahoy.",
        "mes_example": "<START>\n{{user}}: Why should I trust you?\n{{char}}: *shrugs* Don't.",
        "post_history_instructions": "Stay terse, {{char}}."}
DESCRIPTION = "Tess Marlow is a terse sailor who mends nets on the quay at dawn."
USER_TURN = [{"role": "user", "content": "Where are we bound?"}]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py's: one torch thread on a shared 2-core machine


@pytest.fixture()
def prompts(monkeypatch):
    """The prompts the sessions rendered, newest last."""
    seen = []
    original = ChatSession.prompt_for
    monkeypatch.setattr(ChatSession, "prompt_for",
                        lambda self, history, **kw: seen.append(original(self, history, **kw)) or seen[-1])
    return seen


@pytest.fixture()
def agent(tiny_agent):
    add_persona(tiny_agent, TESS)
    return tiny_agent


def st_request(agent, model: str, **extra) -> dict:
    card = agent.personas.get("tess").card
    return {"model": model, "max_tokens": 2, "messages": sillytavern_messages(card, USER_TURN), **extra}


def chat(url: str, body: dict, **headers) -> httpx.Response:
    response = httpx.post(url + "/v1/chat/completions", json=body, timeout=60,
                          headers={"Authorization": "Bearer sk-test", **headers})
    assert response.status_code == 200, response.text
    return response


def test_a_persona_model_leaves_its_card_out_when_sillytavern_sends_one(agent, prompts, caplog):
    with serve(agent) as (_, url), caplog.at_level(logging.DEBUG, logger="agent.server"):
        guarded = chat(url, st_request(agent, "tess"))
        text = prompts[-1].text
    assert "the client's system text holds tess's card" in caplog.text
    with serve(agent, card_guard=False) as (_, url):
        doubled = chat(url, st_request(agent, "tess"))
        doubled_text = prompts[-1].text
    assert guarded.headers["X-Personae-Card"] == "client" and doubled.headers["X-Personae-Card"] == "personae"
    assert text.count(DESCRIPTION) == 1 and doubled_text.count(DESCRIPTION) == 2
    assert "Stay in character at all times" not in text  # personae's own system prompt goes with its card
    # the example turns are speakers' lines, the user's words come last
    assert "User: Why should I trust you?\n\nTess Marlow: *shrugs* Don't." in text
    assert text.rindex("Where are we bound?") > text.rindex("Stay terse, Tess Marlow.")
    saved, cost = guarded.json()["usage"]["prompt_tokens"], doubled.json()["usage"]["prompt_tokens"]
    second_card = agent.chat_backend.tokenizer(DESCRIPTION + "dry, patient Don't.")["input_ids"]
    assert cost - saved > len(second_card)  # the whole second card: description, personality, examples...


def test_a_persona_model_keeps_its_card_when_the_client_sends_another(agent, prompts):
    with serve(agent) as (_, url):
        body = st_request(agent, "hale")  # Tess's card, sent to the naturalist
        response = chat(url, body)
    assert response.headers["X-Personae-Card"] == "personae"
    assert prompts[-1].text.count(DESCRIPTION) == 1 and "Professor Edmund Hale" in prompts[-1].text


def test_the_plain_model_renders_just_the_clients_messages(agent, prompts):
    with serve(agent) as (client, url):
        plain = chat(url, st_request(agent, agent.plain_model))
        plain_prompt = prompts[-1]
        guarded = chat(url, st_request(agent, "tess"))
        guarded_text = prompts[-1].text
        streamed = list(client.chat.completions.create(stream=True, **st_request(agent, agent.plain_model)))
    assert plain.headers["X-Personae-Card"] == "none" and plain.json()["model"] == "random:llama"
    text = plain_prompt.text
    assert text.count(DESCRIPTION) == 1 and "Stay in character at all times" not in text
    assert "User: Why should I trust you?\n\nAssistant: *shrugs* Don't." in text
    assert [m["role"] for m in plain_prompt.messages] == ["system", "assistant", "system", "user"]
    assert plain.json()["usage"]["prompt_tokens"] == len(plain_prompt.ids)
    # the guarded persona model shows the model the same messages, but for who speaks the examples
    assert guarded_text == text.replace("\nAssistant: ", "\nTess Marlow: ")
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == \
        plain.json()["choices"][0]["message"]["content"]


def test_the_plain_model_keeps_sessions_with_kv_cache_reuse_stops_and_limits(agent):
    with serve(agent, max_tokens=64) as (client, url):
        model = agent.plain_model
        messages = [{"role": "system", "content": "You are a ship's cat."}, {"role": "user", "content": "first"}]
        one = client.chat.completions.create(model=model, messages=messages, user="cat", max_tokens=6)
        messages += [{"role": "assistant", "content": one.choices[0].message.content},
                     {"role": "user", "content": "second"}]
        two = client.chat.completions.create(model=model, messages=messages, user="cat", max_tokens=6)
        # the first prompt came from the cache (the tiny model's reply, broken UTF-8 and all, may re-tokenize)
        assert two.usage.prompt_tokens_details.cached_tokens >= one.usage.prompt_tokens > 0
        whole = client.chat.completions.create(model=model, messages=messages[:2]).choices[0].message.content
        stop = whole[len(whole) // 2:len(whole) // 2 + 2]
        cut = client.chat.completions.create(model=model, messages=messages[:2], stop=[stop])
        assert cut.choices[0].message.content == whole[:whole.index(stop)].strip()
        too_long = httpx.post(url + "/v1/chat/completions", headers={"Authorization": "Bearer sk-test"},
                              json={"model": model, "max_tokens": 65, "messages": messages[:2]})
        assert too_long.status_code == 400 and too_long.json()["error"]["param"] == "max_tokens"
    sid = agent.history.latest_session(model, "openai:cat")  # stored under the LM's id, not a persona
    assert [m.content for m in agent.history.messages(sid)] == \
        ["first", one.choices[0].message.content, "second", two.choices[0].message.content]
    reopened = agent.open_session(session_id=sid)
    assert reopened.persona is None and reopened.messages == agent.history.messages(sid)


def test_the_plain_model_has_no_memory_route(agent):
    with serve(agent) as (_, url):
        r = httpx.get(url + "/v1/sessions/cat/memory", params={"model": agent.plain_model},
                      headers={"Authorization": "Bearer sk-test"})
    assert r.status_code == 404


def test_names_in_the_completion_object_name_the_plain_models_example_speakers(agent, prompts):
    body = st_request(agent, agent.plain_model)
    for m in body["messages"]:
        if m["role"] in ("user", "assistant"):  # SillyTavern's "Character Names Behavior: Completion Object"
            m["name"] = "Ann" if m["role"] == "user" else "Tess Marlow"
    with serve(agent) as (_, url):
        chat(url, body)
    assert "Ann: Why should I trust you?\n\nTess Marlow: *shrugs* Don't." in prompts[-1].text
