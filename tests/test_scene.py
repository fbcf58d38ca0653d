import dataclasses
import random
import sqlite3

import pytest

from agent.chat.history import HistoryStore
from agent.chat.prompt import Message
from agent.chat.scene import (Member, list_order, manual, mentioned, natural, opening_lines, talkativeness)
from agent.chat.template import StopCutter
from agent.persona.card import CharacterCard
from agent.persona.store import save_persona

ANN, BOB, CY = Member("ann", "Ann Reed", 0.5), Member("bob", "Captain Bob", 0.5), Member("cy", "Cy", 0.5)


def user(text, name="User"):
    return Message("user", text, name)


def said(slug, text):
    return Message("assistant", text, slug)


# --- the strategies: pure functions ---------------------------------------------------------------

def test_mentioned_orders_by_first_mention_and_skips_shared_words():
    assert mentioned("Cy and ann, listen; Bob too", [ANN, BOB, CY]) == ["cy", "ann", "bob"]
    two_captains = [Member("bob", "Captain Bob", 0.5), Member("mara", "Captain Mara", 0.5)]
    assert mentioned("Captain, a word", two_captains) == []
    assert mentioned("Reeds everywhere", [ANN]) == []  # whole words only


def test_natural_answers_the_named_persona():
    for seed in range(20):
        assert natural([ANN, BOB, CY], [user("Bob, what do you say?")], random.Random(seed)) == "bob"


def test_natural_never_picks_the_last_speaker_even_when_named():
    lines = [user("hi"), said("ann", "I, Ann, say so.")]
    picks = {natural([Member("ann", "Ann", 1.0), Member("bob", "Bob", 1.0)], lines, random.Random(s)) for s in range(30)}
    assert picks == {"bob"}


def test_natural_after_a_human_always_answers_and_follows_talkativeness():
    quiet, chatty = Member("ann", "Ann", 0.0), Member("bob", "Bob", 0.9)
    picks = [natural([quiet, chatty], [user("hello")], random.Random(s)) for s in range(200)]
    assert None not in picks and picks.count("bob") == 200
    mute = [Member("ann", "Ann", 0.0), Member("bob", "Bob", 0.0)]
    assert natural(mute, [user("hello")], random.Random(1)) in ("ann", "bob")
    assert natural(mute, [user("hello"), said("ann", "hm")], random.Random(1)) is None  # the human's turn


def test_natural_is_seeded():
    lines = [user("hello")]
    assert [natural([ANN, BOB, CY], lines, random.Random(s)) for s in range(10)] == \
        [natural([ANN, BOB, CY], lines, random.Random(s)) for s in range(10)]
    assert len({natural([ANN, BOB, CY], lines, random.Random(s)) for s in range(50)}) == 3


def test_list_order_rounds():
    members, rng = [ANN, BOB, CY], random.Random(0)
    lines = [said("ann", "greeting"), user("hi")]
    assert list_order(members, lines, rng) == "bob"
    lines += [said("bob", "b")]
    assert list_order(members, lines, rng) == "cy"
    lines += [said("cy", "c")]
    assert list_order(members, lines, rng) == "ann"
    lines += [said("ann", "a")]
    assert list_order(members, lines, rng) is None  # everyone spoke since the human
    assert list_order(members, lines + [user("again")], rng) == "bob"
    assert list_order([ANN], [said("ann", "x")], rng) is None


def test_manual_waits():
    assert manual([ANN, BOB], [user("Ann?")], random.Random(0)) is None


def test_talkativeness_from_card_extensions():
    card = lambda ext: CharacterCard.from_fields({"name": "X", "extensions": ext}, "t")  # noqa: E731
    assert talkativeness(card({"talkativeness": "0.8"})) == 0.8
    assert talkativeness(card({})) == 0.5 and talkativeness(card({}), 0.2) == 0.2
    assert talkativeness(card({"talkativeness": "loud"})) == 0.5
    assert talkativeness(card({"talkativeness": 7})) == 1.0


def test_opening_lines_prefer_group_only_greetings():
    a = CharacterCard.from_fields({"name": "Ann", "first_mes": "Hi {{user}}.", "group_only_greetings": ["Hello all."]}, "t")
    b = CharacterCard.from_fields({"name": "Bob", "first_mes": "Yo."}, "t")
    assert opening_lines([("bob", b), ("ann", a)], "Sam") == [said("ann", "Hello all.")]
    plain = dataclasses.replace(a, group_only_greetings=())
    assert opening_lines([("bob", b), ("ann", plain)], "Sam") == [said("bob", "Yo.")]
    assert opening_lines([("ann", plain)], "Sam") == [said("ann", "Hi Sam.")]


# --- scenes on a tiny model -----------------------------------------------------------------------

def _personas(agent, **talk):
    for slug, name in (("ann", "Ann Reed"), ("bob", "Bob"), ("cy", "Cy")):
        fields = {"name": name, "description": f"{name} is brief.", "first_mes": f"{name} waves.",
                  "extensions": {"talkativeness": str(talk.get(slug, 0.5))}}
        save_persona(CharacterCard.from_fields(fields, "t"), agent.home.personas / slug)


