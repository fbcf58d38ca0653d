"""agent/persona/summary.py: the card cut to a token budget, and `conditioning: summary` in chat and evaluation."""
from __future__ import annotations

import re

import pytest

from agent.chat.prompt import Message
from agent.config import ConfigError, load_config
from agent.evaluation.conditioning import MODES, Conditioning
from agent.persona.card import CharacterCard
from agent.persona.store import Persona
from agent.persona.summary import summary_card, summary_text

GULL = CharacterCard(
    name="Gull",
    description="{{char}} is a   gull who lives\non the pier at Brightsea. She steals chips from {{user}} and "
                "everyone else. Her feathers are grey.",
    personality="Loud, greedy and proud.",
    scenario="A sunny day on the pier.",
    first_mes="*squawks* Chips?",
    mes_example="<START>\n{{user}}: Hi\n{{char}}: MINE.",
    system_prompt="You are a seabird.",
    post_history_instructions="Squawk a lot.",
)


def n_tokens(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


@pytest.mark.parametrize("budget", [12, 20, 30, 45, 60, 90])
def test_the_summary_fits_its_budget_and_is_the_start_of_the_card(tiny_llama, budget):
    tok = tiny_llama.tokenizer
    text = summary_text(GULL, tok, budget)
    assert 0 < n_tokens(tok, text) <= budget
    whole = " ".join(" ".join(f.split()) for f in (GULL.description, GULL.personality, GULL.scenario))
    assert whole.startswith(text)  # the card's own words, in order, whitespace collapsed
    assert text.count("{{") == text.count("}}")  # never cut inside a macro
    assert not text.endswith(" ")


def test_a_short_card_is_kept_whole_and_a_cut_prefers_a_sentence_end(tiny_llama):
    tok = tiny_llama.tokenizer
    whole = summary_text(GULL, tok, 10_000)
    assert whole.endswith("A sunny day on the pier.") and "Loud, greedy and proud." in whole
    first_two = "{{char}} is a gull who lives on the pier at Brightsea. She steals chips from {{user}} and everyone else."
    # a budget a few tokens past the second sentence: cut at that sentence's end, not mid-word after it
    assert summary_text(GULL, tok, n_tokens(tok, first_two) + 4) == first_two
    # no sentence end in the budget: cut at a word
    cut = summary_text(GULL, tok, 20)
    assert not cut.endswith(".") and first_two.startswith(cut)


def test_text_without_spaces_is_cut_at_a_whole_character_and_never_inside_a_macro(tiny_llama):
    tok = tiny_llama.tokenizer
    card = CharacterCard(name="李白", description="李白是唐代的诗人，住在长安。他和{{user}}喜欢喝酒，也喜欢月亮。"
                                                   "他说话很有诗意，常常引用自己的诗句来回答问题。")
    seen = set()
    for budget in range(8, 80, 3):
        text = summary_text(card, tok, budget)
        assert text and card.description.startswith(text) and n_tokens(tok, text) <= budget, budget
        assert "\ufffd" not in text and text.count("{{") == text.count("}}"), budget
        seen.add(text)
    assert "李白是唐代的诗人，住在长安。" in seen  # a CJK sentence end is a place to cut
    assert len(seen) > 5


def test_a_budget_below_one_token_is_refused(tiny_llama):
    with pytest.raises(ValueError, match="summary_tokens"):
        summary_text(GULL, tiny_llama.tokenizer, 0)


def test_the_summary_card_keeps_the_name_and_greeting_and_drops_the_rest(tiny_llama):
    card = summary_card(GULL, tiny_llama.tokenizer, 30)
    assert card.name == "Gull" and card.first_mes == GULL.first_mes
    assert card.description == summary_text(GULL, tiny_llama.tokenizer, 30)
    assert (card.personality, card.scenario, card.mes_example, card.system_prompt,
            card.post_history_instructions) == ("", "", "", "", "")


def test_summary_conditioning_is_checked_in_the_config():
    assert load_config(None, ["embedding.conditioning=summary"]).embedding.conditioning == "summary"  # no adapter
    with pytest.raises(ConfigError, match="summary_tokens"):
        load_config(None, ["embedding.conditioning=summary", "embedding.summary_tokens=0"])
    with pytest.raises(ConfigError, match="card, summary, soft, soft\\+card"):
        load_config(None, ["embedding.conditioning=brief"])


def test_chat_with_summary_conditioning_shows_the_summary_instead_of_the_card(tmp_path, tiny_llama):
    from agent.agent import Agent
    from conftest import TINY_CONFIG

    agent = Agent(load_config(TINY_CONFIG, ["embedding.conditioning=summary", "embedding.summary_tokens=40"]),
                  home=tmp_path / "home", lm=tiny_llama)
    persona = agent.persona()
    summary = summary_text(persona.card, tiny_llama.tokenizer, 40)
    session = agent.open_session(save=False)
    assert session.persona.card.description == summary and session.soft is None
    assert session.persona.card.personality == "" and persona.card.personality  # the rest of the card is gone
    card_agent = Agent(load_config(TINY_CONFIG), home=tmp_path / "home2", lm=tiny_llama)

    def system_tokens(a) -> int:  # the preview's "[system: N tokens]"
        return int(re.search(r"\[system: (\d+) tokens\]", a.prompt_preview(message="hello"))[1])
    assert system_tokens(agent) < system_tokens(card_agent) - 40


def test_the_summary_mode_costs_fewer_prompt_tokens_than_the_card(tiny_llama):
    tok = tiny_llama.tokenizer
    persona = Persona(slug="gull", folder=None, card=GULL, portrait=None, voice_sample=None, settings={})
    card = Conditioning("card", MODES["card"])
    summary = Conditioning("summary", MODES["summary"], summarise=lambda c: summary_card(c, tok, 30))
    assert summary.card(persona).description == summary_text(GULL, tok, 30)
    assert summary.prompt_tokens(tok, persona, "User") < card.prompt_tokens(tok, persona, "User")
    text = summary.prompt(tok, persona, [Message("user", "hi")], "User", budget=2000).text
    assert "Squawk a lot" not in text and "MINE" not in text and "seabird" not in text
    with pytest.raises(ValueError, match="summary"):
        Conditioning("summary", MODES["summary"])
