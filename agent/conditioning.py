"""Conditioning modes: how a persona reaches the LM (its card text, the card's summary, soft prompts, both, nothing).

The one registry of them: `embedding.conditioning` (chat), the student's view in `personae train` and `tune`,
and the modes `personae eval` scores all read `MODES`, and `shown_card` is the card each mode lets the LM read.
No torch here, so configs validate without it.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional

if TYPE_CHECKING:  # importing agent.persona at run time would load its store, which needs agent.config
    from .persona.card import CharacterCard

NEUTRAL_NAME = "the character"  # {{char}} in the name-free baseline: the same words for every persona


@dataclass(frozen=True)
class Mode:
    name: str
    card_text: bool  # the card's fields fill the system turn and its post-history instructions follow each user turn
    summary: bool  # that card text is the card cut to embedding.summary_tokens (agent/persona/summary.py)
    adapter: str  # soft prompts from: "" none | "attention" the trained adapter (embedding.adapter) | "weighted" the F = αI + βT + γA baseline
    named: bool  # False: {{char}} becomes NEUTRAL_NAME, so not even the name tells personas apart
    chat: bool  # selectable as embedding.conditioning; the others are evaluation baselines
    about: str  # one line for `personae eval`'s table and JSON
    kv: bool = False  # the system turn reaches the LM as the persona's selected KV cells (embedding/persona_kv.py)

    @property
    def soft(self) -> bool:
        """Whether the LM reads K soft-prompt vectors (a trained adapter is needed)."""
        return bool(self.adapter)


def _mode(name, card_text, summary, adapter, named, chat, about, kv=False) -> tuple[str, Mode]:
    return name, Mode(name, card_text, summary, adapter, named, chat, about, kv)


# Without card text the system turn is the chat's one-line DEFAULT_SYSTEM_PROMPT ("You are {{char}}. ...") and the
# post-history instructions go too: they are card text (they often restate the character). The greeting
# (first_mes) is card text as well; evaluation never starts its chats with it.
MODES: dict[str, Mode] = dict([
    _mode("card", True, False, "", True, True, "the card text in the system turn (the chat default)"),
    _mode("summary", True, True, "", True, True,
          "the card cut to its first embedding.summary_tokens tokens, no soft prompt"),
    _mode("soft", False, False, "attention", True, True, "K soft vectors from the attention adapter, no card text"),
    _mode("soft+card", True, False, "attention", True, True, "K soft vectors from the attention adapter and the card text"),
    _mode("kv", True, False, "", True, True, "the card read once by the LM; its header and embedding.kv_cells most "
          "distinctive KV cells stand for the system turn", kv=True),
    _mode("none", False, False, "", False, False, "no conditioning: the one-line system prompt with a neutral name"),
    _mode("name", False, False, "", True, False, "the one-line system prompt with the character's name, nothing else"),
    _mode("weighted", False, False, "weighted", True, False,
          "K soft vectors from the weighted-fusion baseline, no card text"),
    _mode("weighted+card", True, False, "weighted", True, False,
          "K soft vectors from the weighted-fusion baseline and the card text"),
])
CHAT_MODES = tuple(name for name, m in MODES.items() if m.chat)  # embedding.conditioning
# what the student sees in `personae train`: a chat mode with soft prompts, or "both" (each example in each of them)
STUDENT_MODES = {**{name: (name,) for name, m in MODES.items() if m.chat and m.soft}, "both": ("soft", "soft+card")}


def get_mode(name: str, *, key: str = "embedding.conditioning", chat: bool = True) -> Mode:
    """The mode called `name`; ValueError naming `key` and the valid names otherwise (chat: chat modes only)."""
    valid = CHAT_MODES if chat else tuple(MODES)
    if name not in valid:
        raise ValueError(f"{key} must be one of {', '.join(valid)}, got {name!r}")
    return MODES[name]


def student_modes(name: str, *, key: str = "train.student_mode") -> tuple[Mode, ...]:
    """The modes a training student sees for train.student_mode `name`: soft, soft+card, or both of them."""
    if name not in STUDENT_MODES:
        raise ValueError(f"{key} must be one of {', '.join(STUDENT_MODES)}, got {name!r}")
    return tuple(MODES[m] for m in STUDENT_MODES[name])


def shown_card(card: CharacterCard, mode: Mode,
               summarise: Optional[Callable[[CharacterCard], CharacterCard]] = None) -> CharacterCard:
    """The card as `mode` lets the LM read it (the prompt builder then leaves out card text where mode.card_text
    is False). summarise: card -> its summary card, needed by summary modes (agent/persona/summary.py)."""
    if mode.summary:
        if summarise is None:
            raise ValueError(f"conditioning {mode.name!r} needs the card summary (summarise=)")
        card = summarise(card)
    if not mode.card_text:
        card = dataclasses.replace(card, post_history_instructions="")
    if not mode.named:
        card = dataclasses.replace(card, name=NEUTRAL_NAME, nickname="")
    return card
