"""Lore and memory in the prompt and in sessions (agent/chat/context.py, agent/chat/prompt.py placement)."""
import dataclasses
import json

import numpy as np
import pytest
import torch

from agent.chat.prompt import Message, TurnContext, build_messages
from agent.persona.card import CharacterCard
from agent.persona.store import save_persona

BOOK = {
    "name": "World", "scan_depth": 2, "entries": [
        {"keys": [], "constant": True, "content": "The world is called Aster.", "insertion_order": 1,
         "enabled": True, "position": "before_char"},
        {"keys": ["dragon"], "content": "Dragons of Aster breathe frost, not fire.", "insertion_order": 5,
         "enabled": True, "position": "after_char"},
        {"keys": ["tavern"], "content": "The Gilded Eel is the only tavern in {{char}}'s town.",
         "insertion_order": 6, "enabled": True},
    ]}


def _card(**fields):
    return CharacterCard.from_fields({"name": "Echo", "description": "Echo is a test voice.", "first_mes": "Hi.",
                                      **fields}, "t")


def _persona(agent, **fields):
    save_persona(_card(**fields), agent.home.personas / "echo")
    return "echo"


def fake_embedder(dim: int = 256):
    """Bag of words hashed into `dim` buckets: deterministic, and texts sharing words score higher."""
    import re
    import zlib

    def embed(texts):
        out = np.zeros((len(texts), dim), np.float32)
        for i, text in enumerate(texts):
            for word in re.findall(r"[a-z]+", text.lower()):
                if len(word) > 3:
                    out[i, zlib.crc32(word.encode()) % dim] += 1
            out[i] /= max(np.linalg.norm(out[i]), 1e-6)
        return torch.from_numpy(out)
    return embed


@pytest.fixture()
def agent(tiny_agent):
    tiny_agent._embedder = fake_embedder()
    return tiny_agent


def _with(agent, **sections):
    """The agent's config with some keys replaced: _with(agent, chat={"context_tokens": 300})."""
    cfg = agent.config
    for name, values in sections.items():
        cfg = dataclasses.replace(cfg, **{name: dataclasses.replace(getattr(cfg, name), **values)})
    agent.config = cfg
    return agent


# --- placement in the prompt ---------------------------------------------------------------------

def test_context_parts_land_where_the_docstring_says():
    history = [Message("assistant", "Hi."), Message("user", "one"), Message("assistant", "r1"), Message("user", "two")]
    ctx = TurnContext(before_char="BEFORE", after_char="AFTER", notes="NOTES", recent="RECENT",
                      depth=((0, "system", "DEPTH0"), (2, "assistant", "DEPTH2")))
    messages = build_messages(_card(post_history_instructions="PHI"), history, "User", context=ctx)
    system = messages[0]["content"]
    assert system.index("BEFORE") < system.index("Echo is a test voice.") < system.index("AFTER")
    contents = [m["content"] for m in messages[1:]]
    assert contents == ["Hi.", "NOTES", "PHI", "one", "DEPTH2", "r1", "RECENT", "PHI", "two", "DEPTH0"]
    assert messages[5]["role"] == "assistant"  # a depth entry keeps its role


def test_soft_mode_keeps_the_lore_but_not_the_card():
    ctx = TurnContext(before_char="BEFORE", after_char="AFTER")
    messages = build_messages(_card(), [Message("assistant", "Hi.")], "User", with_card=False, context=ctx)
    assert "BEFORE" in messages[0]["content"] and "AFTER" in messages[0]["content"]
    assert "test voice" not in messages[0]["content"]


def test_depth_entries_never_go_above_the_greeting():
    history = [Message("assistant", "Hi."), Message("user", "one")]
    messages = build_messages(_card(), history, "User", context=TurnContext(depth=((9, "system", "DEEP"),)))
    assert [m["content"] for m in messages[1:]] == ["Hi.", "DEEP", "one"]


# --- lore in sessions ----------------------------------------------------------------------------

def test_card_lorebook_fires_on_keys_and_keeps_the_persona_prefix(agent):
    name = _persona(agent, character_book=BOOK)
    s = agent.open_session(name)
    plain = s.prompt_for(s.messages + [Message("user", "hello there")])
    dragon = s.prompt_for(s.messages + [Message("user", "is that a dragon?")])
    assert "The world is called Aster." in plain.text  # constant: always, in the system turn
    assert "frost" not in plain.text and "frost" in dragon.text
    prefix = len(s._prefix_ids(plain))
    assert prefix > 0 and dragon.ids[:prefix] == plain.ids[:prefix]  # system turn + greeting unchanged
    system_end = dragon.text.index("Hi.")
    assert dragon.text.index("frost") > system_end  # the keyed entry sits after the greeting, by the new message
    assert "fired" in s.lore_report() and "dragon" in s.lore_report()


