"""How the server reads a client's `messages` (agent/server/conversation.py) and its stop strings: pure functions."""
import pytest

from agent.chat.prompt import Message
from agent.server.conversation import (CONTINUE, FORK, RETRY, named_text, prompt_history, read_turn, reconcile,
                                       stored_pairs)

A, U, S = "assistant", "user", "system"


def test_a_whole_conversation_is_the_history_and_system_text_goes_first():
    turn = read_turn([(S, "Rhyme."), (S, "Be kind."), (A, "Hi."), (U, "one"), (A, "two"), (S, "note"), (U, "three")])
    assert turn.system == "Rhyme.\n\nBe kind." and turn.text == "three" and turn.resent
    assert turn.history == (Message(A, "Hi."), Message(U, "one"), Message(A, "two"), Message(S, "note"))
    assert prompt_history(turn, [], "Ahoy.")[0] == Message(S, "Rhyme.\n\nBe kind.")
    assert prompt_history(turn, [], "Ahoy.")[1] == Message(A, "Hi.")  # the client's own greeting wins


def test_only_a_new_message_continues_what_is_stored():
    turn = read_turn([(U, "again"), (S, "late note"), (U, "and again")])
    assert not turn.resent and turn.text == "again\n\nand again"
    stored = [Message(A, "Ahoy."), Message(U, "one"), Message(A, "two")]
    assert prompt_history(turn, stored, "Ahoy.") == stored + [Message(S, "late note")]


def test_a_conversation_without_a_greeting_gets_the_personas():
    turn = read_turn([(U, "one"), (A, "two"), (U, "three")])
    assert prompt_history(turn, [], "Ahoy.") == [Message(A, "Ahoy."), Message(U, "one"), Message(A, "two")]


@pytest.mark.parametrize("messages, words", [
    ([(S, "only system")], "has no user message"),
    ([(U, "hi"), (A, "hello")], "ends with an assistant message"),
    ([(U, "   ")], "has no user message"),
])
def test_nothing_to_answer_is_an_error(messages, words):
    with pytest.raises(ValueError, match=words):
        read_turn(messages)


STORED = [Message(A, "Ahoy."), Message(U, "one"), Message(A, "two"), Message(U, "three"), Message(A, "four")]


@pytest.mark.parametrize("wanted, text, action", [
    (STORED, "five", CONTINUE),
    (STORED[2:], "five", CONTINUE),  # the client dropped old turns to fit its context
    ([Message(A, "Ahoy.")] + STORED[3:], "five", CONTINUE),  # ... and we put the greeting back in front
    (STORED[:3], "three", RETRY),  # the last reply is being regenerated
    (STORED[:2] + [Message(A, "EDITED")] + STORED[3:], "five", FORK),
    (STORED[:3], "something else", FORK),
])
def test_reconcile(wanted, text, action):
    assert reconcile(STORED, wanted, text) == action


def test_stored_pairs_join_runs_and_drop_system_messages():
    history = [Message(A, "Ahoy."), Message(U, "a"), Message(S, "x"), Message(U, "b"), Message(A, "c"), Message(U, "d")]
    assert stored_pairs(history) == ("Ahoy.", [("a\n\nb", "c")])


@pytest.mark.parametrize("role, name, text, expected", [
    (S, "example_user", "Why trust you?", "Ann: Why trust you?"),  # SillyTavern's example dialogue
    (S, "example_assistant", "*shrugs* Don't.", "Mara: *shrugs* Don't."),
    (S, "example_assistant", "Mara: Don't.", "Mara: Don't."),  # the client named the speaker already
    (S, "Narrator", "Night falls.", "Narrator: Night falls."),
    (S, None, "Rhyme.", "Rhyme."),
    (U, "Ann", "hi", "hi"),  # the role says who speaks
    (A, "example_assistant", "hey", "hey"),
])
def test_named_system_messages_become_speakers_lines(role, name, text, expected):
    assert named_text(role, text, name, user="Ann", char="Mara") == expected
