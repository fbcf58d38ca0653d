import pytest

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
