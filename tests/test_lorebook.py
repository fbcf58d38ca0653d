"""Lorebooks: V2/V3/SillyTavern parsing, key matching, recursion, budgets and the real Seraphina cards."""
import json
import random
from pathlib import Path

import pytest

from agent.persona.lore_activation import Activation, activate
from agent.persona.lorebook import LoreEntry, LoreError, Lorebook, card_lorebook, load_lorebook, parse_lorebook, to_v3

CARDS = Path(__file__).resolve().parents[2] / "shared/fixtures/cards"


def book(*entries: LoreEntry, **settings) -> Lorebook:
    return Lorebook(name=settings.pop("name", "world"), entries=entries, **settings)


def entry(uid: str, keys=(), content=None, **fields) -> LoreEntry:
    return LoreEntry(uid=uid, keys=tuple(keys), content=content or f"about {uid}", name=uid, **fields)


def names(act: Activation) -> list[str]:
    return [f.entry.name for f in act.fired]


# --- key matching ---

def test_keys_are_case_insensitive_unless_case_sensitive():
    b = book(entry("loose", ["Dragon"]), entry("strict", ["Dragon"], case_sensitive=True))
    assert names(activate([b], ["a DRAGON flies"])) == ["loose"]
    assert names(activate([b], ["a Dragon flies"])) == ["loose", "strict"]


def test_whole_words():
    b = book(entry("part", ["cat"]), entry("whole", ["cat"], match_whole_words=True),
             entry("phrase", ["black cat"], match_whole_words=True), entry("mark", ["c++"], match_whole_words=True))
    assert names(activate([b], ["concatenate the blackcats"])) == ["part"]
    assert names(activate([b], ["a black cat."])) == ["part", "whole", "phrase"]
    assert names(activate([b], ["I write c++code"])) == ["mark"]  # a non-word edge matches literally


def test_regex_keys_both_ways():
    b = book(entry("slashed", ["/dra(g|k)on/"]), entry("flagged", ["/^Hi$/im"]),
             entry("v3", ["colou?r"], use_regex=True), entry("plain", ["colou?r"]))
    act = activate([b], ["A DRAKON\nhi", "the color red"])
    assert names(act) == ["flagged", "v3"]  # /dra(g|k)on/ has no i flag: case-sensitive
    assert names(activate([b], ["a drakon", "colou?r"])) == ["slashed", "plain"]


def test_invalid_regex_never_matches_and_is_reported_once():
    b = book(entry("broken", ["/(unclosed/", "ok"]), entry("broken2", ["a(b"], use_regex=True),
             entry("other", ["again"], "(unclosed a(b"), recursive_scanning=True)  # a second pass looks again
    act = activate([b], ["(unclosed a(b", "again (unclosed"], scan_depth=2)
    assert names(act) == ["other"]
    assert len(act.notes) == 2 and "invalid regex '/(unclosed/'" in act.notes[0]
    assert act.explain().count("invalid regex") == 2
    assert names(activate([b], ["ok"])) == ["broken"]


@pytest.mark.parametrize("logic, text, fires", [
    ("and_any", "dragon gold", True), ("and_any", "dragon", False),
    ("and_all", "dragon gold cave", True), ("and_all", "dragon gold", False),
    ("not_any", "dragon", True), ("not_any", "dragon cave", False),
    ("not_all", "dragon gold", True), ("not_all", "dragon gold cave", False),
])
def test_selective_logic(logic, text, fires):
    e = entry("hoard", ["dragon"], secondary_keys=("gold", "cave"), selective=True, selective_logic=logic)
    act = activate([book(e)], [text])
    assert bool(act.fired) is fires
    if fires:
        assert f"({logic})" in act.fired[0].reason


def test_secondary_keys_ignored_unless_selective():
    e = entry("hoard", ["dragon"], secondary_keys=("gold",), selective=False)
    assert names(activate([book(e)], ["dragon"])) == ["hoard"]


