"""agent/embedding/reader.py and deep_prefix.py: the readers (LoRA, deep prefixes) of soft prompts, on only with them."""
import pytest
import torch

from agent.chat.decoding import CachedDecoder
from agent.config import load_config
from agent.embedding.reader import ReaderConfig, add_reader, attach_reader, has_reader, reader_weights, reading
from agent.models.lm import load_lm

from conftest import TINY_CONFIG
from test_training import SMALL_FUSION, train_config, write_dataset


@pytest.fixture()
def fresh_lm():
    """A tiny LM of the test's own (a reader changes the model in place)."""
    torch.manual_seed(0)
    return load_lm("random:llama")


def _with_lora():
    lm = load_lm("random:llama")
    add_reader(lm.model, ReaderConfig(rank=2))
    return lm.model


def _logits(lm, soft=None):
    ids = lm.tokenizer("hello there, captain", add_special_tokens=False)["input_ids"]
    if soft is not None:
        ids = [-1, -2] + ids
    return CachedDecoder(lm.model, soft=soft).prefill(ids)[0]


@pytest.mark.parametrize("kind", ["lora", "prefix"])
def test_the_reader_starts_harmless_and_acts_only_with_soft_vectors(fresh_lm, kind):
    soft = torch.randn(2, fresh_lm.model.config.hidden_size)
    plain, with_soft = _logits(fresh_lm), _logits(fresh_lm, soft)
    params = add_reader(fresh_lm.model, ReaderConfig(rank=4, targets=("q_proj", "v_proj"), kind=kind))
    assert has_reader(fresh_lm.model) and params and all(p.requires_grad for p in params)
    torch.testing.assert_close(_logits(fresh_lm, soft), with_soft)  # B (LoRA) or the gates start at zero
    with torch.no_grad():
        for p in params:
            p.add_(0.5)  # as if trained
    assert not torch.allclose(_logits(fresh_lm, soft), with_soft)  # now it reads the soft prompt differently
    torch.testing.assert_close(_logits(fresh_lm), plain)  # and the LM without soft vectors is untouched
    with torch.no_grad():
        with reading(fresh_lm.model, soft):
            on = fresh_lm.model(torch.tensor([[5, 6, 7]])).logits[0, -1]
        off = fresh_lm.model(torch.tensor([[5, 6, 7]])).logits[0, -1]
    assert not torch.allclose(on, off)  # on inside `reading` with soft vectors, off outside
    with pytest.raises(ValueError, match="already has a reader"):
        add_reader(fresh_lm.model, ReaderConfig())
    from agent.embedding.reader import remove_reader

    remove_reader(fresh_lm.model)
    assert not has_reader(fresh_lm.model)
    torch.testing.assert_close(_logits(fresh_lm, soft), with_soft)  # the plain LM again


def _train_with_reader(tmp_path, lm, kind: str):
    """Trains the tiny adapter with a rank-2 reader of `kind` on `lm`; returns the adapter file."""
    from agent.training import train

    dataset = write_dataset(tmp_path / "data")
    config = load_config(TINY_CONFIG, SMALL_FUSION + [f"fusion.reader={kind}", "fusion.reader_rank=2"])
    cfg = train_config(dataset, tmp_path, batch_size=6, epochs=6, lr=1e-2)
    summary = train(config, cfg, home=tmp_path / "home", lm=lm)
    assert summary["last_loss"] < 0.9 * summary["first_loss"]
    return tmp_path / "adapters" / "tiny.safetensors"


def test_training_with_a_reader_saves_it_and_chat_loads_it(tmp_path, fresh_lm):
    from agent.agent import Agent

    out = _train_with_reader(tmp_path, fresh_lm, "lora")
    saved, meta = reader_weights(fresh_lm.model, ReaderConfig(rank=2))
    assert saved and any(t.abs().sum() > 0 for n, t in saved.items() if "lora_B" in n)  # B moved off zero
    other = load_lm("random:llama")
    assert attach_reader(other.model, out).rank == 2
    mine = dict(other.model.named_parameters())
    assert all(torch.equal(mine[n[len("reader."):]], t) for n, t in saved.items())
    from agent.embedding.fusion import load_adapter, save_adapter

    plain = save_adapter(tmp_path / "plain.safetensors", load_adapter(out))  # the same adapter, no reader
    bare = load_lm("random:llama")
    assert attach_reader(bare.model, plain) is None and not has_reader(bare.model)
    chat = Agent(load_config(TINY_CONFIG, SMALL_FUSION + ["embedding.conditioning=soft", f"embedding.adapter={out}",
                                                         "lm.backend=transformers"]),
                 home=tmp_path / "home", lm=load_lm("random:llama"))
    session = chat.open_session("mara")
    assert has_reader(chat.lm.model) and "".join(session.reply("Hello!")) is not None


