"""CharacterCard: V1/V2/V3 parsing, the quirks of real cards, and spec exports that read back the same."""
import pytest

from agent.persona.card import SPEC_V2, SPEC_V3, CardError, CharacterCard


def full_card() -> CharacterCard:
    return CharacterCard(
        name="Mira Vale", description="A cartographer.\nShe maps dreams.", personality="curious",
        scenario="A library at night.", first_mes="Hello, {{user}}.", mes_example="<START>\n{{user}}: hi",
        creator_notes="for tests", system_prompt="Stay in character.", post_history_instructions="Be brief.",
        alternate_greetings=("Hi!", "Oh, it's you."), tags=("fantasy", "maps"),
        character_book={"name": "lore", "entries": [{"keys": ["map"], "content": "Maps are alive."}]},
        creator="tester", character_version="1.2", extensions={"talkativeness": "0.5", "app": {"x": [1, 2]}},
        nickname="Mira", creator_notes_multilingual={"fr": "pour les tests"}, source=("https://example.org/c",),
        group_only_greetings=("Hello, all.",), creation_date=1700000000, modification_date=1700000500,
        assets=({"type": "icon", "uri": "ccdefault:", "name": "main", "ext": "png"},),
        extra={"unknown_field": {"kept": True}})


@pytest.mark.parametrize("export", ["to_v2", "to_v3"])
def test_spec_exports_read_back_identical(export):
    card = full_card()
    assert CharacterCard.from_dict(getattr(card, export)(), "x.json") == card


def test_flat_fields_read_back_identical():
    card = full_card()
    assert CharacterCard.from_fields(card.to_fields(), "persona.yaml") == card


def test_v2_and_v3_documents_follow_the_specs():
    card = full_card()
    v2, v3 = card.to_v2(), card.to_v3()
    assert (v2["spec"], v2["spec_version"], v3["spec"], v3["spec_version"]) == (SPEC_V2, "2.0", SPEC_V3, "3.0")
    assert v2["data"]["alternate_greetings"] == ["Hi!", "Oh, it's you."]
    assert v3["data"]["group_only_greetings"] == ["Hello, all."]
    assert v3["data"]["unknown_field"] == {"kept": True}
    # the V1-compatible mirror SillyTavern also writes, for readers that ignore `data`
    for doc in (v2, v3):
        assert doc["name"] == "Mira Vale" and doc["first_mes"] == "Hello, {{user}}."
        assert doc["creatorcomment"] == "for tests" and doc["talkativeness"] == "0.5"


def test_minimal_v3_still_has_required_fields():
    data = CharacterCard(name="Bo").to_v3()["data"]
    for key in ("description", "tags", "extensions", "alternate_greetings", "group_only_greetings"):
        assert key in data
    assert "character_book" not in data and "assets" not in data and "nickname" not in data


def test_v1_flat_card_with_unknown_fields():
    card = CharacterCard.from_dict({"name": "Old", "description": "d", "first_mes": "hi",
                                    "metadata": {"tool": "x"}, "avatar": "none", "chat": "Old - 2023",
                                    "talkativeness": "0.4", "creatorcomment": "notes"}, "old.json")
    assert card.first_mes == "hi" and card.creator_notes == "notes"
    assert card.extra == {"metadata": {"tool": "x"}}  # avatar/chat are SillyTavern bookkeeping
    assert card.extensions == {"talkativeness": "0.4"}


def test_pygmalion_names_fill_missing_fields_and_differing_copies_are_kept():
    card = CharacterCard.from_dict({"char_name": "Py", "char_persona": "grumpy", "world_scenario": "home",
                                    "char_greeting": "long hello", "example_dialogue": "ex"}, "py.json")
    assert (card.name, card.personality, card.scenario, card.first_mes, card.mes_example) == (
        "Py", "grumpy", "home", "long hello", "ex")
    assert card.extra == {}
    both = CharacterCard.from_dict({"name": "Py", "char_name": "Py", "first_mes": "short",
                                    "char_greeting": "long hello"}, "py.json")
    assert both.first_mes == "short" and both.extra == {"char_greeting": "long hello"}