def test_constant_disabled_and_keyless():
    b = book(entry("always", constant=True), entry("off", ["dragon"], enabled=False), entry("keyless"))
    act = activate([b], ["dragon"])
    assert names(act) == ["always"] and act.fired[0].reason == "constant"


def test_scan_depth_window_and_entry_override():
    b = book(entry("old", ["ancient"]), entry("deep", ["ancient"], scan_depth=3), scan_depth=2)
    messages = ["ancient ruins", "hello", "how are you"]
    assert names(activate([b], messages)) == ["deep"]
    assert names(activate([b], messages, scan_depth=3)) == ["old", "deep"]
    assert names(activate([b], messages, scan_depth=0)) == ["deep"]
    act = activate([b], ["x", "ancient", "y"])
    assert act.fired[0].reason == "key 'ancient' in message 1 of 2 scanned"


# --- recursion ---

def chain(**settings) -> Lorebook:
    return book(entry("A", ["alpha"], "see beta"), entry("B", ["beta"], "see gamma"),
                entry("C", ["gamma"], "see delta"), entry("D", ["delta"], "the end"), **settings)


def test_recursion_follows_content_up_to_max_recursion():
    assert names(activate([chain()], ["alpha"])) == ["A"]  # the book doesn't scan recursively
    act = activate([chain(recursive_scanning=True)], ["alpha"])
    assert names(act) == ["A", "B", "C", "D"]
    assert act.fired[1].reason == "key 'beta' in entry 'A' (recursion, depth 1)"
    assert names(activate([chain(recursive_scanning=True)], ["alpha"], max_recursion=2)) == ["A", "B", "C"]
    assert names(activate([chain(recursive_scanning=True)], ["alpha"], max_recursion=0)) == ["A"]


def test_recursion_cycle_terminates():
    b = book(entry("A", ["alpha"], "beta"), entry("B", ["beta"], "alpha"), recursive_scanning=True)
    assert names(activate([b], ["alpha"], max_recursion=50)) == ["A", "B"]


def test_prevent_and_exclude_recursion():
    b = book(entry("A", ["alpha"], "beta gamma", prevent_recursion=True), entry("B", ["beta"]),
             recursive_scanning=True)
    assert names(activate([b], ["alpha"])) == ["A"]
    b = book(entry("A", ["alpha"], "beta"), entry("B", ["beta"], exclude_recursion=True), recursive_scanning=True)
    assert names(activate([b], ["alpha"])) == ["A"]
    assert names(activate([b], ["alpha beta"])) == ["A", "B"]  # the chat still fires it


def test_delay_until_recursion():
    b = book(entry("A", ["alpha"], "nothing"), entry("late", ["alpha"], delay_until_recursion=True),
             recursive_scanning=True)
    act = activate([b], ["alpha"])
    assert names(act) == ["A", "late"] and act.fired[1].reason.endswith("(recursion, depth 1)")
    only = book(entry("late", ["alpha"], delay_until_recursion=True), recursive_scanning=True)
    assert names(activate([only], ["alpha"])) == []  # no first pass fired: no recursion


# --- budget, order, placement ---

def test_budget_keeps_constants_then_priority_and_says_why():
    b = book(entry("c", constant=True, content="one two three", priority=0),
             entry("hi", ["x"], content="one two three", priority=20),
             entry("lo", ["x"], content="one two three", priority=5),
             entry("mid", ["x"], content="one two three", priority=10))
    act = activate([b], ["x"], token_budget=7)
    assert names(act) == ["c", "hi"]
    assert [f.entry.name for f, _ in act.dropped] == ["lo", "mid"]
    assert act.dropped[1][1] == "over the token budget (7: 6 used, needs 3)"
    assert "[lore dropped]" in act.explain() and "over the token budget" in act.explain()
    assert names(activate([b], ["x"])) == ["c", "hi", "lo", "mid"]
    # once one entry doesn't fit, the rest are dropped too, even one that would
    small = book(*b.entries, entry("tiny", ["x"], content="one", priority=1))
    assert names(activate([small], ["x"], token_budget=7)) == ["c", "hi"]