def test_card_placement_puts_keyed_lore_in_the_system_turn(agent):
    _with(agent, lore={"placement": "card"})
    name = _persona(agent, character_book=BOOK)
    s = agent.open_session(name)
    plain = s.prompt_for(s.messages + [Message("user", "hello there")])
    dragon = s.prompt_for(s.messages + [Message("user", "is that a dragon?")])
    assert dragon.text.index("frost") < dragon.text.index("Hi.")
    assert dragon.ids[:len(s._prefix_ids(plain))] != plain.ids[:len(s._prefix_ids(plain))]


def test_lore_macros_are_resolved(agent):
    name = _persona(agent, character_book=BOOK)
    s = agent.open_session(name)
    prompt = s.prompt_for(s.messages + [Message("user", "any tavern here?")])
    assert "Echo's town" in prompt.text and "{{char}}" not in prompt.text


def test_lore_off_means_no_lore(agent):
    _with(agent, lore={"enabled": False})
    name = _persona(agent, character_book=BOOK)
    s = agent.open_session(name)
    assert "Aster" not in s.prompt_for(s.messages + [Message("user", "a dragon")]).text


def test_a_broken_card_lorebook_is_reported_and_skipped(agent, caplog):
    name = _persona(agent, character_book={"entries": [{"keys": 5, "content": "x"}]})
    s = agent.open_session(name)
    assert "".join(s.reply("hello")) is not None
    assert "character_book" in caplog.text


def test_attached_lorebooks_join_the_cards(agent, tmp_path):
    name = _persona(agent)
    path = tmp_path / "world.json"
    path.write_text(json.dumps({"entries": {"0": {"uid": 0, "key": ["kraken"], "content": "The kraken sleeps.",
                                                  "order": 100, "position": 1}}}))
    slug, _ = agent.lore.import_file(path, name="sea")
    s = agent.open_session(name)
    assert "kraken sleeps" not in s.prompt_for(s.messages + [Message("user", "the kraken!")]).text
    agent.attach_lore(s, slug)  # this session only
    assert "kraken sleeps" in s.prompt_for(s.messages + [Message("user", "the kraken!")]).text
    assert agent.history.session_lore(s.id) == ["sea"]
    assert "kraken sleeps" not in agent.open_session(name).prompt_for(
        [Message("assistant", "Hi."), Message("user", "the kraken!")]).text
    agent.lore.attach(name, "sea")  # every session of the persona
    assert "kraken sleeps" in agent.open_session(name).prompt_for(
        [Message("assistant", "Hi."), Message("user", "the kraken!")]).text
    agent.detach_lore(s, "sea")
    assert agent.history.session_lore(s.id) == []


# --- memory in sessions --------------------------------------------------------------------------

def _long_chat(agent, s, n):
    for i in range(n):
        "".join(s.reply(f"filler message number {i} about nothing much"))


def test_turns_that_leave_the_window_are_archived_summarised_and_recalled(agent):
    _with(agent, chat={"context_tokens": 700, "max_new_tokens": 12}, memory={"min_score": 0.2})
    name = _persona(agent)
    s = agent.open_session(name)
    "".join(s.reply("my sister Marigold keeps bees in Falmouth"))
    _long_chat(agent, s, 14)
    archived, summary = agent.memory_store.state(s.id)
    assert archived > 3 and s.kept_from >= archived  # old turns left the window and were archived
    turns = agent.memory_store.items(s.id, "turn")
    assert "Marigold" in turns[0].text and turns[0].position == 1
    prompt = s.prompt_for(s.messages + [Message("user", "where does Marigold keep her bees?")])
    recalled = s.context.report.recalled
    assert recalled and recalled[0].item.id == turns[0].id
    assert "my sister Marigold keeps bees in Falmouth" in prompt.text
    assert "From earlier in this chat:" in prompt.text
    # the recalled turn sits right before the newest message, after every kept turn
    last_reply = prompt.text.rindex(s.messages[-1].content)
    assert last_reply < prompt.text.index("my sister Marigold") < prompt.text.index("where does Marigold keep her bees?")


