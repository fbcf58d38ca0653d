"""The `messages` SillyTavern 1.12.6 sends in Chat Completion mode (custom OpenAI-compatible source) with its
default prompt manager, built from a card: for the server tests and benchmarks/sillytavern_prompt.py.

Its default order: Main Prompt, Char Description, Char Personality, Scenario (each a system message, macros
resolved), Chat Examples ("[Example Chat]", then each line as a system message named example_user or
example_assistant, the "Name:" cut off), "[Start a new Chat]", the chat (greeting first), and the card's
post-history instructions as a last system message.
"""
from __future__ import annotations

from agent.persona.card import CharacterCard
from agent.persona.macros import split_examples, substitute

MAIN_PROMPT = "Write {{char}}'s next reply in a fictional chat between {{char}} and {{user}}."


def _system(text: str, name: str = "") -> dict:
    return {"role": "system", "content": text, **({"name": name} if name else {})}


def _example_lines(block: str, user: str, char: str) -> list[dict]:
    out: list[dict] = []
    for line in block.splitlines():
        for speaker, name in ((user, "example_user"), (char, "example_assistant")):
            if line.startswith(speaker + ":"):
                out.append(_system(line[len(speaker) + 1:].strip(), name))
                break
        else:
            if out:  # a line that goes on the previous speaker's
                out[-1]["content"] += "\n" + line
    return out


def sillytavern_messages(card: CharacterCard, chat: list[dict], *, user: str = "User") -> list[dict]:
    """chat: the conversation after the greeting ({"role": "user" | "assistant", "content"}), newest last."""
    def fill(text: str) -> str:
        return substitute(text, char=card.name, user=user).strip()

    messages = [_system(fill(MAIN_PROMPT))]
    messages += [_system(fill(field)) for field in (card.description, card.personality, card.scenario) if field.strip()]
    for block in split_examples(card.mes_example):
        messages += [_system("[Example Chat]")] + _example_lines(fill(block), user, card.name)
    messages += [_system("[Start a new Chat]"), {"role": "assistant", "content": fill(card.first_mes)}, *chat]
    if card.post_history_instructions.strip():
        messages.append(_system(fill(card.post_history_instructions)))
    return messages