@pytest.fixture()
def scene_agent(tiny_agent):
    _personas(tiny_agent)
    return tiny_agent


def _scene_agent(tiny_agent, **scene):
    from agent.config import SceneConfig

    tiny_agent.config = dataclasses.replace(tiny_agent.config, scene=SceneConfig(**scene))
    return tiny_agent


def test_a_named_persona_answers_and_lines_are_saved_with_speakers(scene_agent):
    scene = scene_agent.open_scene(["ann", "bob"])
    assert scene.lines == [said("ann", "Ann Reed waves.")]
    replies = list(scene.turn("Bob, are you there?"))
    assert replies[0].slug == "bob" and replies[0].switched
    stored = scene_agent.history.messages(scene.id)
    assert stored[:2] == [said("ann", "Ann Reed waves."), user("Bob, are you there?")]
    assert [m.name for m in stored[2:]] == [r.slug for r in replies if r.text]
    assert all(a.slug != b.slug for a, b in zip(replies, replies[1:]))  # nobody twice in a row


def test_auto_turns_are_bounded(tiny_agent):
    _personas(tiny_agent, ann=1.0, bob=1.0, cy=1.0)  # everyone always wants to speak
    for bound in (0, 2):
        scene = _scene_agent(tiny_agent, max_auto_turns=bound).open_scene(["ann", "bob", "cy"])
        replies = []
        for reply in scene.turn("Hello everyone"):
            reply.finish()
            replies.append(reply)
        assert len(replies) == 1 + bound, [r.text for r in replies]


def test_manual_strategy_saves_the_message_and_next_answers(tiny_agent):
    _personas(tiny_agent)
    scene = _scene_agent(tiny_agent, strategy="manual").open_scene(["ann", "bob"])
    assert list(scene.turn("Anyone?")) == []
    assert scene_agent_messages(tiny_agent, scene)[-1] == user("Anyone?")
    replies = list(scene.turn(speaker="Ann"))
    assert [r.slug for r in replies] == ["ann"]
    again = list(scene.turn(speaker="ann"))  # asked: it may speak twice in a row
    assert [r.slug for r in again] == ["ann"]
    with pytest.raises(ValueError, match="not in this scene"):
        list(scene.turn(speaker="Zed"))


def scene_agent_messages(agent, scene):
    return agent.history.messages(scene.id)


def test_each_speaker_sees_the_scene_from_its_side(scene_agent):
    scene = scene_agent.open_scene(["ann", "bob"])
    lines = scene.lines + [user("hi"), said("bob", "Hey."), user("Ann?", "Sam")]
    view = scene.view("ann", lines)
    assert view[0].role == "system" and "Ann Reed, Bob, User and Sam" in view[0].content
    assert view[1:] == [Message("assistant", "Ann Reed: Ann Reed waves."),
                        Message("user", "User: hi\nBob: Hey.\nSam: Ann?")]
    bob = scene.view("bob", lines)
    assert bob[1:] == [Message("user", "Ann Reed: Ann Reed waves.\nUser: hi"), Message("assistant", "Bob: Hey."),
                       Message("user", "Sam: Ann?")]
    slug, prompt = scene.prompt("Ann, tell us")
    assert slug == "ann" and prompt.text.endswith("<|im_start|>assistant\nAnn Reed:")
    assert "Ann Reed is brief." in prompt.text and "Bob is brief." not in prompt.text  # its own card only


def test_stops_cover_every_other_participant(scene_agent):
    scene = scene_agent.open_scene(["ann", "bob"])
    stops = scene.stops_for("ann", scene.lines + [user("x", "Sam")])
    assert {"\nBob:", "\nUser:", "\nSam:"} <= set(stops) and "\nAnn:" not in stops and "\nAnn Reed:" not in stops
    cutter = StopCutter(stops)
    assert cutter.feed("Sure thing.\nBob: I'll go") == "Sure thing." and cutter.found == "\nBob:"
    reply = next(scene.turn("Ann?"))
    "".join(reply)
    assert "\nBob:" not in reply.text and "\nUser:" not in reply.text


def test_resume_continues_the_scene(scene_agent):
    scene = scene_agent.open_scene(["ann", "bob"])
    for r in scene.turn("Bob?"):
        r.finish()
    again = scene_agent.open_scene(["bob", "ann"], resume=True)
    assert again.id == scene.id and again.lines == scene.lines and list(again.members) == ["ann", "bob"]
    assert scene_agent.open_scene(["ann", "bob"]).id != scene.id
    assert scene_agent.open_scene(["ann", "cy"], resume=True).id not in (scene.id,)  # other members, other scene
    assert scene_agent.history.latest_session("ann") is None  # a scene is never a one-persona chat
    # the same lines give the same speaker choices after a resume
    assert again.next_speaker(again.lines + [user("hello")]) == scene.next_speaker(scene.lines + [user("hello")])


