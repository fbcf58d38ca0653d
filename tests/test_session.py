import threading

import pytest

from agent.chat.prompt import Cancelled
from agent.chat.session import _strip_name_prefix
from agent.persona.card import CharacterCard
from agent.persona.store import save_persona


def test_greeting_reply_and_history(tiny_agent):
    s = tiny_agent.open_session("mara")
    assert s.greeting.startswith("*Captain Mara Vell")
    reply = "".join(s.reply("Hello, captain"))
    assert s.messages[-2].content == "Hello, captain" and s.messages[-1].content == reply.strip()
    assert s.last_stats.new_tokens > 0


def test_resume_continues_the_last_session(tiny_agent):
    s = tiny_agent.open_session("mara")
    "".join(s.reply("remember the password is kraken"))
    resumed = tiny_agent.open_session("mara", resume=True)
    assert resumed.id == s.id and resumed.messages == s.messages
    fresh = tiny_agent.open_session("mara")
    assert fresh.id != s.id and len(fresh.messages) == 1


def test_retry_replaces_the_last_reply_in_memory_and_on_disk(tiny_agent):
    s = tiny_agent.open_session("mara", )
    "".join(s.reply("hi"))
    s.sampling = type(s.sampling)(**{**s.sampling.__dict__, "temperature": 1.5, "seed": 5})
    new = "".join(s.retry()).strip()
    assert s.messages[-1].content == new
    assert tiny_agent.history.messages(s.id)[-1].content == new
    assert len(s.messages) == 3


def test_retry_without_a_reply_is_refused(tiny_agent):
    s = tiny_agent.open_session("mara")
    assert not s.can_retry
    with pytest.raises(ValueError):
        list(s.retry())


def test_a_reply_cancelled_while_its_prompt_is_fitted_raises_and_keeps_nothing(tiny_agent):
    s = tiny_agent.open_session("mara")
    before = list(s.messages)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        list(s.reply("hi", cancel=cancel))
    assert s.messages == before and tiny_agent.history.messages(s.id) == before


def _plain_persona(agent, tmp_path, **fields):
    card = CharacterCard.from_fields({"name": "Echo", "description": "A test voice.", "first_mes": "Hi.", **fields}, "t")
    save_persona(card, agent.home.personas / "echo")
    return "echo"


def test_turn_n_runs_only_its_new_tokens(tiny_agent, tmp_path):
    """A turn prefills only what is new since the last reply, never the card or older history.

    (A random model's gibberish may re-tokenize differently once stored as text, so the previous
    reply may rerun; a real model's replies re-tokenize the same: see the slow test.)
    """
    name = _plain_persona(tiny_agent, tmp_path, post_history_instructions="Stay as {{char}}.")
    s = tiny_agent.open_session(name)
    tok = tiny_agent.lm.tokenizer
    "".join(s.reply("first"))
    for text in ["second message", "third message here"]:
        previous_reply = len(tok(s.messages[-1].content, add_special_tokens=False)["input_ids"])
        before = s.last_stats.prompt_tokens
        "".join(s.reply(text))
        suffix = (f"<|im_end|>\n<|im_start|>user\n{text}<|im_end|>\n<|im_start|>system\nStay as Echo.<|im_end|>\n"
                  "<|im_start|>assistant\n")
        new = len(tok(suffix, add_special_tokens=False)["input_ids"])
        assert s.last_stats.prefill_tokens <= new + previous_reply + 2, s.last_stats
        assert s.last_stats.prompt_tokens - s.last_stats.prefill_tokens >= before - 2


def test_cached_session_replies_equal_fresh_sessions(tiny_agent, tmp_path):
    """Greedy chat with the reused cache equals the same chat recomputed from scratch each turn."""
    from agent.chat.decoding import CachedDecoder

    name = _plain_persona(tiny_agent, tmp_path, post_history_instructions="Stay as {{char}}.")
    a = tiny_agent.open_session(name)
    b = tiny_agent.open_session(name)
    b.decoder = CachedDecoder(tiny_agent.lm.model, reuse_cache=False)
    for text in ["one", "two two", "three three three"]:
        assert "".join(a.reply(text)) == "".join(b.reply(text))


def test_empty_message_is_refused(tiny_agent):
    with pytest.raises(ValueError, match="empty"):
        list(tiny_agent.open_session("mara").reply("   "))


@pytest.mark.parametrize("pieces, expected", [
    (["Mara", ": Ahoy", " there"], "Ahoy there"),
    ([" ", "Ahoy"], "Ahoy"),
    (["Mar"], "Mar"),
    (["Mara is here"], "Mara is here"),
    (["Mara:"], ""),
])
def test_strip_name_prefix(pieces, expected):
    assert "".join(_strip_name_prefix(iter(pieces), "Mara")) == expected


@pytest.mark.parametrize("text", ["Mara Vell: Ahoy", "Captain Mara Vell:Ahoy", "Vell: Ahoy", "  Mara: Ahoy"])
def test_strip_partial_name_prefix(text):
    assert "".join(_strip_name_prefix(iter([text[:4], text[4:]]), "Captain Mara Vell")) == "Ahoy"


def test_correct_last_reply_changes_memory_and_store(tiny_agent):
    s = tiny_agent.open_session("mara")
    "".join(s.reply("hi"))
    s.correct_last_reply("Shorter.")
    assert s.messages[-1].content == "Shorter." and tiny_agent.history.messages(s.id)[-1].content == "Shorter."
    s.replace_history([])
    with pytest.raises(ValueError, match="does not end with a reply"):
        s.correct_last_reply("x")


