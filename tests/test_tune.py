"""Per-persona tuning on the tiny config: it lowers that persona's loss and the file reloads."""
import pytest
import torch

from agent.config import load_config
from agent.embedding.config import FusionConfig
from agent.embedding.fusion import build_fusion, embedding_norm, save_adapter
from agent.training import TrainConfig, tune
from agent.embedding.tuned import load_tuned
from agent.training.tune import fit_card_prompt

from conftest import TINY_CONFIG
from test_training import write_dataset


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    pass


@pytest.fixture()
def adapter_config(tmp_path, tiny_llama):
    """The tiny config with a random adapter (audio + text, as the tiny encoders give) and conditioning=soft."""
    torch.manual_seed(0)
    fusion = build_fusion(FusionConfig(k=4, width=32, depth=1, heads=2), {"audio": 64, "text": 64}, 64,
                          embedding_norm(tiny_llama.model))
    path = save_adapter(tmp_path / "adapter.safetensors", fusion)
    return load_config(TINY_CONFIG, [f"embedding.adapter={path}", "embedding.conditioning=soft"]), fusion


def test_tuning_lowers_the_persona_loss_and_the_file_reloads(tmp_path, tiny_llama, adapter_config):
    config, fusion = adapter_config
    data = write_dataset(tmp_path / "data")
    cfg = TrainConfig(data_dir=str(data), reply_tokens=8, top_k=8, batch_size=3, work_dir=str(tmp_path / "work"))
    home = tmp_path / "home"
    summary = tune(config, str(data / "personas" / "hale"), home=home, steps=12, lr=2e-2, examples=3,
                   train_cfg=cfg, lm=tiny_llama)
    assert summary["final_loss"] < 0.9 * summary["initial_loss"], summary
    path = tmp_path / "home" / "personas" / "hale" / "soft_prompt.safetensors"
    assert summary["out"] == str(path) and path.is_file()
    tuned = load_tuned(path)
    assert tuned.soft.shape == (4, 64) and tuned.persona == "hale" and tuned.lm == "random:llama"
    # the tuned vectors keep the adapter's norm, like its own output
    assert torch.allclose(tuned.soft.norm(dim=-1), fusion.target_norm.expand(4), rtol=1e-4)
    assert float(tuned.metadata["final_loss"]) == pytest.approx(summary["final_loss"], abs=1e-3)


def test_chat_uses_the_tuned_prompt_only_with_the_card_it_was_fitted_to(tmp_path, tiny_llama, adapter_config, caplog):
    from agent.agent import Agent

    config, fusion = adapter_config
    data = write_dataset(tmp_path / "data")
    cfg = TrainConfig(data_dir=str(data), reply_tokens=8, top_k=8, batch_size=3, work_dir=str(tmp_path / "work"))
    home, hale = tmp_path / "home", data / "personas" / "hale"
    tune(config, str(hale), home=home, steps=3, lr=2e-2, examples=3, train_cfg=cfg, lm=tiny_llama)
    tuned = load_tuned(home / "personas" / "hale" / "soft_prompt.safetensors").soft
    agent = Agent(config, home=home, lm=tiny_llama)
    assert torch.equal(agent.soft_prompt(agent.persona(str(hale))), tuned)
    card = hale / "persona.yaml"
    card.write_text(card.read_text().replace("few words", "many words"))  # the card changed after tuning
    agent = Agent(config, home=home, lm=tiny_llama)
    fresh = agent.soft_prompt(agent.persona(str(hale)))
    assert fresh.shape == tuned.shape and not torch.allclose(fresh, tuned)  # the adapter's, not the stale fit
    assert "older card of hale" in caplog.text


def test_tuning_needs_a_trained_adapter(tmp_path, tiny_llama):
    with pytest.raises(ValueError, match="embedding.adapter"):
        tune(load_config(TINY_CONFIG), "mara", home=tmp_path / "home", lm=tiny_llama)


def test_fitting_vectors_to_the_card_lowers_its_loss_and_keeps_their_length(tmp_path, tiny_llama):
    from agent.persona.store import load_persona

    data = write_dataset(tmp_path / "data")
    chat = load_config(TINY_CONFIG).chat
    norm = embedding_norm(tiny_llama.model)
    torch.manual_seed(0)
    start = torch.randn(4, 64)
    fitted = {}
    for slug in ("mara", "hale"):
        soft, before, after = fit_card_prompt(tiny_llama, load_persona(data / "personas" / slug), start, norm, chat,
                                              steps=20, lr=0.2, max_tokens=48)
        assert after < before - 1.0, (slug, before, after)  # mean nats per card token (the random LM starts near 29)
        assert soft.shape == (4, 64) and torch.allclose(soft.norm(dim=-1), torch.full((4,), norm), rtol=1e-4)
        fitted[slug] = soft
    assert not torch.allclose(fitted["mara"], fitted["hale"], atol=1e-3)  # each fits its own card


def test_the_student_can_read_another_card_than_the_teacher(tmp_path, tiny_llama):
    """fit_soft_prompt(shown=...): the teacher reads the persona's card, the student (soft+card) the shown one."""
    import dataclasses

    from agent.persona.store import load_persona
    from agent.persona.summary import summary_card
    from agent.training.tune import fit_soft_prompt

    data = write_dataset(tmp_path / "data")
    chat = load_config(TINY_CONFIG).chat
    cfg = TrainConfig(data_dir=str(data), reply_tokens=8, top_k=8, batch_size=3, work_dir=str(tmp_path / "work"),
                      student_mode="soft+card")
    hale = load_persona(data / "personas" / "hale")
    short = dataclasses.replace(hale, card=summary_card(hale.card, tiny_llama.tokenizer, 6))
    assert short.card.description != hale.card.description
    torch.manual_seed(0)
    start, norm = torch.randn(4, 64), embedding_norm(tiny_llama.model)
    runs = {}
    for name, shown in (("card", None), ("summary", short)):
        _, before, _, n = fit_soft_prompt(tiny_llama, hale, start, norm, cfg, chat, tmp_path / "work", steps=1,
                                          lr=1e-3, examples=3, shown=shown)
        runs[name] = before
    # same teacher replies (cached once), other student prompts: the loss before fitting differs
    assert len(list((tmp_path / "work").rglob("*.safetensors"))) >= 1
    assert runs["card"] != pytest.approx(runs["summary"], abs=1e-6)


def test_tuning_with_summary_conditioning_fits_in_the_training_student_mode(tmp_path, tiny_llama, adapter_config):
    config, _ = adapter_config
    config = load_config(TINY_CONFIG, [f"embedding.adapter={config.embedding.adapter}", "embedding.conditioning=summary"])
    data = write_dataset(tmp_path / "data")
    cfg = TrainConfig(data_dir=str(data), reply_tokens=8, top_k=8, batch_size=3, work_dir=str(tmp_path / "work"))
    summary = tune(config, str(data / "personas" / "hale"), home=tmp_path / "home", steps=1, lr=1e-3, examples=3,
                   train_cfg=cfg, lm=tiny_llama)
    assert load_tuned(summary["out"]).metadata["student_mode"] == "soft"  # not "summary", which has no soft prompt