def test_budget_smallest_of_argument_and_books():
    b = book(entry("a", ["x"], content="one two"), entry("b", ["x"], content="one two"), token_budget=2)
    assert names(activate([b], ["x"])) == ["a"]
    assert names(activate([b], ["x"], token_budget=10)) == ["a"]
    assert names(activate([book(*b.entries)], ["x"], token_budget=3)) == ["a"]


def test_budget_ties_keep_higher_insertion_order():
    b = book(entry("early", ["x"], content="one two", insertion_order=1),
             entry("late", ["x"], content="one two", insertion_order=9))
    act = activate([b], ["x"], token_budget=3)
    assert names(act) == ["late"] and act.dropped[0][0].entry.name == "early"


def test_block_follows_insertion_order_then_book_order():
    first = book(entry("z", ["x"], "Z", insertion_order=50), entry("a", ["x"], "A", insertion_order=10),
                 entry("after", ["x"], "AFTER", position="after_char"))
    second = book(entry("tie", ["x"], "TIE", insertion_order=50), name="other")
    act = activate([second, first], ["x"])
    assert act.block("before_char") == "A\nTIE\nZ"
    assert act.block("after_char") == "AFTER"
    assert [f.book for f in act.fired][:2] == ["world", "other"]
    with pytest.raises(ValueError):
        act.block("depth")


def test_depth_entries_grouped_by_depth_and_role():
    b = book(entry("a", ["x"], "A", position="depth", depth=4), entry("b", ["x"], "B", position="depth", depth=1),
             entry("c", ["x"], "C", position="depth", depth=4, role="assistant"),
             entry("d", ["x"], "D", position="depth", depth=4, insertion_order=1))
    act = activate([b], ["x"])
    assert act.at_depth() == [(1, "system", "B"), (4, "system", "D\nA"), (4, "assistant", "C")]
    assert act.block("before_char") == ""


def test_probability_with_seeded_rng():
    b = book(*(entry(f"e{i}", ["x"], probability=50) for i in range(40)), entry("never", ["x"], probability=0))
    one, two = (activate([b], ["x"], rng=random.Random(7)) for _ in range(2))
    assert names(one) == names(two) and 5 < len(one.fired) < 35 and "never" not in names(one)
    assert "lost its 0% roll" in one.explain()


def test_macros_are_left_alone_and_explain_says_nothing_fired():
    act = activate([book(entry("m", ["x"], "{{char}} knows {{user}}"))], ["x"])
    assert act.block("before_char") == "{{char}} knows {{user}}"
    assert activate([book(entry("m", ["x"]))], ["nothing"]).explain() == "no lorebook entries fired"


# --- parsing ---

def v2_book() -> dict:
    return {"name": "Isles", "scan_depth": 3, "token_budget": 50, "recursive_scanning": True, "extensions": {"k": 1},
            "entries": [
                {"id": 7, "keys": ["harbor", "port"], "content": "Ships.\r\nMany.", "enabled": True,
                 "insertion_order": 5, "comment": "Harbor", "selective": True, "secondary_keys": ["storm"],
                 "position": "before_char", "priority": 3,
                 "extensions": {"position": 4, "depth": 2, "role": 2, "selectiveLogic": 3, "match_whole_words": True,
                                "probability": 40, "useProbability": True, "scan_depth": 5, "prevent_recursion": True,
                                "display_index": 0, "group": "g"}},
                {"keys": "reef, shoal", "content": "Reefs.", "position": "after_char", "case_sensitive": True,
                 "extensions": {"position": 2}},
                {"keys": [], "content": "Always.", "constant": True, "insertion_order": 1, "enabled": False}]}


