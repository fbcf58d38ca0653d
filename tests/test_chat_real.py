"""The embedded default's LM on real weights: in-character replies and KV-cache reuse (slow)."""
import dataclasses

import pytest

from agent.agent import Agent
from agent.chat.decoding import CachedDecoder
from agent.config import load_config

pytestmark = pytest.mark.slow


@pytest.fixture()
def agent(tmp_path, smollm2):
    # transformers: its cached and recomputed greedy replies are equal token for token (tests/test_llamacpp.py covers llama.cpp)
    return Agent(load_config(None, ["lm.backend=transformers", "chat.temperature=0", "chat.max_new_tokens=40"]),
                 home=tmp_path, lm=smollm2)


def test_reply_is_in_character_and_the_cache_makes_turn_two_cheap(agent):
    agent.config = dataclasses.replace(agent.config, lore=dataclasses.replace(agent.config.lore, enabled=False))
    s = agent.open_session("mara")
    first = "".join(s.reply("Hello! What is the name of your ship?"))
    assert len(first.split()) >= 5
    assert "User:" not in first
    "".join(s.reply("Where are we sailing tonight?"))
    stats = s.last_stats
    assert stats.prefill_tokens < 60 < stats.prompt_tokens, stats  # only the new turn ran


def test_changing_lore_costs_the_last_turn_and_new_turn_not_the_history(agent):
    """Key-activated lore sits right before the newest message, so turn 3 reruns turn 2 (user line, post-history
    instructions, reply), the new lore note and the new turn, never the card or older turns."""
    s = agent.open_session("mara")
    tok = agent.lm.tokenizer
    for text in ["Hello! What is the name of your ship?", "Who is your quartermaster?", "Where are we going?"]:
        "".join(s.reply(text))
    lore = s.context.report.lore
    assert lore is not None and any("Tobias" in f.entry.content for f in lore.fired)  # scan_depth 4 still sees it
    stats = s.last_stats

    def count(text):
        return len(tok(text, add_special_tokens=False)["input_ids"])

    turn_2 = count(s.messages[-4].content) + count(s.messages[-3].content)  # user line and reply
    new_turn = count(s.messages[-2].content) + 2 * count(s.persona.card.post_history_instructions)
    note = count(s.context.build(s.messages[:-1], s.kept_from, archive=False).recent)
    assert stats.prefill_tokens <= turn_2 + new_turn + note + 40 < stats.prompt_tokens, (stats, turn_2, new_turn, note)


def test_greedy_chat_with_reused_cache_equals_recomputed(agent):
    a, b = agent.open_session("pixel"), agent.open_session("pixel")
    b.decoder = CachedDecoder(agent.lm.model, reuse_cache=False)
    for text in ["hey, what's up?", "can you get me into the tower?"]:
        assert "".join(a.reply(text)) == "".join(b.reply(text))
    assert a.last_stats.prefill_tokens < b.last_stats.prefill_tokens // 4
