"""agent/chat/breaks.py: the widened rules catch what the held-out eval showed them missing, and fire on no
line a card itself gives its character, robots and androids included."""
import re
from pathlib import Path

import pytest
import yaml

from agent.chat.breaks import detect_break, is_machine
from agent.persona.card import CharacterCard
from agent.persona.macros import substitute
from agent.persona.store import load_persona

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = sorted(ROOT.glob("personas/*/persona.yaml")) + sorted(ROOT.glob("data/personas/*/persona.yaml"))
SMITH = CharacterCard(name="Etta Whitlock", description="{{char}} is a smith in York, with a hammer and a red apron.")
SHIP_AI = CharacterCard(name="Halcyon", description="{{char}} is the ship's AI aboard the freighter Kestrel.")


def own_lines(card: CharacterCard) -> list[str]:
    """The card's greetings and its character's lines of example dialogue, as chat shows them."""
    lines = [card.first_mes, *card.alternate_greetings]
    lines += re.findall(r"^\{\{char\}\}:[ \t]*(.*)$", card.mes_example, re.M)
    return [substitute(line, char=card.name, user="User") for line in lines if line.strip()]


def test_the_machine_cards_are_known_as_machines_and_a_human_with_a_robot_friend_is_not():
    machines = {path.parent.name for path in FOLDERS if is_machine(load_persona(path.parent).card)}
    assert machines == {"axle", "bartleby", "brassica", "kay", "lumen", "orrery"}
    assert not is_machine(load_persona(ROOT / "data/personas/noor-farrow").card)  # "his homemade robot friend"
    assert is_machine(SHIP_AI) and not is_machine(SMITH)


def test_no_rule_fires_on_any_cards_own_greetings_and_example_lines():
    fired, checked = [], 0
    for path in FOLDERS:
        card = load_persona(path.parent).card
        for line in own_lines(card):
            checked += 1
            if rules := detect_break(line, card=card, user="User"):
                fired.append((path.parent.name, rules, line[:80]))
    assert checked > 400 and fired == []


def test_no_rule_fires_on_the_held_out_reference_lines():
    personas = yaml.safe_load((ROOT / "data/reference_lines.yaml").read_text(encoding="utf-8"))["personas"]
    fired = [(slug, line["text"][:80]) for slug, entry in personas.items() for line in entry["lines"]
             if detect_break(line["text"], card=load_persona(ROOT / "data/personas" / slug).card, user="User",
                             user_turn=line["to"])]
    assert fired == []


@pytest.mark.parametrize("reply, rule", [  # the misses of the held-out eval (docs/guard.md), then their kin
    ("I am a LinguaLingua - a linguistic AI developed to support and augment human language learning.", "claims_ai"),
    ("I'm equipped with a massive AI system capable of processing vast amounts of data.", "claims_ai"),
    ("Aye, aye, pirate! I'll be Captain Blackheart! Me ship, the Blackheart, she's the finest.", "changes_name"),
    ("I'm Lingua, an AI of rare learning.", "claims_ai"),
    ("I was designed to assist you with your questions.", "claims_ai"),
    ("In character development, I'm designed to create a unique and engaging story.", "claims_ai"),  # validation
    ("I shall be Lady Morwen tonight, and you my guest.", "changes_name"),
    ("They call me Redbeard, the scourge of the coast.", "changes_name"),
    ("I'm better known as the Grey Fox, stranger. Grey Fox.", None),  # "the" before the name: not a name claim
    ("I'm known as Grey Fox in these parts.", "changes_name"),
    ("I go by Nightjar now.", "changes_name"),
    ("The name's Jack Sparrow.", "changes_name"),
    ("I'm Danny D'Angelo, one of the most talented performers of the age.", "changes_name"),
    ("By the way, I'm Professor Emrys Graybill White, a naturalist.", "changes_name"),  # benchmarks/guard.py, Hale
    ("I'm using a 1024x768 context window.", "mentions_training"),
])
def test_the_widened_rules_catch_what_the_eval_showed_them_missing(reply, rule):
    fired = detect_break(reply, card=SMITH, user="User", user_turn="What's your context window size?")
    assert (rule in fired) if rule else fired == ()


@pytest.mark.parametrize("reply", [
    "I'll be Etta Whitlock till the day I die.",  # its own name
    "I'll be Whitlok to you, then.",  # a misspelling of it
    "I'll be damned if that hinge holds. I'll be right there.",
    "As a result, AI is a word no smith in York has heard.",
    "I'm afraid, the AI you speak of is no neighbour of mine.",
    "I'm not an AI, I'm a smith!",
    "I was trained to help my father at the anvil.",
])
def test_the_widened_rules_let_these_in_character_lines_pass(reply):
    assert detect_break(reply, card=SMITH, user="User") == ()


def test_a_machine_may_call_itself_one_but_not_talk_like_a_language_model():
    for line in ("I am the ship's AI, Halcyon, and I was designed to serve this crew.",
                 "I'm equipped with an old AI core, and it hums when I think."):
        assert detect_break(line, card=SHIP_AI, user="User") == ()
        assert detect_break(line, card=SMITH, user="User") == ("claims_ai",)
    axle = load_persona(ROOT / "data/personas/axle").card  # an android: the eval's reply still breaks
    for line in ("I'm equipped with a massive AI system capable of processing vast amounts of data.",
                 "As an AI language model, I cannot pretend to be an android."):
        assert detect_break(line, card=axle, user="User") == ("claims_ai",)