def test_v2_character_book_fields():
    b = parse_lorebook(v2_book(), "card Isles")
    assert (b.name, b.scan_depth, b.token_budget, b.recursive_scanning) == ("Isles", 3, 50, True)
    harbor, reef, always = b.entries
    assert harbor == LoreEntry(
        uid="7", keys=("harbor", "port"), content="Ships.\nMany.", name="Harbor", secondary_keys=("storm",),
        selective=True, selective_logic="and_all", match_whole_words=True, insertion_order=5, priority=3,
        position="depth", depth=2, role="assistant", scan_depth=5, prevent_recursion=True, probability=40,
        extensions={"display_index": 0, "group": "g"})
    assert (reef.uid, reef.keys, reef.case_sensitive, reef.position) == ("1", ("reef", "shoal"), True, "after_char")
    assert reef.extensions == {"position": 2}  # author's-note position, kept for export
    assert always.constant and not always.enabled and always.insertion_order == 1


def test_v3_lorebook_decorators_are_applied_and_stripped():
    doc = {"spec": "lorebook_v3", "data": {"entries": [
        {"keys": ["a"], "content": "@@depth 2\n@@role user\n@@scan_depth 6\n@@unknown thing\n@@@fallback\nText",
         "use_regex": True},
        {"keys": ["b"], "content": "@@activate\n@@position before_desc\nB", "position": "after_char"},
        {"keys": ["c"], "content": "@@dont_activate\n@@additional_keys d, e\nC\n@@not a decorator here"}]}}
    a, b, c = parse_lorebook(doc, "v3.json").entries
    assert (a.content, a.position, a.depth, a.role, a.scan_depth, a.use_regex) == ("Text", "depth", 2, "user", 6, True)
    assert (b.content, b.constant, b.position) == ("B", True, "before_char")
    assert (c.content, c.enabled, c.keys) == ("C\n@@not a decorator here", False, ("c", "d", "e"))


def test_sillytavern_world_info_json():
    doc = {"entries": {
        "0": {"uid": 0, "key": ["dragon"], "keysecondary": ["gold"], "comment": "Dragons", "content": "Big.",
              "constant": False, "selective": True, "selectiveLogic": 2, "order": 120, "position": 4, "disable": False,
              "depth": 3, "role": 1, "probability": 30, "useProbability": True, "excludeRecursion": True,
              "preventRecursion": False, "delayUntilRecursion": True, "scanDepth": None, "caseSensitive": True,
              "matchWholeWords": None, "displayIndex": 4, "group": "", "addMemo": True},
        "5": {"uid": 5, "key": "elf,  ", "content": "Elves.", "position": 1, "probability": 10,
              "useProbability": False, "disable": True}}}
    b = parse_lorebook(doc, "world.json")
    dragon, elf = b.entries
    assert dragon == LoreEntry(
        uid="0", keys=("dragon",), content="Big.", name="Dragons", secondary_keys=("gold",), selective=True,
        selective_logic="not_any", case_sensitive=True, insertion_order=120, position="depth", depth=3, role="user",
        exclude_recursion=True, delay_until_recursion=True, probability=30,
        extensions={"display_index": 4, "group": ""})
    assert (elf.uid, elf.keys, elf.position, elf.enabled, elf.probability) == ("5", ("elf",), "after_char", False, 100)


def test_sillytavern_v3_export_keys_are_plain_text():
    raw = {"keys": ["*hug*"], "content": "x", "use_regex": True, "extensions": {"display_index": 0}}
    e = parse_lorebook({"entries": [raw]}, "card X").entries[0]
    assert not e.use_regex and activate([book(e)], ["gives a *hug*"]).fired


