"""Reads a client's OpenAI `messages` as one turn: its system text, the conversation so far, the new message.

OpenAI clients resend the whole conversation; others send only the new message and rely on the server
session. Both become a `Turn`, and `prompt_history` merges it with what the server has stored.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from ..chat.prompt import Message

ROLES = ("system", "user", "assistant")
EXAMPLE_NAMES = {"example_user": "user", "example_assistant": "char"}  # SillyTavern's example dialogue turns


def named_text(role: str, text: str, name: Optional[str], *, user: str, char: str) -> str:
    """A message's text with its OpenAI `name` made readable for a chat template, which has no place for it.

    A named system message is a speaker's line: SillyTavern sends the example dialogue as system messages named
    example_user / example_assistant, which become "{user}: text" / "{char}: text"; any other name is the
    speaker itself. User and assistant messages keep their text: the role already says who speaks.
    """
    if role != "system" or not name or not name.strip():
        return text
    speaker = {"user": user, "char": char}.get(EXAMPLE_NAMES.get(name.strip()), name.strip())
    return text if text.lstrip().startswith(speaker + ":") else f"{speaker}: {text}"


@dataclass(frozen=True)
class Turn:
    system: str  # the client's leading system messages, joined: they follow the card, never replace it
    history: tuple[Message, ...]  # the conversation before the new message (system messages kept in place)
    text: str  # the new user message (user messages after the last assistant message, joined)
    resent: bool  # True when the client sent earlier replies: its conversation is the history


def read_turn(messages: Sequence[tuple[str, str]]) -> Turn:
    """[(role, text)] with roles system | user | assistant -> Turn; ValueError when there is nothing to answer.

    System messages after the last user message are moved just before it (the reply must follow a user turn).
    """
    start = 0
    while start < len(messages) and messages[start][0] == "system":
        start += 1
    system = "\n\n".join(text for _, text in messages[:start] if text.strip())
    rest = [Message(role, text) for role, text in messages[start:]]
    last_reply = max((i for i, m in enumerate(rest) if m.role == "assistant"), default=-1)
    tail = rest[last_reply + 1:]
    users = [m.content for m in tail if m.role == "user" and m.content.strip()]
    if not users:
        where = "ends with an assistant message" if last_reply >= 0 else "has no user message"
        raise ValueError(f"messages: the conversation {where}; personae answers a user message")
    prior = rest[:last_reply + 1] + [m for m in tail if m.role == "system"]
    return Turn(system=system, history=tuple(prior), text="\n\n".join(users), resent=last_reply >= 0)


def stored_form(history: Sequence[Message]) -> list[Message]:
    """What the history store keeps of a conversation: user and assistant messages, same-role runs joined."""
    out: list[Message] = []
    for m in history:
        if m.role not in ("user", "assistant"):
            continue
        if out and out[-1].role == m.role:
            out[-1] = Message(m.role, out[-1].content + "\n\n" + m.content)
        else:
            out.append(m)
    return out


def prompt_history(turn: Turn, stored: Sequence[Message], greeting: str) -> list[Message]:
    """The history the reply is written after (the new user message not included).

    A resent conversation is the history, opened by the persona's greeting unless it starts with an
    assistant message of its own; otherwise the stored conversation continues. The client's system text
    comes first: right after the card's system turn in the rendered prompt.
    """
    if turn.resent:
        prior = list(turn.history)
        if greeting and prior[0].role != "assistant":
            prior.insert(0, Message("assistant", greeting))
    else:
        prior = stored_form(stored) + list(turn.history)
    return ([Message("system", turn.system)] if turn.system else []) + prior


CONTINUE, RETRY, FORK = "continue", "retry", "fork"


def _ends_with(known: Sequence[Message], window: Sequence[Message]) -> bool:
    """True when `known` ends with `window`, or with `window` less its first message (a greeting we added)."""
    for tail in (window, window[1:]):
        if tail and len(tail) <= len(known) and list(known[len(known) - len(tail):]) == list(tail):
            return True
    return False


def reconcile(known: Sequence[Message], wanted: Sequence[Message], text: str) -> str:
    """How a resent conversation relates to the stored one (both in stored form); `text` is the new message.

    CONTINUE: it is the stored conversation, or its latest part (clients drop old turns to fit their context).
    RETRY: it stops before the stored last reply, with the same message: the reply is being regenerated.
    FORK: anything else (an edit, a deletion): the client's version is stored as a new conversation.
    """
    if list(known) == list(wanted) or _ends_with(known, wanted):
        return CONTINUE
    if known and known[-1].role == "assistant" and _ends_with(known[:-1], [*wanted, Message("user", text)]):
        return RETRY
    return FORK


def stored_pairs(history: Sequence[Message]) -> tuple[str, list[tuple[str, str]]]:
    """A stored-form conversation ending with a reply -> (greeting, [(user, reply)]), for writing it anew."""
    kept = stored_form(history)
    greeting = kept.pop(0).content if kept and kept[0].role == "assistant" else ""
    if kept and kept[-1].role == "user":
        kept.pop()  # an unanswered message has no turn to be stored in
    return greeting, [(kept[i].content, kept[i + 1].content) for i in range(0, len(kept) - 1, 2)]
