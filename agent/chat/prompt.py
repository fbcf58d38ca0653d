"""Builds the prompt for the next turn: card fields -> chat messages -> the model's own chat template -> token ids.

The card goes into the system turn, the greeting is the first assistant turn, then the history.
Lore and memory (a `TurnContext`, built by agent/chat/context.py) join where they keep the cached prefix:
constant lore in the system turn, the summary and notes after the greeting, key-activated lore and
recalled turns right before the newest user message (the user's words always come last).
When history outgrows the context budget, whole old turns are dropped (never the card or greeting).
The token ids go to the decoder.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from ..embedding.soft_prompt import soft_placeholders
from ..persona.card import CharacterCard
from ..persona.macros import split_examples, substitute

DEFAULT_SYSTEM_PROMPT = (
    "You are {{char}}. Write {{char}}'s next reply in a fictional chat with {{user}}. "
    "Stay in character at all times, speak only as {{char}}, and never write {{user}}'s lines."
)
LOW_WATER = 0.75  # after dropping old turns, the prompt uses at most this share of its budget, so drops are rare


@dataclass(frozen=True)
class Message:
    role: str  # "user" | "assistant" | "system" (an API client's own instructions, kept after the card)
    content: str
    name: str = ""  # who said it in a group scene (agent/chat/scene.py): a persona slug or a human's name; "" elsewhere


@dataclass(frozen=True)
class TurnContext:
    """Text that joins the card and the history for one turn (macros already resolved)."""
    before_char: str = ""  # lore in the system turn, before the card's fields
    after_char: str = ""  # lore in the system turn, after them
    notes: str = ""  # running summary and /remember notes: a system message after the greeting
    recent: str = ""  # key-activated lore and recalled turns: a system message just before the newest user message
    depth: tuple[tuple[int, str, str], ...] = ()  # (depth, role, text): lore N messages from the end (0 = last)


NO_CONTEXT = TurnContext()
SOFT_SLOT = "\u2063personae-soft-prompt\u2063"  # marks where the soft vectors go in the rendered text


def system_prompt(card: CharacterCard, user: str, *, with_card: bool = True, context: TurnContext = NO_CONTEXT) -> str:
    """The system turn: the card's system prompt (or ours; `{{original}}` inserts ours), lore, the card's fields, lore.

    with_card=False keeps only our one-line instruction (and the lore): the soft prompt carries the character.
    """
    if not with_card:
        text = "\n\n".join(p.strip() for p in (DEFAULT_SYSTEM_PROMPT, context.before_char, context.after_char) if p.strip())
        return substitute(text, char=card.name, user=user)
    main = card.system_prompt.replace("{{original}}", DEFAULT_SYSTEM_PROMPT) if card.system_prompt.strip() \
        else DEFAULT_SYSTEM_PROMPT
    parts = [main, context.before_char, card.description]
    if card.personality.strip():
        parts.append(f"{{{{char}}}}'s personality: {card.personality}")
    if card.scenario.strip():
        parts.append(f"Scenario: {card.scenario}")
    examples = split_examples(card.mes_example)
    if examples:
        parts.append("Example dialogue:\n" + "\n\n".join(examples))
    parts.append(context.after_char)
    text = "\n\n".join(p.strip() for p in parts if p and p.strip())
    return substitute(text, char=card.name, user=user)


def greeting(card: CharacterCard, user: str, index: int = 0) -> str:
    """first_mes (index 0) or alternate_greetings[index - 1], macros resolved."""
    options = [card.first_mes, *card.alternate_greetings]
    if not 0 <= index < len(options):
        raise ValueError(f"greeting index {index} out of range: the card has {len(options)} greetings")
    return substitute(options[index], char=card.name, user=user)


def stop_strings(card: CharacterCard, user: str) -> list[str]:
    """Text that means the model started writing the user's lines (or a new turn): cut the reply there."""
    return [f"\n{user}:", f"\n{user} :", f"\n**{user}:**", "<|im_start|>", "<|im_end|>", "<|eot_id|>",
            "<end_of_turn>", "</s>"]


def build_messages(card: Optional[CharacterCard], history: Sequence[Message], user: str, *, with_card: bool = True,
                   context: TurnContext = NO_CONTEXT) -> list[dict]:
    """history: greeting first, then alternating user/assistant turns; the last one is usually the new user turn.

    card=None: personae adds nothing, the history alone is the prompt (an API client that builds its own:
    the plain model, or a client whose system text already holds the card); `context` still joins it.

    The card's post-history instructions precede every user turn, not only the newest: the user's words
    are the last thing the model reads before it answers (with an instruction or a lore note after them,
    SmolLM2-135M introduced itself or recited the lore instead of answering), each earlier reply sits in
    the same context it was written in, and the prompt of turn N extends the prompt of turn N-1, so the KV
    cache covers everything but the new turn. `context.notes` follows the greeting, `context.recent`
    precedes the newest user message (and its post-history instructions), and `context.depth` entries sit
    that many messages from the end (never among the pinned ones). A changed `recent` costs the previous
    turn and the new one, never the card or older history.
    """
    if card is None:
        messages, phi = [], ""
    else:
        messages = [{"role": "system", "content": system_prompt(card, user, with_card=with_card, context=context)}]
        # the post-history instructions are card text too: with the soft prompt standing in for the card, they go
        phi = substitute(card.post_history_instructions.strip(), char=card.name, user=user) if with_card else ""
    pinned = _pinned(history)
    extra: dict[int, list[Message]] = {}  # history index -> messages inserted before it
    if context.notes.strip():
        extra.setdefault(pinned, []).append(Message("system", context.notes.strip()))
    for depth, role, text in context.depth:
        extra.setdefault(max(pinned, len(history) - depth), []).append(Message(role, text.strip()))
    newest = _last_turn_start(history)
    for i, m in enumerate([*history, None]):
        for added in extra.get(i, ()):
            messages.append({"role": added.role, "content": added.content})
        if m is None:
            break
        if i == newest and context.recent.strip():
            messages.append({"role": "system", "content": context.recent.strip()})
        if phi and m.role == "user":
            messages.append({"role": "system", "content": phi})
        messages.append({"role": m.role, "content": m.content})
    return messages