def test_per_reply_sampling_leaves_the_session_options_alone(tiny_agent):
    s = tiny_agent.open_session("mara")
    before = s.sampling
    one = s.options(temperature=0.0, seed=3)
    assert one.temperature == 0.0 and one.seed == 3 and s.sampling == before
    "".join(s.reply("hi", sampling=one))
    assert s.sampling == before


def test_replace_history_keeps_the_store_and_forgets_the_drop_point(tiny_agent):
    from agent.chat.history import Message

    s = tiny_agent.open_session("mara")
    "".join(s.reply("hi"))
    stored = tiny_agent.history.messages(s.id)
    s.kept_from = 2
    s.replace_history(s.messages + [Message("user", "more"), Message("assistant", "yes")])
    assert s.kept_from == 2  # it extends the old history: the drop point holds
    s.replace_history([s.messages[0], Message("user", "something else")])
    assert s.kept_from == 0 and s.messages[-1].content == "something else"
    assert tiny_agent.history.messages(s.id) == stored


def test_fork_continues_in_a_new_stored_conversation(tiny_agent):
    s = tiny_agent.open_session("mara", channel="c1")
    "".join(s.reply("first"))
    old_id, old = s.id, tiny_agent.history.messages(s.id)
    new_id = s.fork("Hello again.", [("edited question", "edited answer")])
    assert new_id == s.id != old_id
    assert [m.content for m in tiny_agent.history.messages(new_id)] == ["Hello again.", "edited question",
                                                                        "edited answer"]
    assert tiny_agent.history.messages(old_id) == old  # the old one is untouched
    assert tiny_agent.history.latest_session("mara", "c1") == new_id
    "".join(s.reply("go on"))
    assert tiny_agent.history.messages(new_id)[-2].content == "go on"


def test_a_session_with_the_bare_lm_adds_nothing_to_the_conversation(tiny_agent):
    from agent.chat.history import Message

    s = tiny_agent.open_session(plain=True, channel="plain")
    assert s.persona is None and s.messages == [] and not s.adds_card  # no greeting either
    history = [Message("system", "You are a cat."), Message("user", "meow")]
    prompt = s.prompt_for(history)
    assert prompt.messages == [{"role": "system", "content": "You are a cat."}, {"role": "user", "content": "meow"}]
    assert prompt.text == tiny_agent.chat_backend.tokenizer.apply_chat_template(
        prompt.messages, tokenize=False, add_generation_prompt=True)
    "".join(s.reply("meow"))
    assert tiny_agent.history.session_persona(s.id) == tiny_agent.plain_model  # stored under the LM's id
    assert tiny_agent.open_session(plain=True, channel="plain", resume=True).id == s.id


def test_a_client_that_brings_the_card_gets_no_second_one(tiny_agent):
    from agent.chat.history import Message

    s = tiny_agent.open_session("mara")
    history = [Message("system", "The client's own card."), *s.messages, Message("user", "hi")]
    s.kept_from = 2
    s.leave_prompt_to_client(True)
    assert not s.adds_card and s.kept_from == 0
    text = s.prompt_for(history).text
    assert "brigantine Grey Gull" not in text and "Stay in character as" not in text and "client's own card" in text
    s.leave_prompt_to_client(False)
    assert "brigantine Grey Gull" in s.prompt_for(history).text


def test_continue_reply_reads_the_reply_open_and_extends_the_stored_one(tiny_agent):
    s = tiny_agent.open_session("mara")
    short = s.options(max_new_tokens=6)
    first = "".join(s.reply("Tell me about the ship", sampling=short)).strip()
    added = "".join(s.continue_reply(sampling=short))
    assert added.strip() and s.last_added == added.rstrip()
    whole = first + added.rstrip()
    assert len(s.messages) == 3 and s.messages[-1].content == whole == s.last_text  # updated, not a new message
    assert tiny_agent.history.messages(s.id)[-1].content == whole
    seen = s.tokenizer.decode(s.decoder.ids)  # the prompt the LM read, and what it wrote
    assert "<|im_start|>assistant\n" + first in seen and first + "<|im_end|>" not in seen


def test_continue_needs_a_reply_to_continue(tiny_agent):
    s = tiny_agent.open_session("mara")
    with pytest.raises(ValueError, match="no reply to continue"):
        list(s.continue_reply())


def test_regenerated_replies_are_kept_as_alternatives_to_choose_from(tiny_agent):
    s = tiny_agent.open_session("mara")
    first = "".join(s.reply("hi", sampling=s.options(max_new_tokens=5))).strip()
    second = "".join(s.retry(sampling=s.options(max_new_tokens=5, temperature=1.5, seed=3))).strip()
    assert s.swipes == ([first, second], 1) and len(s.messages) == 3
    assert s.choose_swipe(0) == first and s.messages[-1].content == first
    assert tiny_agent.history.messages(s.id)[-1].content == first


def test_edit_and_delete_the_newest_message_in_memory_and_on_disk(tiny_agent):
    s = tiny_agent.open_session("mara")
    "".join(s.reply("hi", sampling=s.options(max_new_tokens=5)))
    s.edit_last("Aye, the edited reply.")
    assert s.messages[-1].content == "Aye, the edited reply." == tiny_agent.history.messages(s.id)[-1].content
    assert s.delete_last().role == "assistant"
    assert [m.role for m in s.messages] == ["assistant", "user"] == [m.role for m in tiny_agent.history.messages(s.id)]
    with pytest.raises(ValueError):
        s.edit_last("  ")
