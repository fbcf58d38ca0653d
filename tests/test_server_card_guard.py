"""The duplicate-card guard's rule (agent/server/card_guard.py): a pure function of the client's text and the card."""
import pytest

from agent.persona.card import CharacterCard
from agent.server.card_guard import HOLDS, card_text, coverage, holds_card

DESCRIPTION = ("{{char}} is captain of the brigantine Grey Gull, sailing the Caribbean in 1719. She is forty, "
               "weathered and broad-shouldered, and {{user}} owes her a favour she has not yet called in.")


def _card(**fields):
    return CharacterCard.from_fields({"name": "Mara Vell", "description": DESCRIPTION, **fields}, "test")


def _as_sent(user="Ann"):
    """The description as SillyTavern sends it: macros resolved with its own user name, its own spacing."""
    return DESCRIPTION.replace("{{char}}", "Mara Vell").replace("{{user}}", user).replace(", ", ",\n  ")


def test_the_card_sent_by_the_client_is_found_whatever_the_users_name():
    for user in ("Ann", "Sir Reginald of the Long Name"):
        text = "Write Mara Vell's next reply.\n\n" + _as_sent(user) + "\n\n[Example Chat]"
        assert coverage(text, card_text(_card())) == 1.0 and holds_card(text, _card())


def test_most_of_the_card_is_enough_and_a_fragment_is_not():
    words = _as_sent().split()
    assert holds_card(" ".join(words[:int(len(words) * 0.9)]), _card())  # the client cut the card's end
    assert not holds_card(" ".join(words[:len(words) // 2]), _card())
    assert not holds_card("Mara Vell is captain of a ship.", _card())


def test_another_characters_card_or_none_is_not_the_card():
    assert not holds_card("Professor Edmund Hale is a Victorian naturalist who collects beetles.", _card())
    assert not holds_card("", _card())


def test_a_card_without_a_description_is_looked_for_in_its_personality_and_scenario():
    card = _card(description="", personality="gruff and fair", scenario="{{user}} boards the Gull at dusk")
    assert holds_card("[gruff and fair]\n[Ann boards the Gull at dusk]", card)
    assert not holds_card("gruff and fair", card)
    assert not holds_card("anything at all", _card(description=""))  # nothing to compare: never the client's


@pytest.mark.parametrize("share", [0.5, HOLDS - 0.01])
def test_below_the_threshold_personae_keeps_its_card(share):
    words = _as_sent().split()
    kept = " ".join(words[:int(len(words) * share)])
    assert coverage(kept, card_text(_card())) < HOLDS and not holds_card(kept, _card())
