"""The duplicate-card guard: does a client's own system text already carry the persona's card?

Front-ends such as SillyTavern build their own prompt and send the character's description among their system
messages. `holds_card` says when they did, so the chat route leaves personae's copy of the card out
(`X-Personae-Card: client`) instead of showing the model the character twice.

The rule: the card's description (or, when it has none, its personality and scenario), macros resolved, is cut
into 3-word phrases; when at least HOLDS of them appear in the client's leading system text (words compared
case-folded, punctuation and spacing ignored), the client has the card. Phrases never span `{{user}}`, whose
name the client may spell its own way. PERSONAE_CARD_GUARD=false turns the guard off.
"""
from __future__ import annotations

import re

from ..persona.card import CharacterCard
from ..persona.macros import substitute

PHRASE_WORDS = 3  # words per compared phrase: long enough to be the card's, short enough to survive small edits
HOLDS = 0.8  # share of the card's phrases the client's text must contain ("most of it")
_USER = re.compile(r"\{\{\s*user\s*\}\}", re.IGNORECASE)


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.casefold())


def _phrases(text: str) -> set[tuple[str, ...]]:
    """The text's PHRASE_WORDS-word phrases; a piece shorter than that counts as one phrase."""
    out: set[tuple[str, ...]] = set()
    for piece in _USER.split(text):
        words = _words(piece)
        if 0 < len(words) < PHRASE_WORDS:
            out.add(tuple(words))
        out.update(tuple(words[i:i + PHRASE_WORDS]) for i in range(len(words) - PHRASE_WORDS + 1))
    return out


def coverage(client_text: str, card_text: str) -> float:
    """Share (0..1) of `card_text`'s phrases found in `client_text`; 0.0 when `card_text` has no words."""
    wanted = _phrases(card_text)
    if not wanted:
        return 0.0
    words = _words(client_text)
    have = {tuple(words[i:i + n]) for n in {len(p) for p in wanted} for i in range(len(words) - n + 1)}
    return len(wanted & have) / len(wanted)


def card_text(card: CharacterCard) -> str:
    """What the guard looks for: the description, else personality and scenario; {{char}} resolved."""
    text = card.description if card.description.strip() else "\n".join((card.personality, card.scenario))
    return substitute(text, char=card.name, user="{{user}}")


def holds_card(client_text: str, card: CharacterCard) -> bool:
    """True when the client's system text already holds (most of) `card`'s description."""
    return coverage(client_text, card_text(card)) >= HOLDS
