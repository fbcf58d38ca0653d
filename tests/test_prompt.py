import pytest

from agent.chat.prompt import Message, TurnContext, build_messages, fit_prompt, greeting, stop_strings, system_prompt
from agent.persona.card import CharacterCard


def _card(**fields):
    base = dict(name="Mara", description="{{char}} captains the Gull.", personality="gruff, fair",
                scenario="{{user}} boards the ship.", first_mes="Welcome aboard, {{user}}.",
                mes_example="<START>\n{{user}}: hi\n{{char}}: Ahoy.\n<START>\n{{user}}: bye\n{{char}}: Fair winds.")
    base.update(fields)
    return CharacterCard.from_fields(base, "test")


def test_system_prompt_carries_the_card_with_macros_resolved():
    text = system_prompt(_card(), "Ann")
    assert "Mara captains the Gull." in text and "Ann boards the ship." in text
    assert "Mara's personality: gruff, fair" in text
    assert "Ann: hi\nMara: Ahoy." in text and "Ann: bye\nMara: Fair winds." in text
    assert "{{" not in text and "<START>" not in text


def test_card_system_prompt_replaces_ours_and_original_inserts_it():
    assert system_prompt(_card(system_prompt="Only pirate talk."), "U").startswith("Only pirate talk.")
    text = system_prompt(_card(system_prompt="{{original}} Only pirate talk."), "U")
    assert text.startswith("You are Mara.") and "Only pirate talk." in text


def test_greeting_and_alternates():
    card = _card(alternate_greetings=["Who goes there, {{user}}?"])
    assert greeting(card, "Ann") == "Welcome aboard, Ann."
    assert greeting(card, "Ann", 1) == "Who goes there, Ann?"
    with pytest.raises(ValueError):
        greeting(card, "Ann", 2)


def test_post_history_instructions_precede_each_user_turn_so_the_user_speaks_last():
    """A small LM answers the last message it reads: with an instruction or a lore note after the user's
    words, SmolLM2-135M introduced itself or recited the lore instead of answering."""
    card = _card(post_history_instructions="Stay in character as {{char}}.")
    history = [Message("assistant", "hi"), Message("user", "yo"), Message("assistant", "ahoy"), Message("user", "who?")]
    messages = build_messages(card, history, "U", context=TurnContext(recent="Lore: the Gull."))
    phi = {"role": "system", "content": "Stay in character as Mara."}
    assert messages[2:] == [phi, {"role": "user", "content": "yo"}, {"role": "assistant", "content": "ahoy"},
                            {"role": "system", "content": "Lore: the Gull."}, phi, {"role": "user", "content": "who?"}]
    # without a note, turn N's prompt extends turn N-1's, so the KV cache covers all but the new turn
    shorter = build_messages(card, history[:2], "U")
    assert messages[:len(shorter)] == shorter


def test_stop_strings_include_the_users_line_prefix():
    assert "\nAnn:" in stop_strings(_card(), "Ann")


def _long_history(turns):
    history = [Message("assistant", "Welcome aboard.")]
    for i in range(turns):
        history += [Message("user", f"question number {i} " * 8), Message("assistant", f"answer number {i} " * 8)]
    return history + [Message("user", "the newest question")]


def test_fit_prompt_drops_oldest_whole_turns_and_keeps_card_and_greeting(tiny_llama):
    tok = tiny_llama.tokenizer
    card = _card()
    history = _long_history(30)
    full = fit_prompt(tok, card, history, "U", budget=100_000)
    assert full.dropped == 0
    budget = len(full.ids) // 2
    fitted = fit_prompt(tok, card, history, "U", budget=budget)
    assert len(fitted.ids) <= budget
    assert fitted.dropped > 0 and fitted.dropped % 2 == 0
    assert "captains the Gull" in fitted.text and "Welcome aboard." in fitted.text
    assert "the newest question" in fitted.text and "question number 0 " not in fitted.text
    assert fitted.messages[2]["role"] == "user"  # the kept history starts on a whole turn


def test_fit_prompt_start_only_moves_forward_so_the_prefix_stays_stable(tiny_llama):
    tok = tiny_llama.tokenizer
    history = _long_history(30)
    budget = len(fit_prompt(tok, _card(), history, "U", budget=100_000).ids) // 2
    first = fit_prompt(tok, _card(), history, "U", budget=budget)
    longer = history + [Message("assistant", "ok"), Message("user", "one more")]
    second = fit_prompt(tok, _card(), longer, "U", budget=budget, kept_from=first.kept_from)
    assert second.kept_from == first.kept_from  # room was left below the budget: no new drop
    assert second.ids[:len(first.ids) - 8] == first.ids[:len(first.ids) - 8]


def test_fit_prompt_raises_when_the_card_alone_is_too_big(tiny_llama):
    with pytest.raises(ValueError, match="context_tokens"):
        fit_prompt(tiny_llama.tokenizer, _card(), _long_history(0), "U", budget=20)


def test_client_system_messages_and_greeting_are_pinned(tiny_llama):
    tok = tiny_llama.tokenizer
    history = [Message("system", "Answer in French.")] + _long_history(30)
    budget = len(fit_prompt(tok, _card(), history, "U", budget=100_000).ids) // 2
    fitted = fit_prompt(tok, _card(), history, "U", budget=budget)
    assert fitted.dropped > 0
    assert "Answer in French." in fitted.text and "Welcome aboard." in fitted.text


def test_without_a_card_the_history_alone_is_the_prompt():
    history = [Message("system", "Client rules."), Message("assistant", "Hi."), Message("user", "yo")]
    assert build_messages(None, history, "Ann") == [{"role": m.role, "content": m.content} for m in history]
    assert build_messages(None, history, "Ann", context=TurnContext(recent="lore")) == \
        [{"role": "system", "content": "Client rules."}, {"role": "assistant", "content": "Hi."},
         {"role": "system", "content": "lore"}, {"role": "user", "content": "yo"}]
