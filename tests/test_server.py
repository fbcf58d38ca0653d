"""The OpenAI-compatible server as a client sees it: a real uvicorn server on 127.0.0.1 with the tiny config,
driven by the official `openai` client (and httpx for raw bodies): chat, sessions, errors, auth, load.
"""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import openai
import pytest
import yaml

from agent.agent import Agent
from agent.config import ConfigError, load_config
from agent.server import ServerSettings, create_app, running
from agent.server.settings import check_bind

TINY_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"

PERSONA = {"name": "Tess", "description": "{{char}} is a terse sailor.", "first_mes": "Ahoy.",
           "post_history_instructions": "Stay terse."}


@pytest.fixture(autouse=True)
def one_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the tiny model gains nothing from threads on a shared 2-core machine
    yield
    torch.set_num_threads(threads)


def add_persona(agent: Agent, fields: dict = PERSONA, slug: str = "tess") -> None:
    folder = agent.home.personas / slug
    folder.mkdir(parents=True)
    (folder / "persona.yaml").write_text(yaml.safe_dump(fields), encoding="utf-8")


@pytest.fixture()
def agent(tiny_agent):
    add_persona(tiny_agent)
    return tiny_agent


@contextmanager
def serve(agent: Agent, key: str = "sk-test", **settings):
    """(client, base URL) for a server on a free loopback port."""
    app = create_app(agent, ServerSettings(**{"api_key": key, **settings}))
    with running(app) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key=key or "none", max_retries=0, timeout=60)
        yield client, url


@pytest.fixture()
def server(agent):
    with serve(agent) as (client, url):
        yield client, url


def ask(client, text="Hello there", model="tess", **kwargs):
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": text}], **kwargs)


def health(url: str) -> dict:
    return httpx.get(url + "/health").json()


def wait_for(condition, seconds: float = 10.0) -> float:
    """Polls until `condition()` is true; returns the seconds it took."""
    start = time.perf_counter()
    while not condition():
        if time.perf_counter() - start > seconds:
            raise AssertionError(f"not true within {seconds} s")
        time.sleep(0.02)
    return time.perf_counter() - start


# --- models and chat ---------------------------------------------------------------------------------

def test_every_persona_is_a_model_and_so_is_the_lm(server):
    client, _ = server
    ids = [m.id for m in client.models.list()]
    assert ids[:-1] == sorted(ids[:-1]) and {"hale", "mara", "pixel", "tess"} <= set(ids)
    assert ids[-1] == "random:llama"  # the plain model: the LM's own id (configs/tiny.yaml's lm.name_or_path)
    assert client.models.retrieve("mara").owned_by == "personae"
    assert client.models.retrieve("random:llama").id == "random:llama"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nobody")


def test_chat_completion_replies_with_usage(server):
    client, _ = server
    reply = ask(client, max_tokens=5)
    choice = reply.choices[0]
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason == "length" and reply.model == "tess"
    assert reply.usage.completion_tokens == 5
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + 5 and reply.usage.prompt_tokens > 10


def test_a_persona_can_be_named_by_card_name_too(server):
    client, _ = server
    assert ask(client, model="Captain Mara Vell", max_tokens=2).choices[0].message.content