def test_a_reader_on_another_lm_is_refused(tmp_path, fresh_lm):
    from agent.embedding.fusion import build_fusion, save_adapter
    from agent.embedding.config import FusionConfig

    add_reader(fresh_lm.model, ReaderConfig(rank=2, targets=("q_proj",)))
    path = save_adapter(tmp_path / "a.safetensors", build_fusion(FusionConfig(k=2, width=8, depth=1, heads=2),
                                                                 {"text": 64}, 64, 1.0),
                        reader_weights(fresh_lm.model, ReaderConfig(rank=2, targets=("q_proj",))))
    qwen = load_lm("random:qwen")
    add_reader(qwen.model, ReaderConfig(rank=4, targets=("q_proj",)))  # another rank: other shapes
    with pytest.raises(ValueError, match=r"a\.safetensors: its reader \(lora\) does not fit"):
        attach_reader(qwen.model, path)


def test_bad_reader_settings_are_named(fresh_lm):
    from agent.config import ConfigError

    with pytest.raises((ConfigError, ValueError), match="fusion.reader must be none, lora or prefix"):
        load_config(TINY_CONFIG, ["fusion.reader=lorra"])
    with pytest.raises((ConfigError, ValueError), match="fusion.reader_rank must be >= 1"):
        load_config(TINY_CONFIG, ["fusion.reader_rank=0"])
    with pytest.raises(ValueError, match="fusion.reader_targets 'qproj' names no module of this LM"):
        add_reader(fresh_lm.model, ReaderConfig(targets=("qproj",)))
    assert not has_reader(fresh_lm.model)


def test_a_deep_prefix_is_read_at_every_position_and_survives_a_save(tmp_path, fresh_lm):
    from agent.embedding.deep_prefix import get_prefix
    from agent.embedding.fusion import build_fusion, save_adapter
    from agent.embedding.config import FusionConfig

    d = fresh_lm.model.config.hidden_size
    soft = torch.randn(2, d)
    add_reader(fresh_lm.model, ReaderConfig(rank=3, kind="prefix"))
    prefix = get_prefix(fresh_lm.model)
    assert prefix.attn_gate.shape == (fresh_lm.model.config.num_hidden_layers, fresh_lm.model.config.num_attention_heads)
    with torch.no_grad():
        prefix.attn_gate.fill_(1.0)
        prefix.up.normal_()
    ids = [-1, -2] + fresh_lm.tokenizer("hello there, captain", add_special_tokens=False)["input_ids"]
    decoder = CachedDecoder(fresh_lm.model, soft=soft)
    last, _ = decoder.prefill(ids)
    # the cached path (prefill then score) equals one uncached forward with the prefix on, at every position
    scored = decoder.score([7, 8])
    from agent.embedding.soft_prompt import inputs_embeds

    full = torch.tensor([ids + [7, 8]])
    with torch.no_grad(), reading(fresh_lm.model, soft):
        whole = fresh_lm.model(inputs_embeds=inputs_embeds(fresh_lm.model.get_input_embeddings(), full, soft)).logits[0]
    torch.testing.assert_close(last, whole[len(ids) - 1], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(scored, whole[len(ids):], rtol=1e-4, atol=1e-4)
    assert decoder.ids == ids and decoder.cache.get_seq_length() == len(ids)  # score left the cache as it was
    path = save_adapter(tmp_path / "p.safetensors", build_fusion(FusionConfig(k=2, width=8, depth=1, heads=2),
                                                                 {"text": d}, d, 1.0),
                        reader_weights(fresh_lm.model, ReaderConfig(rank=3, kind="prefix")))
    other = load_lm("random:llama")
    assert attach_reader(other.model, path).kind == "prefix"
    torch.testing.assert_close(get_prefix(other.model).up, prefix.up)
    torch.testing.assert_close(CachedDecoder(other.model, soft=soft).prefill(ids)[0], last, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match=r"p\.safetensors: its reader \(prefix\) is not the kind"):
        attach_reader(_with_lora(), path)
    qwen = load_lm("random:qwen")
    add_reader(qwen.model, ReaderConfig(rank=5, kind="prefix"))  # another rank: other shapes
    with pytest.raises(ValueError, match=r"p\.safetensors: its reader \(prefix\) does not fit"):
        attach_reader(qwen.model, path)


def test_training_a_deep_prefix_opens_its_gates_and_chat_reads_with_it(tmp_path, fresh_lm):
    from agent.agent import Agent
    from agent.embedding.deep_prefix import get_prefix

    out = _train_with_reader(tmp_path, fresh_lm, "prefix")
    assert get_prefix(fresh_lm.model).attn_gate.abs().max() > 0  # the zero gates opened
    chat = Agent(load_config(TINY_CONFIG, SMALL_FUSION + ["embedding.conditioning=soft", f"embedding.adapter={out}",
                                                         "lm.backend=transformers"]),
                 home=tmp_path / "home", lm=load_lm("random:llama"))
    session = chat.open_session("mara")
    assert "".join(session.reply("Hello!")) is not None
    loaded = get_prefix(chat.lm.model)
    torch.testing.assert_close(loaded.attn_gate, get_prefix(fresh_lm.model).attn_gate)
