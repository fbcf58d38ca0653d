"""agent/embedding/reader.py: the LoRA that learns to read soft prompts, on only while they are in the input."""
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


def _logits(lm, soft=None):
    ids = lm.tokenizer("hello there, captain", add_special_tokens=False)["input_ids"]
    if soft is not None:
        ids = [-1, -2] + ids
    return CachedDecoder(lm.model, soft=soft).prefill(ids)[0]


def test_the_reader_starts_harmless_and_acts_only_with_soft_vectors(fresh_lm):
    soft = torch.randn(2, fresh_lm.model.config.hidden_size)
    plain, with_soft = _logits(fresh_lm), _logits(fresh_lm, soft)
    params = add_reader(fresh_lm.model, ReaderConfig(rank=4, targets=("q_proj", "v_proj")))
    assert has_reader(fresh_lm.model) and params and all(p.requires_grad for p in params)
    torch.testing.assert_close(_logits(fresh_lm, soft), with_soft)  # B starts at zero: nothing changes yet
    with torch.no_grad():
        for p in params:
            p.add_(0.5)  # as if trained
    assert not torch.allclose(_logits(fresh_lm, soft), with_soft)  # now it reads the soft prompt differently
    torch.testing.assert_close(_logits(fresh_lm), plain)  # and the LM without soft vectors is untouched
    with reading(fresh_lm.model):
        assert not torch.allclose(fresh_lm.model(torch.tensor([[5, 6, 7]])).logits[0, -1], plain)
    with pytest.raises(ValueError, match="already has a reader"):
        add_reader(fresh_lm.model, ReaderConfig())
    from agent.embedding.reader import remove_reader

    remove_reader(fresh_lm.model)
    assert not has_reader(fresh_lm.model)
    torch.testing.assert_close(_logits(fresh_lm, soft), with_soft)  # the plain LM again


def test_training_with_a_reader_saves_it_and_chat_loads_it(tmp_path, fresh_lm):
    from agent.agent import Agent
    from agent.training import train

    dataset = write_dataset(tmp_path / "data")
    config = load_config(TINY_CONFIG, SMALL_FUSION + ["fusion.reader=lora", "fusion.reader_rank=2"])
    cfg = train_config(dataset, tmp_path, batch_size=6, epochs=6, lr=1e-2)
    summary = train(config, cfg, home=tmp_path / "home", lm=fresh_lm)
    assert summary["last_loss"] < 0.9 * summary["first_loss"]
    out = tmp_path / "adapters" / "tiny.safetensors"
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
    with pytest.raises(ValueError, match=r"a\.safetensors: its reader LoRA does not fit"):
        attach_reader(qwen.model, path)


def test_bad_reader_settings_are_named(fresh_lm):
    from agent.config import ConfigError

    with pytest.raises((ConfigError, ValueError), match="fusion.reader must be none or lora"):
        load_config(TINY_CONFIG, ["fusion.reader=lorra"])
    with pytest.raises((ConfigError, ValueError), match="fusion.reader_rank must be >= 1"):
        load_config(TINY_CONFIG, ["fusion.reader_rank=0"])
    with pytest.raises(ValueError, match="fusion.reader_targets 'qproj' names no module of this LM"):
        add_reader(fresh_lm.model, ReaderConfig(targets=("qproj",)))
    assert not has_reader(fresh_lm.model)