def test_data_wins_over_a_disagreeing_top_level_mirror():
    card = CharacterCard.from_dict({
        "spec": SPEC_V2, "spec_version": "2.0", "name": "Mirror", "creator": "", "tags": "",
        "scenario": "from the mirror", "avatar": "none", "create_date": "2023-7-21",
        "data": {"name": "Data", "creator": "@someone", "tags": [], "scenario": None}}, "c.png")
    assert card.name == "Data" and card.creator == "@someone" and card.tags == ()
    assert card.scenario == "from the mirror"  # data had nothing there, so the mirror fills it
    assert card.extra == {}


def test_unknown_top_level_keys_of_a_v2_card_survive():
    card = CharacterCard.from_dict({"spec": SPEC_V2, "data": {"name": "A", "x_data": 1}, "x_top": 2}, "a")
    assert card.extra == {"x_data": 1, "x_top": 2}
    assert CharacterCard.from_dict(card.to_v2(), "a") == card


def test_strings_where_lists_belong():
    card = CharacterCard.from_dict({"spec": SPEC_V3, "data": {
        "name": "T", "tags": "cozy,  slice of life ,", "alternate_greetings": "Only one",
        "source": "https://example.org", "group_only_greetings": None}}, "t.json")
    assert card.tags == ("cozy", "slice of life")
    assert card.alternate_greetings == ("Only one",)
    assert card.source == ("https://example.org",) and card.group_only_greetings == ()


def test_crlf_no_break_spaces_and_none_values():
    card = CharacterCard.from_dict({"spec": SPEC_V2, "data": {
        "name": "\u00a0Flux\u00a0the  Cat ", "description": "line one \t\r\nline\u00a0two\r\n",
        "personality": None, "extensions": None, "character_book": None,
        "alternate_greetings": ["a\r\nb", None, ""]}}, "flux.png")
    assert card.name == "Flux the Cat"
    assert card.description == "line one\nline two"
    assert card.personality == "" and card.extensions == {} and card.character_book is None
    assert card.alternate_greetings == ("a\nb",)


def test_v3_without_its_required_fields_gets_defaults():
    card = CharacterCard.from_dict({"spec": SPEC_V3, "spec_version": "3.0", "data": {"name": "Chan"}}, "c")
    assert card.group_only_greetings == () and card.extensions == {} and card.assets == ()


def test_dates_in_other_shapes():
    card = CharacterCard.from_dict({"name": "D", "creation_date": "1700000000",
                                    "modification_date": "2024-01-01T00:00:00Z"}, "d")
    assert card.creation_date == 1700000000 and card.modification_date == 1704067200


def test_lorebook_newlines_are_normalised_but_its_fields_kept():
    book = {"entries": [{"content": "a\r\nb", "extensions": {"depth": 4}}], "scan_depth": 2}
    card = CharacterCard.from_dict({"spec": SPEC_V2, "data": {"name": "L", "character_book": book}}, "l")
    assert card.character_book == {"entries": [{"content": "a\nb", "extensions": {"depth": 4}}], "scan_depth": 2}


@pytest.mark.parametrize("obj, field", [
    ({"spec": SPEC_V2, "data": {"description": "no name"}}, "data.name"),
    ({"name": "   "}, "name"),
    ({"spec": SPEC_V2, "data": {"name": "X", "extensions": ["a"]}}, "data.extensions"),
    ({"spec": SPEC_V2, "data": {"name": "X", "tags": {"a": 1}}}, "data.tags"),
    ({"spec": SPEC_V2, "data": {"name": "X", "alternate_greetings": [{"a": 1}]}}, "data.alternate_greetings[0]"),
    ({"spec": SPEC_V3, "data": {"name": "X", "creation_date": "last tuesday"}}, "data.creation_date"),
    ({"spec": SPEC_V2, "data": "not an object"}, "data"),
    ({"name": ["A"]}, "name"),
])
def test_errors_name_the_source_and_the_field(obj, field):
    with pytest.raises(CardError) as err:
        CharacterCard.from_dict(obj, "cards/bad.json")
    assert "cards/bad.json" in str(err.value) and repr(field) in str(err.value)


@pytest.mark.parametrize("obj", [[{"name": "A"}], "A", None, 3])
def test_a_card_must_be_an_object(obj):
    with pytest.raises(CardError, match="cards/bad.json: a card must be a JSON object"):
        CharacterCard.from_dict(obj, "cards/bad.json")
