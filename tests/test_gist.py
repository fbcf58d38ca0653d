"""Gist cells (agent/embedding/gist.py): the conditional LoRA, the gate, gradients, the decoder path and the file.
Tiny random llama, a fresh one per test (the reader is injected into it)."""
from __future__ import annotations

import pytest
import torch

from agent.chat.decoding import CachedDecoder, cache_kwarg
from agent.chat.prompt import Prompt
from agent.embedding.config import FusionConfig
from agent.embedding.gist import (GistKV, GistPlan, add_gist, copy_cache, gist_cells, load_gist, new_gist,
                                  read_card, save_gist)
from agent.embedding.kv_cells import TfIdf, _layers
from agent.embedding.persona_kv import KVSettings
from agent.embedding.reader import ReaderConfig, add_reader, remove_reader

SYSTEM = [1, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 2, 10]  # a system turn; the last 2 ids are its tail
KEPT = [0, 1, 3, 6, 9]
CHAT = [1, 60, 61, 62, 2, 10, 1, 70, 71]
READER = ReaderConfig(rank=4, alpha=8.0, targets=("q_proj", "k_proj", "v_proj"))


@pytest.fixture()
def lm():
    from agent.models.lm import load_lm

    loaded = load_lm("random:llama")
    params = add_reader(loaded.model, READER)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in params:  # B starts at 0 (harmless); random here, so the reader changes what it touches
            p.normal_(0, 0.3)
    return loaded


def _logits(model, ids, cache):
    out = model(input_ids=torch.tensor([ids]), use_cache=True, **{cache_kwarg(model): copy_cache(model, cache)})
    return out.logits[0]  # (T, V)


def _gist(model, seed=1, gate=0.5):
    torch.manual_seed(seed)
    vectors = torch.randn(3, model.config.hidden_size)
    gate = torch.full((model.config.num_hidden_layers, model.config.num_key_value_heads), gate)
    return vectors, gate


def test_the_lora_is_on_for_the_gist_forward_only(lm):
    model = lm.model
    read = read_card(model, SYSTEM, KEPT, 0.5)
    vectors, gate = _gist(model)
    with torch.inference_mode():
        cells = add_gist(model, read.cells, vectors, gate)
        chat = _logits(model, CHAT, cells)
        assert _layers(read.cells)[0][0].shape[2] == len(KEPT)  # the input cells are left as they were
        assert _layers(cells)[0][0].shape[2] == len(KEPT) + 3
        for (k, v), (k0, v0) in zip(_layers(cells), _layers(read.cells)):  # the kept cells are not touched
            assert torch.equal(k[:, :, :len(KEPT)], k0) and torch.equal(v[:, :, :len(KEPT)], v0)
        remove_reader(model)  # the base LM: the chat tokens after the same cells read exactly the same
        base_chat = _logits(model, CHAT, cells)
        assert torch.equal(chat, base_chat)
        base_cells = add_gist(model, read.cells, vectors, gate)  # no reader: other gist cells, so it was on
    gist_keys = [k[:, :, len(KEPT):] for k, _ in _layers(cells)]
    base_keys = [k[:, :, len(KEPT):] for k, _ in _layers(base_cells)]
    assert not all(torch.allclose(a, b, atol=1e-4) for a, b in zip(gist_keys, base_keys))


def test_gist_cells_follow_the_vectors_and_the_gate_starts_them_silent(lm):
    model = lm.model
    read = read_card(model, SYSTEM, KEPT, 0.5)
    a, gate = _gist(model, seed=1)
    b, _ = _gist(model, seed=2)
    with torch.inference_mode():
        ka = [k[:, :, len(KEPT):] for k, _ in _layers(add_gist(model, read.cells, a, gate))]
        kb = [k[:, :, len(KEPT):] for k, _ in _layers(add_gist(model, read.cells, b, gate))]
        shut = add_gist(model, read.cells, a, torch.zeros_like(gate))
    assert all(not torch.allclose(x, y, atol=1e-4) for x, y in zip(ka, kb))
    assert all(torch.equal(v[:, :, len(KEPT):], torch.zeros_like(v[:, :, len(KEPT):])) for _, v in _layers(shut))


def test_gradients_reach_the_gate_the_reader_and_the_vectors(lm):
    model = lm.model
    read = read_card(model, SYSTEM, KEPT, 0.5)
    vectors, _ = _gist(model)
    vectors.requires_grad_(True)
    gate = torch.zeros(model.config.num_hidden_layers, model.config.num_key_value_heads, requires_grad=True)
    loss = torch.log_softmax(_logits(model, CHAT, add_gist(model, read.cells, vectors, gate)), -1)[:-1].gather(
        1, torch.tensor(CHAT[1:])[:, None]).sum()
    loss.backward()
    lora = [p for n, p in model.named_parameters() if "lora_" in n]
    assert gate.grad.abs().sum() > 0  # gate 0: the values give no gradient yet, but the gate does
    assert vectors.grad.abs().sum() > 0  # through the gist keys' share of attention
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in lora)


def test_gist_kv_decoder_path_and_file_round_trip(lm, tmp_path):
    model = lm.model
    gist = new_gist(FusionConfig(k=3, width=16, heads=2, depth=1, harmless_start="outputs"), model, 1.0)
    with torch.no_grad():
        gist.gate.fill_(0.7)
        for p in gist.adapter.parameters():
            p.add_(0.05 * torch.randn_like(p))
    plan = GistPlan(tuple(SYSTEM), tuple(KEPT), 2, k=3)
    assert plan.prefix_ids == [SYSTEM[i] for i in KEPT] + [-1, -2, -3] + SYSTEM[-2:]
    with torch.inference_mode():
        handle = gist_cells(model, gist, 0.5, plan)
        read = read_card(model, SYSTEM, KEPT, 0.5)
        manual = _logits(model, SYSTEM[-2:] + CHAT, gist.extend(model, read))[-1]
    decoder = CachedDecoder(model)
    decoder.adopt(plan.prefix_ids, handle)
    logits, ran = decoder.prefill(plan.prefix_ids + CHAT)
    assert ran == len(CHAT)  # the cells, gist slots included, are never run again
    assert torch.allclose(logits, manual.float(), atol=1e-5)

    path = save_gist(tmp_path / "g.safetensors", gist, model, READER, 0.5)
    remove_reader(model)
    loaded, layer = load_gist(path, model)  # attaches the saved reader again
    assert layer == 0.5
    with torch.inference_mode():
        again = gist_cells(model, loaded, layer, plan)
    for (k1, v1), (k2, v2) in zip(_layers(handle), _layers(again)):
        assert torch.allclose(k1, k2, atol=1e-6) and torch.allclose(v1, v2, atol=1e-6)
    kv = GistKV(lm.tokenizer, TfIdf({}, 1), model, loaded, layer, KVSettings(m=4))
    found = kv.plan(SYSTEM, "x")
    assert isinstance(found, GistPlan) and found.k == 3 and found.prefix_ids[-5:-2] == [-1, -2, -3]
    prompt = Prompt("x", SYSTEM + CHAT, 1, 0, [{"role": "system", "content": "s"}])
    kv.system_ids = lambda prompt: SYSTEM  # the tiny tokenizer's own rendering is not what is tested here
    applied, _ = kv.apply(prompt, "x")
    assert applied.ids == found.prefix_ids + CHAT  # the gist slots stand in the prompt, with no text
