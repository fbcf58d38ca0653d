"""Changes to a saved session's last message over HTTP (agent/server/routes/session_edits.py): continue the last
reply (streamed, through the guard, the stored reply extended in place), its stored alternatives listed and
chosen, the newest message edited or deleted at once; on the tiny model."""
from __future__ import annotations

import json

import httpx
import pytest

from agent.server import ServerSettings, create_app, running
from test_server import add_persona, serve, stored, stored_once_settled, wait_for

AUTH = {"Authorization": "Bearer sk-test"}


@pytest.fixture()
def url(tiny_agent):
    add_persona(tiny_agent)
    add_persona(tiny_agent, {"name": "Finn", "description": "Finn is quiet.", "first_mes": "Hm."}, slug="finn")
    with serve(tiny_agent) as (_, base):
        yield base


def chat(url: str, sid: str, messages: list, **body) -> httpx.Response:
    return httpx.post(url + "/v1/chat/completions", headers={**AUTH, "X-Session-Id": sid}, timeout=120,
                      json={"model": "tess", "max_tokens": 4, "messages": messages, **body})


def shown(url: str, sid: str) -> list[dict]:
    return httpx.get(url + f"/v1/sessions/{sid}/messages", params={"model": "tess"}, headers=AUTH).json()["data"]