def render(tokenizer, messages: list[dict], soft_tokens: int = 0,
           add_generation_prompt: bool = True) -> tuple[str, list[int]]:
    """The chat template applied (with the assistant's turn opened); returns (text, ids).

    soft_tokens=K puts K placeholder ids -1..-K at the start of the system turn's content: the decoder
    swaps them for the persona's soft-prompt vectors. The text marks the slot as `[soft prompt: K]`.
    """
    if soft_tokens:
        messages = [{**messages[0], "content": SOFT_SLOT + messages[0]["content"]}] + list(messages[1:])
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    if not soft_tokens:
        return text, list(tokenizer(text, add_special_tokens=False)["input_ids"])
    before, after = text.split(SOFT_SLOT, 1)
    ids = list(tokenizer(before, add_special_tokens=False)["input_ids"]) + soft_placeholders(soft_tokens) + \
        list(tokenizer(after, add_special_tokens=False)["input_ids"])
    return before + f"[soft prompt: {soft_tokens} vectors]" + after, ids


@dataclass(frozen=True)
class Prompt:
    text: str  # the exact text the model sees
    ids: list[int]  # its token ids
    kept_from: int  # history index of the first turn kept after the greeting
    dropped: int  # old messages left out to fit the budget
    messages: list[dict]  # the messages that were rendered


def fit_prompt(tokenizer, card: Optional[CharacterCard], history: Sequence[Message], user: str, *,
               budget: int, kept_from: int = 1, soft_tokens: int = 0, with_card: bool = True,
               context: TurnContext = NO_CONTEXT) -> Prompt:
    """Renders the prompt within `budget` tokens, dropping the oldest whole turns after the greeting.

    kept_from: where the previous turn's prompt started; it only moves forward, so the cached prefix
    stays valid between drops. Raises ValueError when the card, greeting and newest turn alone don't fit.
    """
    pinned = _pinned(history)

    def attempt(start: int) -> Prompt:
        kept = list(history[:pinned]) + list(history[start:])
        messages = build_messages(card, kept, user, with_card=with_card, context=context)
        text, ids = render(tokenizer, messages, soft_tokens)
        return Prompt(text, ids, start, start - pinned, messages)

    kept_from = max(pinned, min(kept_from, _last_turn_start(history)))
    prompt = attempt(kept_from)
    if len(prompt.ids) <= budget:
        return prompt
    target = int(budget * LOW_WATER)
    start = kept_from
    while start < _last_turn_start(history):
        start = _next_turn_start(history, start)
        prompt = attempt(start)
        if len(prompt.ids) <= target:
            return prompt
    if len(prompt.ids) <= budget:
        return prompt
    what = "the card, greeting" if card is not None else "the system messages, greeting"
    raise ValueError(f"{what} and latest message take {len(prompt.ids)} tokens, more than the "
                     f"{budget}-token prompt budget; shorten the card or raise chat.context_tokens")


def _pinned(history: Sequence[Message]) -> int:
    """How many leading messages are never dropped: system messages (an API client's) and the greeting."""
    n = 0
    while n < len(history) and history[n].role == "system":
        n += 1
    return n + 1 if n < len(history) and history[n].role == "assistant" else n


def _last_turn_start(history: Sequence[Message]) -> int:
    """Index of the newest user message (the turn being answered); the greeting (0) if there is none."""
    for i in range(len(history) - 1, -1, -1):
        if history[i].role == "user":
            return i
    return len(history)


def _next_turn_start(history: Sequence[Message], start: int) -> int:
    """The next user message after `start`, so turns are dropped whole."""
    for i in range(start + 1, len(history)):
        if history[i].role == "user":
            return i
    return len(history)


def annotate(prompt: Prompt, tokenizer) -> str:
    """A card author's view of `prompt`: token counts per message, then the exact text."""
    lines = []
    soft = sum(1 for i in prompt.ids if i < 0)
    if soft:
        lines.append(f"[soft prompt: {soft} vectors at the start of the system turn]")
    for m in prompt.messages:
        n = len(tokenizer(m["content"], add_special_tokens=False)["input_ids"])
        lines.append(f"[{m['role']}: {n} tokens]")
    if prompt.dropped:
        lines.append(f"[history: {prompt.dropped} oldest messages dropped to fit the context]")
    lines.append(f"[total: {len(prompt.ids)} tokens]")
    return "\n".join(lines) + "\n" + "-" * 60 + "\n" + prompt.text