def test_invite_and_leave_are_kept(scene_agent):
    scene = scene_agent.open_scene(["ann"])
    scene.invite("cy")
    with pytest.raises(ValueError, match="already"):
        scene.invite("Cy")
    assert scene_agent.open_scene(["ann", "cy"], resume=True).id == scene.id
    assert scene.leave("Ann Reed") == "Ann Reed"
    resumed = scene_agent.open_scene(["cy"], resume=True)
    assert resumed.id == scene.id and list(resumed.members) == ["cy"]
    assert resumed.names["ann"] == "Ann Reed"  # its lines still show its name
    scene.invite("ann")
    assert list(scene_agent.open_scene(scene_id=scene.id).members) == ["cy", "ann"]


def test_each_member_keeps_its_own_memory(scene_agent):
    scene = scene_agent.open_scene(["ann", "bob"])
    scene.members["ann"].remember("the key is under the mat")
    reopened = scene_agent.open_scene(scene_id=scene.id)
    assert "under the mat" in reopened.members["ann"].memory_report()
    assert "under the mat" not in reopened.members["bob"].memory_report()


def test_unsaved_scene_writes_nothing(scene_agent):
    scene = scene_agent.open_scene(["ann", "bob"], save=False)
    for r in scene.turn("Bob?"):
        r.finish()
    assert len(scene.lines) >= 3
    assert scene_agent.history.latest_scene() is None


def test_a_database_from_before_scenes_opens(tmp_path):
    db = tmp_path / "old.db"
    with sqlite3.connect(db) as old:
        old.executescript("""
            CREATE TABLE sessions (id INTEGER PRIMARY KEY, persona TEXT NOT NULL, channel TEXT,
                                   created REAL NOT NULL, updated REAL NOT NULL);
            CREATE TABLE messages (id INTEGER PRIMARY KEY, session_id INTEGER NOT NULL REFERENCES sessions(id)
                                   ON DELETE CASCADE, role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
                                   content TEXT NOT NULL, created REAL NOT NULL);
            INSERT INTO sessions VALUES (1, 'mara', NULL, 1.0, 1.0);
            INSERT INTO messages VALUES (1, 1, 'assistant', 'Ahoy.', 1.0), (2, 1, 'user', 'hi', 1.0);
        """)
    store = HistoryStore(db)
    assert store.messages(1) == [Message("assistant", "Ahoy."), Message("user", "hi")]
    assert store.latest_session("mara") == 1
    store.append_turn(1, "again", "Aye.")
    sid = store.create_scene(["mara", "hale"], [said("mara", "Ahoy all.")])
    store.append_lines(sid, [user("hi"), said("hale", "Indeed.")])
    assert HistoryStore(db).messages(sid)[-1] == said("hale", "Indeed.")
    assert [m.content for m in store.messages(1)] == ["Ahoy.", "hi", "again", "Aye."]


def test_killing_the_process_mid_reply_loses_no_earlier_line(tmp_path):
    """A child process finishes one round of a scene, then is SIGKILLed while a persona writes the next line."""
    import textwrap
    from pathlib import Path

    from conftest import killed_midway

    repo = Path(__file__).resolve().parents[1]
    script = textwrap.dedent(f"""
        import os, signal
        from agent.agent import Agent
        from agent.config import load_config
        from agent.persona.card import CharacterCard
        from agent.persona.store import save_persona
        agent = Agent(load_config({str(repo / 'configs/tiny.yaml')!r}, ["scene.max_auto_turns=0"]), home={str(tmp_path)!r})
        for slug, name in (("ann", "Ann"), ("bob", "Bob")):
            save_persona(CharacterCard.from_fields({{"name": name, "first_mes": name + " waves."}}, "t"),
                         agent.home.personas / slug)
        scene = agent.open_scene(["ann", "bob"])
        for reply in scene.turn("Bob, first"):
            reply.finish()
        print(scene.id, flush=True)
        for reply in scene.turn("Ann, second"):
            for piece in reply:  # the guard hands out a sentence at a time: the first will do
                os.kill(os.getpid(), signal.SIGKILL)
    """)
    sid = int(killed_midway(script).split()[0])
    lines = HistoryStore(tmp_path / "sessions.db").messages(sid)
    assert [(m.role, m.name) for m in lines] == [("assistant", "ann"), ("user", "User"), ("assistant", "bob")]


def test_each_line_keeps_its_own_cost(scene_agent):
    scene = scene_agent.open_scene(["ann", "bob"])
    for text in ("Bob, are you there?", "Bob, say that again."):
        for reply in scene.turn(text):
            reply.finish()
    bob = [r for r in scene.replies if r.slug == "bob"]
    assert len(bob) >= 2 and bob[0].stats is not bob[-1].stats  # /scene lists each line's own figures
    assert bob[0].stats.prompt_tokens < bob[-1].stats.prompt_tokens