def test_streaming_gives_the_same_reply_in_chunks_ending_with_done(server):
    client, url = server
    whole = ask(client).choices[0].message.content  # greedy (tiny config), stateless: same prompt, same reply
    chunks = list(ask(client, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole
    assert chunks[-2].choices[0].finish_reason == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 24
    raw = httpx.post(url + "/v1/chat/completions", headers={"Authorization": "Bearer sk-test"},
                     json={"model": "tess", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert raw.text.rstrip().endswith("data: [DONE]")


def test_client_system_messages_follow_the_card(server, monkeypatch):
    from agent.chat.session import ChatSession

    prompts = []
    original = ChatSession.prompt_for
    monkeypatch.setattr(ChatSession, "prompt_for",
                        lambda self, history, **kw: prompts.append(original(self, history, **kw)) or prompts[-1])
    client, _ = server
    client.chat.completions.create(model="tess", max_tokens=2, messages=[
        {"role": "system", "content": "Answer in rhyme."}, {"role": "user", "content": "Where to?"}])
    text = prompts[-1].text
    assert text.index("Tess is a terse sailor.") < text.index("Answer in rhyme.") < text.index("Ahoy.") < \
        text.index("Stay terse.") < text.index("Where to?")  # post-history instructions precede the user's turn


@pytest.mark.parametrize("content", ["Hello there", [{"type": "text", "text": "Hello "}, {"type": "text", "text": "there"}]])
def test_content_parts_are_joined(server, content):
    client, _ = server
    a = client.chat.completions.create(model="tess", max_tokens=4, messages=[{"role": "user", "content": content}])
    assert a.choices[0].message.content == ask(client, max_tokens=4).choices[0].message.content


def test_stop_strings_cut_the_reply(server):
    client, _ = server
    whole = ask(client).choices[0].message.content
    stop = whole[len(whole) // 2:len(whole) // 2 + 2]
    cut = ask(client, stop=[stop])
    expected = whole[:whole.index(stop)].strip()
    assert cut.choices[0].message.content == expected and cut.choices[0].finish_reason == "stop"
    streamed = "".join(c.choices[0].delta.content or "" for c in ask(client, stop=stop, stream=True))
    assert streamed.strip() == expected


def test_seed_and_temperature_make_sampling_reproducible(server):
    client, _ = server
    first = ask(client, temperature=1.5, seed=7, max_tokens=12).choices[0].message.content
    assert ask(client, temperature=1.5, seed=7, max_tokens=12).choices[0].message.content == first
    others = {ask(client, temperature=1.5, seed=s, max_tokens=12).choices[0].message.content for s in (1, 2, 3)}
    assert others - {first}


# --- sessions ------------------------------------------------------------------------------------------

def stored(agent, session_id: str, slug: str = "tess") -> list[tuple[str, str]]:
    sid = agent.history.latest_session(slug, "openai:" + session_id)
    return [] if sid is None else [(m.role, m.content) for m in agent.history.messages(sid)]


def stored_once_settled(agent, session_id: str, expected: list, seconds: float = 5.0) -> list[tuple[str, str]]:
    """What the session stores, read again until it is `expected` or `seconds` pass (a cut of a reply its
    client left lands shortly after the request's own job)."""
    deadline = time.monotonic() + seconds
    while (found := stored(agent, session_id)) != expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


def test_a_session_keeps_history_and_reuses_its_kv_cache(server, agent):
    client, _ = server
    messages = [{"role": "user", "content": "first"}]
    one = client.chat.completions.create(model="tess", messages=messages, user="s1", max_tokens=6)
    messages += [{"role": "assistant", "content": one.choices[0].message.content}, {"role": "user", "content": "second"}]
    two = client.chat.completions.create(model="tess", messages=messages, extra_headers={"X-Session-Id": "s1"})
    assert two.usage.prompt_tokens > one.usage.prompt_tokens + one.usage.completion_tokens
    # everything up to the new turn came from the cache (a token or two at the reply's end may re-tokenize)
    assert two.usage.prompt_tokens_details.cached_tokens >= one.usage.prompt_tokens + one.usage.completion_tokens - 3
    reply = two.choices[0].message.content
    assert stored(agent, "s1") == [("assistant", "Ahoy."), ("user", "first"), ("assistant", one.choices[0].message.content),
                                   ("user", "second"), ("assistant", reply)]


def test_stateless_requests_still_reuse_the_cached_prefix(server):
    client, _ = server
    messages = [{"role": "user", "content": "first"}]
    one = client.chat.completions.create(model="tess", messages=messages, max_tokens=6)
    messages += [{"role": "assistant", "content": one.choices[0].message.content}, {"role": "user", "content": "second"}]
    two = client.chat.completions.create(model="tess", messages=messages, max_tokens=6)
    assert two.usage.prompt_tokens_details.cached_tokens >= one.usage.prompt_tokens + one.usage.completion_tokens - 3


def test_without_a_session_id_nothing_is_stored(server, agent):
    client, _ = server
    ask(client, "remember kraken", max_tokens=3)
    with agent.history._connect() as db:
        assert db.execute("SELECT COUNT(*) FROM messages WHERE content = 'remember kraken'").fetchone()[0] == 0


def test_a_client_sending_only_the_new_message_continues_the_stored_conversation(server, agent):
    client, _ = server
    one = ask(client, "the password is kraken", user="s2", max_tokens=4)
    two = ask(client, "what was it?", user="s2", max_tokens=4)
    assert two.usage.prompt_tokens > one.usage.prompt_tokens + 4
    assert [m for _, m in stored(agent, "s2")][1:4:2] == ["the password is kraken", "what was it?"]


def test_an_edited_conversation_is_stored_as_the_client_sent_it(server, agent):
    client, _ = server
    one = ask(client, "first", user="s3", max_tokens=4).choices[0].message.content
    edited = [{"role": "assistant", "content": "Welcome aboard."}, {"role": "user", "content": "first"},
              {"role": "assistant", "content": "EDITED"}, {"role": "user", "content": "second"}]
    two = client.chat.completions.create(model="tess", messages=edited, user="s3", max_tokens=4)
    assert one != "EDITED"
    assert stored(agent, "s3") == [("assistant", "Welcome aboard."), ("user", "first"), ("assistant", "EDITED"),
                                   ("user", "second"), ("assistant", two.choices[0].message.content)]


def test_regenerating_the_last_reply_replaces_it(server, agent):
    client, _ = server
    one = ask(client, "first", user="s4", max_tokens=4).choices[0].message.content
    messages = [{"role": "user", "content": "first"}, {"role": "assistant", "content": one},
                {"role": "user", "content": "second"}]
    client.chat.completions.create(model="tess", messages=messages, user="s4", max_tokens=4)
    again = client.chat.completions.create(model="tess", messages=messages, user="s4", max_tokens=4, temperature=1.5, seed=3)
    assert stored(agent, "s4") == [("assistant", "Ahoy."), ("user", "first"), ("assistant", one), ("user", "second"),
                                   ("assistant", again.choices[0].message.content)]


def test_a_client_trimming_old_turns_keeps_one_stored_conversation(server, agent):
    client, _ = server
    messages = []
    for text in ("one", "two", "three"):
        messages.append({"role": "user", "content": text})
        reply = client.chat.completions.create(model="tess", messages=messages[-3:], user="s5", max_tokens=3)
        messages.append({"role": "assistant", "content": reply.choices[0].message.content})
    with agent.history._connect() as db:
        assert db.execute("SELECT COUNT(*) FROM sessions WHERE channel = 'openai:s5'").fetchone()[0] == 1
    assert [m for _, m in stored(agent, "s5")] == ["Ahoy."] + [m["content"] for m in messages]


def test_an_evicted_session_continues_from_its_stored_history(agent, tiny_llama, tmp_path):
    def conversation(server_agent, **settings):
        add_persona(server_agent) if server_agent is not agent else None
        with serve(server_agent, **settings) as (client, url):
            ask(client, "the password is kraken", user="a", max_tokens=6)
            ask(client, "unrelated", user="b", max_tokens=6)  # with max_sessions=1 this drops a's KV cache
            last = ask(client, "what was the password?", user="a", max_tokens=6)
            return last, health(url)["open_sessions"], stored(server_agent, "a")

    evicted, open_count, history = conversation(agent, max_sessions=1)
    reference = Agent(load_config(TINY_CONFIG), home=tmp_path / "reference", lm=tiny_llama)
    kept, kept_count, kept_history = conversation(reference)
    assert open_count == 1 and kept_count == 2
    assert evicted.usage.prompt_tokens == kept.usage.prompt_tokens
    assert evicted.usage.prompt_tokens_details.cached_tokens < kept.usage.prompt_tokens_details.cached_tokens
    assert evicted.choices[0].message.content == kept.choices[0].message.content
    assert [m for _, m in history] == [m for _, m in kept_history] and len(history) == 5


def test_session_kv_caches_are_bounded_by_tokens(agent):
    with serve(agent, max_cached_tokens=10) as (client, url):
        for session in "abc":
            ask(client, user=session, max_tokens=3)
        assert health(url)["open_sessions"] == 1  # only the newest, whatever its size


# --- errors, caps and auth -------------------------------------------------------------------------------

def post(url: str, body=None, key: str = "sk-test", **kwargs) -> httpx.Response:
    return httpx.post(url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}, **kwargs)


def assert_error(response: httpx.Response, status: int, *words: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "code"} and all(w in error["message"] for w in words), error
    return error


@pytest.mark.parametrize("body, status, words", [
    ({"model": "tess"}, 400, ["messages"]),
    ({"model": "tess", "messages": []}, 400, ["messages"]),
    ({"model": "nobody", "messages": [{"role": "user", "content": "hi"}]}, 404, ["nobody"]),
    ({"model": "../../etc", "messages": [{"role": "user", "content": "hi"}]}, 404, ["../../etc"]),
    ({"model": "tess", "n": 2, "messages": [{"role": "user", "content": "hi"}]}, 400, ["n=1"]),
    ({"model": "tess", "max_tokens": 5000, "messages": [{"role": "user", "content": "hi"}]}, 400, ["max_tokens", "1024"]),
    ({"model": "tess", "temperature": 3, "messages": [{"role": "user", "content": "hi"}]}, 400, ["temperature"]),
    ({"model": "tess", "messages": [{"role": "user", "content": "hi"}] * 2049}, 400, ["2049", "2048"]),
    ({"model": "tess", "messages": [{"role": "tool", "content": "x"}]}, 400, ["role"]),
    ({"model": "tess", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
     400, ["content"]),
    ({"model": "tess", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]},
     400, ["ends with an assistant message"]),
    ({"model": "tess", "messages": [{"role": "system", "content": "be nice"}]}, 400, ["no user message"]),
    ({"model": "tess", "stop": list("abcdefghijklmnopq"), "messages": [{"role": "user", "content": "hi"}]}, 400, ["stop"]),
])
def test_malformed_requests_get_openai_errors(server, body, status, words):
    _, url = server
    assert_error(post(url, body), status, *words)


def test_bad_json_oversize_bodies_and_unknown_routes(agent):
    with serve(agent, max_body_bytes=2048) as (client, url):
        assert_error(httpx.post(url + "/v1/chat/completions", content=b"{not json", headers={
            "Authorization": "Bearer sk-test", "Content-Type": "application/json"}), 400, "JSON")
        with pytest.raises(openai.APIStatusError) as caught:
            ask(client, "x" * 4000)
        assert caught.value.status_code == 413 and "2048" in caught.value.message
        chunked = httpx.post(url + "/v1/chat/completions", content=iter([b'{"model": "tess", "pad": "', b"x" * 4000, b'"}']),
                             headers={"Authorization": "Bearer sk-test", "Content-Type": "application/json"})
        assert_error(chunked, 413, "2048")
        assert_error(httpx.get(url + "/v1/nothing", headers={"Authorization": "Bearer sk-test"}), 404, "/v1/nothing")


def test_a_prompt_that_cannot_fit_is_a_400(agent):
    with serve(agent, max_tokens=4000) as (client, _):
        with pytest.raises(openai.BadRequestError, match="max_new_tokens|budget"):
            ask(client, max_tokens=3000)


def test_with_a_key_every_route_but_health_needs_it(server):
    client, url = server
    for key in ("wrong", ""):
        bad = openai.OpenAI(base_url=url + "/v1", api_key=key or "x", max_retries=0,
                            default_headers={} if key else {"Authorization": ""})
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()
        with pytest.raises(openai.AuthenticationError):
            ask(bad)
    assert_error(httpx.get(url + "/v1/personas/mara"), 401, "API key")
    assert_error(httpx.post(url + "/v1/audio/speech", json={"input": "hi", "voice": "mara"}), 401, "API key")
    assert httpx.get(url + "/openapi.json").status_code == 401
    assert health(url)["status"] == "ok"
    assert [m.id for m in client.models.list()]


def test_the_key_is_never_logged_or_echoed(agent, caplog):
    import logging

    caplog.set_level(logging.DEBUG)
    with serve(agent, key="sk-very-secret") as (client, url):
        ask(client, max_tokens=2)
        refused = httpx.get(url + "/v1/models", headers={"Authorization": "Bearer sk-very-secre"})
        assert refused.status_code == 401 and "sk-very-secre" not in refused.text
    assert "sk-very-secre" not in caplog.text
    assert "sk-very-secret" not in repr(ServerSettings(api_key="sk-very-secret"))


def test_without_a_key_loopback_is_open(agent):
    with serve(agent, key=None) as (client, url):
        assert ask(client, max_tokens=2).choices[0].message.content
        assert httpx.get(url + "/openapi.json").status_code == 200


@pytest.mark.parametrize("host, key, ok", [
    ("127.0.0.1", None, True), ("localhost", None, True), ("::1", None, True), ("127.0.0.2", None, True),
    ("0.0.0.0", None, False), ("192.168.1.5", None, False), ("example.org", None, False), ("::", None, False),
    ("0.0.0.0", "k", True)])
def test_binding_beyond_loopback_needs_a_key(host, key, ok):
    settings = ServerSettings(host=host, api_key=key)
    if ok:
        check_bind(settings)
    else:
        with pytest.raises(ConfigError, match="PERSONAE_API_KEY"):
            check_bind(settings)


def test_serve_refuses_before_loading_anything(tmp_path, monkeypatch):
    from agent.server import serve as run_server

    monkeypatch.delenv("PERSONAE_API_KEY", raising=False)
    monkeypatch.setenv("PERSONAE_HOST", "0.0.0.0")
    agent = Agent(load_config(TINY_CONFIG, ["lm.name_or_path=/no/such/model.gguf"]), home=tmp_path)
    with pytest.raises(ConfigError, match="0.0.0.0"):
        run_server(agent)  # a missing model would raise MissingWeights: the bind check came first
    monkeypatch.setenv("PERSONAE_PORT", "not-a-port")
    with pytest.raises(ConfigError, match="PERSONAE_PORT"):
        run_server(agent, host="127.0.0.1")


# --- job threads: concurrency, queue full, disconnects ---------------------------------------------------

@pytest.fixture()
def slow_decoding(monkeypatch):
    """Every generated token takes 10 ms more, so a long reply is still running when the test acts."""
    from agent.chat.decoding import CachedDecoder

    step = CachedDecoder.step
    monkeypatch.setattr(CachedDecoder, "step", lambda self, token: time.sleep(0.01) or step(self, token))


def test_a_long_reply_does_not_hold_the_model_for_another_client(agent, slow_decoding):
    with serve(agent, max_streams=2, max_tokens=1500) as (client, url):
        long = ask(client, stream=True, max_tokens=1500, user="long")  # about 15 s if it ran to the end
        next(iter(long))
        start = time.perf_counter()
        assert ask(client, max_tokens=3, user="short").choices[0].message.content
        assert time.perf_counter() - start < 5  # answered beside the long one, not after it
        assert health(url)["running"] == 1
        long.close()


def test_a_full_queue_answers_429_at_once(agent, slow_decoding):
    with serve(agent, max_streams=1, queue_size=1, max_tokens=1500) as (client, url):
        long = ask(client, stream=True, max_tokens=1500)
        next(iter(long))
        wait_for(lambda: health(url)["busy"])
        queued = []
        waiter = threading.Thread(target=lambda: queued.append(ask(client, max_tokens=2)))
        waiter.start()
        wait_for(lambda: health(url)["queued"] == 1)
        start = time.perf_counter()
        with pytest.raises(openai.RateLimitError) as caught:
            ask(client, max_tokens=2)
        assert time.perf_counter() - start < 2
        assert int(caught.value.response.headers["retry-after"]) >= 1
        assert caught.value.body["code"] == "queue_full"
        long.close()
        waiter.join(30)
        assert queued and queued[0].choices[0].message.content


def test_a_client_that_disconnects_mid_stream_frees_the_worker(agent, slow_decoding):
    with serve(agent, max_tokens=1500) as (client, url):
        stream = ask(client, stream=True, max_tokens=1500, user="gone")  # about 15 s if it ran to the end
        pieces = iter(stream)
        next(pieces), next(pieces)
        stream.close()
        assert wait_for(lambda: not health(url)["busy"], seconds=5) < 5
        assert health(url)["cancelled"] == 1
        partial = stored(agent, "gone")[-1][1]  # at most what the client received (the next tests check it)
        assert ask(client, max_tokens=2).choices[0].message.content  # the worker serves the next request
        assert len(partial) < 2000


def test_a_client_that_gives_up_on_a_plain_request_frees_the_worker(agent, slow_decoding):
    with serve(agent, max_tokens=1500) as (_, url):
        with pytest.raises(httpx.TimeoutException):
            post(url, {"model": "tess", "max_tokens": 1500, "messages": [{"role": "user", "content": "hi"}]}, timeout=1.0)
        assert wait_for(lambda: not health(url)["busy"], seconds=5) < 5
        assert health(url)["cancelled"] == 1


def test_a_client_that_disconnects_mid_stream_leaves_only_what_it_received_stored(agent, held_reply):
    """The model is held once 3 pieces are out; the client reads exactly those and goes away; what the
    session stores of the reply is that text, though the model wrote on until it saw the disconnect."""
    from conftest import read_held_stream

    app = create_app(agent, ServerSettings(api_key="sk-test"))
    jobs = app.state.personae.jobs
    with running(app) as url:
        with httpx.stream("POST", url + "/v1/chat/completions", headers={"Authorization": "Bearer sk-test"},
                          json={"model": "tess", "stream": True, "max_tokens": 200, "user": "cut",
                                "messages": [{"role": "user", "content": "Hello there"}]}, timeout=60) as response:
            received = read_held_stream(response, held_reply)
        wait_for(lambda: any(job.cancel.is_set() for job in jobs.running_jobs()))  # the disconnect is seen
        held_reply.release.set()  # the model writes one more piece, then stops and stores its turn
        wait_for(lambda: jobs.completed >= 1 and jobs.running == 0 and not jobs.queued)
        assert received.strip()
        expected = [("assistant", "Ahoy."), ("user", "Hello there"), ("assistant", received.strip())]
        assert stored_once_settled(agent, "cut", expected) == expected


def test_a_plain_request_whose_client_left_stores_none_of_the_turn(agent, slow_decoding):
    """Nothing of the reply reached the client, so neither it nor the message is kept: a client that
    resends the conversation continues the stored one."""
    with serve(agent, max_tokens=1500) as (_, url):
        with pytest.raises(httpx.TimeoutException):
            post(url, {"model": "tess", "max_tokens": 1500, "user": "left",
                       "messages": [{"role": "user", "content": "hi"}]}, timeout=1.0)
        wait_for(lambda: health(url)["completed"] >= 1 and not health(url)["busy"] and not health(url)["queued"])
        assert stored_once_settled(agent, "left", [("assistant", "Ahoy.")]) == [("assistant", "Ahoy.")]


def test_a_client_that_gives_up_while_its_prompt_is_fitted_frees_its_job(agent, monkeypatch):
    """The job's cancel reaches fit_prompt: it stops at its next tokenisation, not after the reply."""
    import agent.chat.prompt as prompt

    tokenise = prompt._token_ids
    monkeypatch.setattr(prompt, "_token_ids", lambda *args: time.sleep(2) or tokenise(*args))
    with serve(agent, max_tokens=1500) as (_, url):
        with pytest.raises(httpx.TimeoutException):  # two fits and a render of the prefix: over 6 s if it ran on
            post(url, {"model": "tess", "max_tokens": 1500, "messages": [{"role": "user", "content": "hi"}]}, timeout=1.0)
        assert wait_for(lambda: not health(url)["busy"], seconds=4) < 4
        assert health(url)["cancelled"] == 1


# --- memory ------------------------------------------------------------------------------------------

def test_a_sessions_memory_can_be_read_added_and_forgotten(server, agent):
    client, url = server
    ask(client, "hello", user="mem-1")
    headers = {"Authorization": "Bearer sk-test"}
    r = httpx.post(url + "/v1/sessions/mem-1/memory", json={"model": "tess", "text": "the key is under the mat"},
                   headers=headers, timeout=60)
    assert r.status_code == 200, r.text
    note = r.json()["id"]
    shown = httpx.get(url + "/v1/sessions/mem-1/memory", params={"model": "tess"}, headers=headers, timeout=60).json()
    assert shown["notes"] == [{"id": note, "text": "the key is under the mat"}] and shown["object"] == "memory"
    sid = agent.history.latest_session("tess", "openai:mem-1")
    assert "the key is under the mat" in agent.open_session(session_id=sid).prompt_for(
        agent.history.messages(sid)).text  # the note reaches the prompt
    r = httpx.delete(url + f"/v1/sessions/mem-1/memory/{note}", params={"model": "tess"}, headers=headers, timeout=60)
    assert r.status_code == 200 and "forgot" in r.json()["result"]
    assert httpx.get(url + "/v1/sessions/mem-1/memory", params={"model": "tess"}, headers=headers, timeout=60).json()["notes"] == []
    bad = httpx.delete(url + "/v1/sessions/mem-1/memory/seven", params={"model": "tess"}, headers=headers, timeout=60)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "memory"
    empty = httpx.post(url + "/v1/sessions/mem-1/memory", json={"model": "tess", "text": ""}, headers=headers, timeout=60)
    assert empty.status_code == 400
    assert httpx.get(url + "/v1/sessions/mem-1/memory", params={"model": "nobody"}, headers=headers, timeout=60).status_code == 404
    assert httpx.get(url + "/v1/sessions/mem-1/memory", params={"model": "tess"}, timeout=60).status_code == 401


# --- text that is not Unicode, bodies that are not JSON objects, numbers out of range -----------------------

BAD_TEXT = "bad \ud800 text"  # json.dumps writes it as JSON's "\ud800", which decodes to a lone surrogate
HI = [{"role": "user", "content": "hi"}]


def send(url: str, path: str, body, *, content_type: str = "application/json") -> httpx.Response:
    """POST `body` (json.dumps'd unless bytes) as it is, with `content_type`."""
    import json

    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(url + path, content=content, headers={"Authorization": "Bearer sk-test",
                                                            "Content-Type": content_type})


@pytest.mark.parametrize("path, body, param", [
    ("/v1/chat/completions", {"model": "tess", "messages": [{"role": "system", "content": "Be brief."}, *HI,
                                                            {"role": "user", "content": BAD_TEXT}]}, "messages[2].content"),
    ("/v1/chat/completions", {"model": "tess", "messages": [{"role": "user", "content": [{"type": "text", "text": BAD_TEXT}]}]},
     "messages[0].content"),
    ("/v1/chat/completions", {"model": "tess", "messages": [{"role": "user", "content": "hi", "name": BAD_TEXT}]},
     "messages[0].name"),
    ("/v1/chat/completions", {"model": "tess", "stop": ["ok", BAD_TEXT], "messages": HI}, "stop"),
    ("/v1/chat/completions", {"model": "tess", "user": BAD_TEXT, "messages": HI}, "user"),
    ("/v1/chat/completions", {"model": BAD_TEXT, "messages": HI}, "model"),
    ("/v1/chat/completions", {"model": "mara+hale", "messages": [{"role": "user", "content": BAD_TEXT}]},
     "messages[0].content"),  # a group scene
    ("/v1/sessions/s1/memory", {"model": "tess", "text": BAD_TEXT}, "text"),
    ("/v1/personas/generate", {"idea": BAD_TEXT}, "idea"),
    ("/v1/audio/speech", {"input": BAD_TEXT, "voice": "tess"}, "input"),
])
def test_text_that_is_not_unicode_is_a_400_naming_the_field(server, agent, path, body, param):
    client, url = server
    error = assert_error(send(url, path, body), 400, param, "lone surrogate", "U+D800")
    assert error["param"] == param
    with agent.history._connect() as db:
        assert db.execute("SELECT COUNT(*) FROM sessions").fetchone()[0] == 0
    assert ask(client, max_tokens=2).choices[0].message.content  # the server is fine


@pytest.mark.parametrize("body, words", [
    ({"model": "tess", "seed": -1, "messages": HI}, ["seed", "greater than or equal to 0"]),
    ({"model": "tess", "seed": 2**64, "messages": HI}, ["seed", "less than or equal to"]),
    ({"model": "tess", "top_p": 0, "messages": HI}, ["top_p"]),
    ({"model": "tess", "max_tokens": 0, "messages": HI}, ["max_tokens"]),
    ({"model": "tess", "temperature": -0.5, "messages": HI}, ["temperature"]),
])
def test_numbers_out_of_range_are_refused_by_the_schema_at_once(server, body, words):
    _, url = server
    start = time.perf_counter()
    error = assert_error(send(url, "/v1/chat/completions", body), 400, *words)
    assert error["param"] == words[0] and time.perf_counter() - start < 1


def test_a_generate_request_with_a_negative_seed_is_refused(server):
    _, url = server
    error = assert_error(send(url, "/v1/personas/generate", {"idea": "a baker", "seed": -3}), 400, "seed")
    assert error["param"] == "seed"


@pytest.mark.parametrize("content, content_type, words", [
    (b"{not json", "application/json", ["the body is not valid JSON", "line 1 column 2"]),
    (b'{"model": "tess",\n "messages": []]', "application/json", ["not valid JSON", "line 2 column"]),
    (b"", "application/json", ["the body is empty"]),
    (b'[{"model": "tess"}]', "application/json", ["the body must be a JSON object, got an array"]),
    (b'{"model": "tess", "messages": [{"role": "user", "content": "hi"}]}', "application/x-www-form-urlencoded",
     ["Content-Type must be application/json", "application/x-www-form-urlencoded"]),
    (b"model=tess", "text/plain", ["Content-Type must be application/json"]),
])
def test_a_body_that_is_not_a_json_object_says_what_is_wrong(server, content, content_type, words):
    _, url = server
    error = assert_error(send(url, "/v1/chat/completions", content, content_type=content_type), 400, *words)
    assert "valid dictionary" not in error["message"]


def test_reading_an_unknown_sessions_memory_is_a_404_that_stores_nothing(server, agent):
    _, url = server
    headers = {"Authorization": "Bearer sk-test"}

    def sessions() -> int:
        with agent.history._connect() as db:
            return db.execute("SELECT COUNT(*) FROM sessions").fetchone()[0]

    for ident in ("never-seen-1", "never-seen-2"):
        shown = httpx.get(url + f"/v1/sessions/{ident}/memory", params={"model": "tess"}, headers=headers)
        error = assert_error(shown, 404, ident)
        assert error["code"] == "session_not_found" and error["type"] == "not_found_error"
        assert_error(httpx.delete(url + f"/v1/sessions/{ident}/memory/all", params={"model": "tess"},
                                  headers=headers), 404, ident)
    assert sessions() == 0
    ask(server[0], user="seen", max_tokens=2)
    assert httpx.get(url + "/v1/sessions/seen/memory", params={"model": "tess"}, headers=headers).status_code == 200
    assert_error(httpx.get(url + "/v1/sessions/seen/memory", params={"model": "mara"}, headers=headers), 404, "seen")
    assert sessions() == 1