@pytest.mark.parametrize("doc, message", [
    ({"entries": [{"keys": [1, ["x"]]}]}, "w.json: entries[0].keys: expected a list of strings"),
    ({"entries": [{"keys": ["a"], "content": 5}]}, "w.json: entries[0].content: expected text"),
    ({"entries": [{"keys": ["a"], "extensions": {"selectiveLogic": 9}}]}, "entries[0].extensions.selectiveLogic"),
    ({"entries": [{"keys": ["a"], "extensions": {"role": "narrator"}}]}, "entries[0].extensions.role"),
    ({"entries": [{"keys": ["a"], "insertion_order": "soon"}]}, "entries[0].insertion_order: expected a number"),
    ({"entries": [{"keys": ["a"], "enabled": "yes"}]}, "entries[0].enabled: expected true or false"),
    ({"entries": {"3": {"key": ["a"], "disable": "no"}}}, "w.json: entries.3.disable"),
    ({"entries": "none"}, "w.json: entries: expected a list of entries"),
    ({"entries": ["x"]}, "w.json: entries[0]: expected an object"),
    ({"spec": "lorebook_v3", "data": {"entries": [{"keys": None, "secondary_keys": {}}]}},
     "data.entries[0].secondary_keys"),
    ({"spec": "chara_card_v2", "data": {"name": "X"}}, "data.character_book: the card has no lorebook"),
    ([], "w.json: a lorebook must be a JSON object"),
])
def test_wrong_types_name_the_field(doc, message):
    with pytest.raises(LoreError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_lorebook(doc, "w.json")


def test_round_trip_through_v3():
    for original in (parse_lorebook(v2_book(), "a"), chain(recursive_scanning=True, token_budget=9)):
        doc = json.loads(json.dumps(to_v3(original)))
        assert doc["spec"] == "lorebook_v3"
        assert parse_lorebook(doc, "b") == original
    weird = book(entry("007", ["/x/i"], "plain\n@@kept mid-text", position="depth", depth=0, role="assistant",
                       selective_logic="not_all", case_sensitive=False, match_whole_words=False, use_regex=True,
                       exclude_recursion=True, delay_until_recursion=True, probability=0))
    assert parse_lorebook(to_v3(weird), "c") == weird


def test_load_lorebook_files(tmp_path):
    path = tmp_path / "isles.json"
    path.write_text(json.dumps({"entries": {"0": {"uid": 0, "key": ["x"], "content": "X"}}}))
    assert load_lorebook(path).name == "isles"  # unnamed: named after the file
    card = tmp_path / "card.json"
    card.write_text(json.dumps({"spec": "chara_card_v3", "data": {"name": "C", "character_book": v2_book()}}))
    assert load_lorebook(card) == parse_lorebook(v2_book(), "x")


@pytest.mark.parametrize("content, message", [
    (None, "can't read the lorebook"), ("{not json", "not JSON"), ("[1, 2]", "must be a JSON object"),
    ("x" * 100, "over the 64-byte limit"), ('{"entries": [{"keys": true}]}', r"entries\[0\]\.keys"),
    ('{"entries": [{"content": "\\ud800"}]}', r"entries\[0\]\.content: holds a lone surrogate \(U\+D800\)"),
])
def test_load_lorebook_errors_name_the_file(tmp_path, content, message):
    path = tmp_path / "world.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(LoreError, match=message) as info:
        load_lorebook(path, max_bytes=64)
    assert str(info.value).startswith(str(path))


# --- the real Seraphina cards ---

@pytest.mark.parametrize("name", ["default_Seraphina.png", "default_Seraphina_ccv3.png"])
def test_seraphina_lorebook(name):
    from agent.config import CardLimits
    from agent.persona.card_io import read_card

    path = CARDS / name
    if not path.exists():
        pytest.skip(f"fixture {path} not present")
    card, _ = read_card(path, CardLimits())
    lore = card_lorebook(card)
    assert lore is not None and len(lore.entries) == 4 and lore.name == "Eldoria"
    act = activate([lore], ["Hello!", "Tell me about the forest"])
    assert [f.entry.keys[0] for f in act.fired] == ["eldoria"]
    assert "forest" in act.fired[0].reason and act.block("before_char").startswith('{{user}}: "What is Eldoria?"')
    assert activate([lore], ["Hello there, how are you?"]).fired == ()
    assert parse_lorebook(to_v3(lore), "again") == lore


def test_a_catastrophic_regex_key_times_out_instead_of_hanging():
    import time

    evil = book(entry("evil", ["/(a|aa)+$/"]), entry("fine", ["/b+/"]))  # exponential backtracking
    start = time.perf_counter()
    act = activate([evil], ["a" * 40 + "!", "bbb"])
    assert time.perf_counter() - start < 2.0
    assert [f.entry.label for f in act.fired] == ["fine"]
    assert "took over" in act.explain()