def test_summary_comes_from_the_lm_and_sits_after_the_greeting(agent):
    _with(agent, chat={"context_tokens": 700, "max_new_tokens": 12})
    calls = []
    name = _persona(agent)
    s = agent.open_session(name)
    s.context.summarize = lambda previous, turns: calls.append((previous, list(turns))) or f"SUMMARY{len(calls)}"
    _long_chat(agent, s, 14)
    assert calls and calls[0][0] == "" and "filler message number 0" in calls[0][1][0]
    if len(calls) > 1:
        assert calls[1][0] == "SUMMARY1"  # each summary folds in the previous one
    prompt = s.prompt_for(s.messages + [Message("user", "hm")])
    assert prompt.text.index(f"SUMMARY{len(calls)}") > prompt.text.index("Hi.")


def test_real_summarize_runs_on_the_lm(agent):
    """summarize() drives the LM (tiny random: gibberish) and never returns nothing once it had something."""
    from agent.chat.summary import summarize, summary_prompt

    lm = agent.lm
    prompt = summary_prompt(lm.tokenizer, "old notes", ["User: a\nEcho: b"], user="User", char="Echo", max_tokens=16)
    assert "old notes" in prompt.text and prompt.ids == lm.tokenizer(prompt.text, add_special_tokens=False)["input_ids"]
    out = summarize(agent.chat_backend, "old notes", ["User: a\nEcho: b"], user="User", char="Echo", max_tokens=8)
    assert isinstance(out, str) and out


def test_remember_forget_and_memory_report(agent):
    name = _persona(agent)
    s = agent.open_session(name)
    n = s.remember("the password is blue lantern")
    prompt = s.prompt_for(s.messages + [Message("user", "what now?")])
    assert "- the password is blue lantern" in prompt.text
    assert f"#{n} the password is blue lantern" in s.memory_report()
    assert s.memory_snapshot()["notes"] == [{"id": n, "text": "the password is blue lantern"}]
    assert "forgot" in s.forget()
    assert "blue lantern" not in s.prompt_for(s.messages + [Message("user", "what now?")]).text
    with pytest.raises(ValueError, match="empty"):
        s.remember("  ")
    with pytest.raises(ValueError, match="memory number"):
        s.forget("seven")


def test_memory_survives_a_restart(agent, tiny_llama):
    from agent.agent import Agent

    name = _persona(agent)
    s = agent.open_session(name)
    s.remember("the cat is called Biscuit")
    "".join(s.reply("hello"))
    again = Agent(agent.config, home=agent.home, lm=tiny_llama)
    resumed = again.open_session(name, resume=True)
    assert resumed.id == s.id
    assert "Biscuit" in resumed.memory_report()
    assert "the cat is called Biscuit" in resumed.prompt_for(resumed.messages + [Message("user", "hm")]).text


def test_memory_off_and_stateless_sessions_have_no_memory(agent):
    name = _persona(agent)
    stateless = agent.open_session(name, save=False)
    with pytest.raises(ValueError, match="memory is off"):
        stateless.remember("x")
    _with(agent, memory={"enabled": False})
    off = agent.open_session(name)
    with pytest.raises(ValueError, match="memory is off"):
        off.remember("x")


def test_a_missing_embedder_keeps_the_chat_going(agent, caplog):
    from agent.models.packages import MissingWeights

    def missing():
        raise MissingWeights("no MiniLM here")
    agent.embedder = missing
    _with(agent, chat={"context_tokens": 700, "max_new_tokens": 12})
    s = agent.open_session(_persona(agent))
    s.remember("still kept as text")
    _long_chat(agent, s, 14)
    assert "memory recall is off: no MiniLM here" in caplog.text
    assert agent.memory_store.items(s.id, "turn")  # archived as text
    assert "still kept as text" in s.prompt_for(s.messages + [Message("user", "hm")]).text


def test_prompt_preview_explains_lore(agent):
    name = _persona(agent, character_book=BOOK)
    text = agent.prompt_preview(name, "a dragon!")
    assert "dragon" in text.split("-" * 60)[0] and "frost" in text


def test_lore_and_memory_give_way_when_the_turn_would_not_fit(agent):
    _with(agent, chat={"context_tokens": 400, "max_new_tokens": 12}, memory={"notes_tokens": 10_000})
    name = _persona(agent)
    s = agent.open_session(name)
    s.remember("a very long note " * 60)  # far more than the 388-token prompt budget
    prompt = s.prompt_for(s.messages + [Message("user", "hello")])
    assert "a very long note" not in prompt.text and len(prompt.ids) <= s.budget()
    assert s.context.report.gave_way and "left out to fit" in s.lore_report()
