"""Text from outside: lone surrogates found (with where) or replaced, and names made safe to print."""
import json

from agent.untrusted_text import for_terminal, lone_surrogate, surrogate_problem, without_lone_surrogates


def test_a_lone_surrogate_is_found_with_its_path():
    card = json.loads('{"data": {"name": "Mara", "alternate_greetings": ["Hi", "Yo \\ud800"]}}')
    assert lone_surrogate(card) == ("data.alternate_greetings[1]", "\ud800")
    assert lone_surrogate({"data": {"name": "Mara", "tags": ["a", 1, None]}}) is None
    assert lone_surrogate(json.loads('{"ok": 1, "\\udcff": 2}'))[0] == "\\udcff"  # a key, printable in the path
    assert lone_surrogate("😀 paired surrogates are fine") is None
    assert "U+D800" in surrogate_problem("\ud800")


def test_lone_surrogates_can_be_replaced():
    assert without_lone_surrogates("a\ud800b\udcff") == "a\ufffdb\ufffd"
    assert without_lone_surrogates("fine 😀") == "fine 😀"


def test_control_and_bidi_characters_are_escaped_for_the_terminal():
    name = "Mara\u202eexe.txt\x1b[31m\u2066x\u2069"
    assert for_terminal(name) == "Mara\\u202eexe.txt\\x1b[31m\\u2066x\\u2069"
    assert for_terminal("line one\nline\ttwo\r") == "line one\\nline\\ttwo\\r"
    assert for_terminal("line one\nline\ttwo\r", lines=True) == "line one\nline\ttwo\\r"
    family = "Émile 👨\u200d👩\u200d👧 二"  # joiners in emoji stay: they are not bidi or control characters
    assert for_terminal(family) == family
