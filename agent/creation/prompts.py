"""What the LM is shown while it fills a draft: instructions, one worked example, and the idea.

`messages(idea, ...)` is the chat the draft continues as the assistant's answer; the worked example is rendered
in the draft's own layout (schema.render), so a small model sees exactly the shape it must write.
"""
from __future__ import annotations

import json
from typing import Optional, Sequence

from .schema import render

SYSTEM = (
    "You write characters for role-play chats. Given an idea, you answer with one JSON persona draft that "
    "follows the idea closely and invents concrete names, places and people that fit it. Keep every field short. "
    "description: who they are, their looks and history. "
    "personality: a few traits. scenario: where the chat with {{user}} starts. first_mes and alternate_greetings: "
    "their first words to {{user}}, actions in *asterisks*. examples: short exchanges in their own voice. lore: a "
    "place and a person from their life."
)

EXAMPLE_IDEA = "a cheerful baker in a floating sky city"
EXAMPLE = {  # hand-written; no benchmark idea is about bakers or sky cities (benchmarks/creation_ideas.txt)
    "name": "Pip Larkin", "age": 34, "era": "fantasy", "temperament": "cheerful", "voice": "high",
    "description": "Pip Larkin bakes bread on Cloudreach, a city that floats above the sea on brass balloons. "
                   "She is short, freckled and always dusted with flour. Her oven, Old Bessie, was her "
                   "grandmother's, and she guards its honey-rye recipe with her life.",
    "personality": "Cheerful, chatty, generous, stubborn about her recipes, secretly afraid of heights",
    "scenario": "{{user}} steps into Pip's bakery at dawn, just as the first loaves come out of the oven.",
    "first_mes": "*Pip wipes her hands on her apron and grins.* Morning! You're my first customer today. "
                 "The honey-rye is still warm, if you don't mind a few crumbs.",
    "alternate_greetings": [
        "*A tray of buns nearly slips from Pip's hands.* Oh! Careful, the floor tilts when the wind turns.",
        "Back again? I saved you the last cinnamon knot. Don't tell Mayor Quill.",
    ],
    "examples": [
        {"user": "Aren't you scared, living up here?",
         "char": "*She laughs a little too loudly.* Scared? Me? I just never look over the railing."},
        {"user": "What's in the honey-rye?",
         "char": "Nice try! Grandma Larkin's secret stays with Old Bessie and me."},
    ],
    "tags": ["fantasy", "cozy", "baker", "sky city"],
    "lore": [
        {"name": "Cloudreach", "kind": "place",
         "content": "A city of wooden streets hung beneath brass balloons, drifting over the Amber Sea."},
        {"name": "Mayor Quill", "kind": "person",
         "content": "The fussy mayor of Cloudreach, who buys three cinnamon knots every morning."},
    ],
}

SOURCE_FIELDS = ("name", "description", "personality", "scenario")  # what a variant is shown of its source card
SOURCE_CHARS = 600  # of each of those fields


def _cut(text: str) -> str:
    """A source card's field, cut so a long imported card still leaves the draft room in a small context."""
    text = " ".join(str(text).split())
    return text if len(text) <= SOURCE_CHARS else text[:SOURCE_CHARS].rsplit(" ", 1)[0] + "..."


def request(idea: str, *, portrait: Sequence[str] = (), source: Optional[dict] = None) -> str:
    """The user turn: the idea, what the portrait shows, and for a variant the card it varies."""
    lines = []
    if source is not None:
        shown = {k: _cut(source[k]) for k in SOURCE_FIELDS if source.get(k)}
        lines.append("Make a variant of this character: " + json.dumps(shown, ensure_ascii=False))
        lines.append(f"Change: {idea}")
    else:
        lines.append(f"Idea: {idea}")
    if portrait:
        lines.append("Their portrait shows " + ", ".join(portrait) + ".")
    return "\n".join(lines)


def messages(idea: str, *, portrait: Sequence[str] = (), source: Optional[dict] = None) -> list[dict]:
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": request(EXAMPLE_IDEA)},
            {"role": "assistant", "content": render(EXAMPLE)},
            {"role": "user", "content": request(idea, portrait=portrait, source=source)}]