def sse_text(response: httpx.Response) -> str:
    pieces = [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: {")]
    return "".join(p["choices"][0]["delta"].get("content") or "" for p in pieces if p.get("choices"))


def test_continue_streams_more_of_the_last_reply_and_extends_the_stored_one(url, tiny_agent):
    first = chat(url, "c1", [{"role": "user", "content": "Tell me of the sea"}]).json()["choices"][0]["message"]["content"]
    more = httpx.post(url + "/v1/sessions/c1/continue", headers=AUTH, timeout=120,
                      json={"model": "tess", "max_tokens": 4, "stream": True})
    assert more.status_code == 200 and more.headers["content-type"].startswith("text/event-stream")
    assert more.headers["x-personae-guard"].startswith("retried=")  # through the guard like any reply
    added = sse_text(more)
    assert added.strip() and more.text.rstrip().endswith("data: [DONE]")
    messages = shown(url, "c1")
    assert len(messages) == 3 and messages[-1]["content"] == first + added.rstrip()  # updated, not duplicated
    whole = httpx.post(url + "/v1/sessions/c1/continue", headers=AUTH, timeout=120, json={"model": "tess", "max_tokens": 3})
    again = whole.json()["choices"][0]["message"]["content"]
    assert whole.json()["object"] == "chat.completion" and shown(url, "c1")[-1]["content"] == first + added.rstrip() + again
    assert len(stored(tiny_agent, "c1")) == 3


def test_continue_refuses_what_it_cannot_continue(url):
    missing = httpx.post(url + "/v1/sessions/nobody/continue", headers=AUTH, json={"model": "tess"}, timeout=60)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "session_not_found"
    scene = httpx.post(url + "/v1/sessions/x/continue", headers=AUTH, json={"model": "tess+finn"}, timeout=60)
    assert scene.status_code == 400 and "scene" in scene.json()["error"]["message"]
    too_long = httpx.post(url + "/v1/sessions/x/continue", headers=AUTH, json={"model": "tess", "max_tokens": 10**6})
    assert too_long.status_code == 400 and too_long.json()["error"]["code"] == "max_tokens_too_large"
    assert httpx.post(url + "/v1/sessions/x/continue", json={"model": "tess"}).status_code == 401


def test_regenerated_replies_are_stored_as_alternatives_and_one_is_chosen(url):
    asked = [{"role": "assistant", "content": "Ahoy."}, {"role": "user", "content": "hi"}]
    one = chat(url, "w1", asked).json()["choices"][0]["message"]["content"]
    two = chat(url, "w1", asked, temperature=2.0, seed=11).json()["choices"][0]["message"]["content"]  # a swipe
    assert one != two
    last = shown(url, "w1")[-1]
    assert (last["content"], last["swipes"], last["swipe"]) == (two, [one, two], 1) and len(shown(url, "w1")) == 3
    chosen = httpx.put(url + "/v1/sessions/w1/swipes/chosen", headers=AUTH, json={"model": "tess", "index": 0})
    assert chosen.status_code == 200 and chosen.json()["data"][-1]["content"] == one
    assert shown(url, "w1")[-1]["swipe"] == 0  # kept: a reload shows it
    wrong = httpx.put(url + "/v1/sessions/w1/swipes/chosen", headers=AUTH, json={"model": "tess", "index": 2})
    assert wrong.status_code == 400 and "2 alternatives" in wrong.json()["error"]["message"]
    # the next message continues from the chosen one: the resent conversation matches, nothing is forked
    chat(url, "w1", [*asked, {"role": "assistant", "content": one}, {"role": "user", "content": "and then?"}])
    assert [m["content"] for m in shown(url, "w1")][:3] == ["Ahoy.", "hi", one] and "swipes" not in shown(url, "w1")[2]


def test_edit_and_delete_reach_the_stored_session_at_once(url, tiny_agent):
    asked = [{"role": "assistant", "content": "Ahoy."}, {"role": "user", "content": "hi"}]
    chat(url, "e1", asked)
    sid = tiny_agent.history.latest_session("tess", "openai:e1")
    edited = httpx.put(url + "/v1/sessions/e1/messages/last", headers=AUTH, json={"model": "tess", "content": "Aye."})
    assert edited.status_code == 200 and edited.json()["data"][-1] == {"role": "assistant", "content": "Aye."}
    assert stored(tiny_agent, "e1")[-1] == ("assistant", "Aye.")
    deleted = httpx.delete(url + "/v1/sessions/e1/messages/last", params={"model": "tess"}, headers=AUTH)
    assert [m["role"] for m in deleted.json()["data"]] == ["assistant", "user"]
    assert stored(tiny_agent, "e1") == [("assistant", "Ahoy."), ("user", "hi")]
    # the page's Reply on the unanswered message: answered in the same stored conversation, not a fork
    reply = chat(url, "e1", asked).json()["choices"][0]["message"]["content"]
    assert stored(tiny_agent, "e1") == [("assistant", "Ahoy."), ("user", "hi"), ("assistant", reply)]
    assert tiny_agent.history.latest_session("tess", "openai:e1") == sid
    gone = httpx.delete(url + "/v1/sessions/nobody/messages/last", params={"model": "tess"}, headers=AUTH)
    assert gone.status_code == 404
    empty = httpx.put(url + "/v1/sessions/e1/messages/last", headers=AUTH, json={"model": "tess", "content": ""})
    assert empty.status_code == 400


def test_a_client_sending_only_new_text_after_a_deleted_reply_gets_both_messages_answered(url, tiny_agent):
    chat(url, "e2", [{"role": "user", "content": "first"}])
    httpx.delete(url + "/v1/sessions/e2/messages/last", params={"model": "tess"}, headers=AUTH)
    reply = chat(url, "e2", [{"role": "user", "content": "second"}]).json()["choices"][0]["message"]["content"]
    assert stored(tiny_agent, "e2") == [("assistant", "Ahoy."), ("user", "first\n\nsecond"), ("assistant", reply)]


def test_a_continuation_whose_client_left_keeps_the_reply_and_what_it_received(tiny_agent, held_reply):
    from conftest import read_held_stream

    add_persona(tiny_agent)
    app = create_app(tiny_agent, ServerSettings(api_key="sk-test"))
    jobs = app.state.personae.jobs
    with running(app) as url:
        first = chat(url, "k1", [{"role": "user", "content": "hi"}], max_tokens=2).json()["choices"][0]["message"]["content"]
        held_reply.pieces.clear()
        with httpx.stream("POST", url + "/v1/sessions/k1/continue", headers=AUTH, timeout=60,
                          json={"model": "tess", "stream": True, "max_tokens": 200}) as response:
            received = read_held_stream(response, held_reply)
        wait_for(lambda: any(job.cancel.is_set() for job in jobs.running_jobs()))
        held_reply.release.set()
        wait_for(lambda: jobs.running == 0 and not jobs.queued)
        expected = [("assistant", "Ahoy."), ("user", "hi"), ("assistant", (first + received).strip())]
        assert received.strip() and stored_once_settled(tiny_agent, "k1", expected) == expected
