"""Soft prompts in the chat path: placeholders in the prompt, cache agreement, shared persona prefixes."""
import pytest
import torch

from agent.agent import Agent
from agent.chat.decoding import CachedDecoder
from agent.config import load_config
from agent.embedding.config import FusionConfig
from agent.embedding.fusion import build_fusion, embedding_norm, save_adapter

from conftest import TINY_CONFIG


@pytest.fixture()
def soft_agent(tmp_path, tiny_llama, one_thread):
    """An agent on the tiny config with a (random, gates opened) adapter and conditioning=soft."""
    probe = Agent(load_config(TINY_CONFIG), home=tmp_path / "home", lm=tiny_llama)
    dims = probe.persona_encoder().dims
    fusion = build_fusion(FusionConfig(k=4, width=32, depth=1, heads=2), dims, 64, embedding_norm(tiny_llama.model))
    with torch.no_grad():
        for name, p in fusion.named_parameters():
            if "gate" in name:
                p.fill_(1.0)  # media-aware, so personas get different prompts
    path = save_adapter(tmp_path / "adapter.safetensors", fusion)

    def make(conditioning="soft"):
        config = load_config(TINY_CONFIG, [f"embedding.adapter={path}", f"embedding.conditioning={conditioning}"])
        return Agent(config, home=tmp_path / "home", lm=tiny_llama)
    return make


def test_soft_prompt_slots_sit_at_the_start_of_the_system_turn(soft_agent):
    agent = soft_agent("soft")
    s = agent.open_session("mara")
    prompt = s.prompt_for(s.messages + [type(s.messages[0])("user", "hi")])
    slots = [i for i, t in enumerate(prompt.ids) if t < 0]
    assert len(slots) == 4 and slots == list(range(slots[0], slots[0] + 4))
    assert prompt.text.startswith("<|im_start|>system\n[soft prompt: 4 vectors]You are Captain Mara Vell.")
    assert "spyglass" in prompt.text  # the greeting stays
    assert "Port Royal" not in prompt.text.split("<|im_end|>")[0]  # soft: the card text is left out
    with_card = soft_agent("soft+card").open_session("mara").prompt_for(prompt_history(s))
    assert len(with_card.ids) > len(prompt.ids) + 100


def prompt_history(s):
    return s.messages + [type(s.messages[0])("user", "hi")]


def test_personas_get_different_soft_prompts_and_they_change_the_reply_logits(soft_agent):
    agent = soft_agent("soft")
    mara, hale = agent.soft_prompt(agent.persona("mara")), agent.soft_prompt(agent.persona("hale"))
    assert mara.shape == (4, 64) and not torch.allclose(mara, hale)
    s = agent.open_session("mara")
    ids = s.prompt_for(prompt_history(s)).ids
    a, _ = CachedDecoder(agent.lm.model, soft=mara).prefill(ids)
    b, _ = CachedDecoder(agent.lm.model, soft=hale).prefill(ids)
    assert not torch.allclose(a, b)


def test_cached_and_uncached_generation_agree_with_soft_prompts(soft_agent):
    agent = soft_agent("soft+card")
    a, b = agent.open_session("pixel"), agent.open_session("pixel")
    b.decoder = CachedDecoder(agent.lm.model, reuse_cache=False, soft=b.soft)
    for text in ["hey", "what now", "go on then"]:
        assert "".join(a.reply(text)) == "".join(b.reply(text))


def test_a_second_session_reuses_the_persona_prefix(tiny_agent):
    first = tiny_agent.open_session("hale")
    "".join(first.reply("good day"))
    second = tiny_agent.open_session("hale")
    "".join(second.reply("good day to you"))
    assert tiny_agent.prefixes.hits == 1
    stats = second.last_stats
    assert stats.prefill_tokens < stats.prompt_tokens // 4, stats
    fresh = tiny_agent.open_session("hale")
    fresh.decoder = CachedDecoder(tiny_agent.lm.model, reuse_cache=False)
    fresh.prefixes = None
    third = tiny_agent.open_session("hale")
    assert "".join(third.reply("good day to you")) == "".join(fresh.reply("good day to you"))


def test_soft_conditioning_without_an_adapter_is_a_config_error():
    from agent.config import ConfigError

    with pytest.raises(ConfigError, match="embedding.adapter"):
        load_config(TINY_CONFIG, ["embedding.conditioning=soft"])


def test_an_adapter_for_other_models_is_a_clear_config_error(tmp_path, tiny_llama):
    from agent.config import ConfigError

    probe = Agent(load_config(TINY_CONFIG), home=tmp_path / "home", lm=tiny_llama)
    dims = {**probe.persona_encoder().dims, "audio": 768}  # as if trained with Whisper small
    fusion = build_fusion(FusionConfig(k=4, width=32, depth=1, heads=2), dims, 576, 1.0)  # and a 576-wide LM
    path = save_adapter(tmp_path / "other.safetensors", fusion)
    config = load_config(TINY_CONFIG, [f"embedding.adapter={path}", "embedding.conditioning=soft"])
    with pytest.raises(ConfigError, match="trained for other models.*LM width: adapter 576.*audio: adapter 768"):
        Agent(config, home=tmp_path / "home", lm=tiny_llama).open_session("mara")


def test_missing_adapter_file_names_it(tmp_path, tiny_llama):
    from agent.models.packages import MissingWeights

    config = load_config(TINY_CONFIG, ["embedding.adapter=/no/such/adapter.safetensors", "embedding.conditioning=soft"])
    agent = Agent(config, home=tmp_path, lm=tiny_llama)
    with pytest.raises(MissingWeights, match="/no/such/adapter.safetensors"):
        agent.open_session("mara")
