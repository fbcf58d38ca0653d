"""Builds the prompt for the next turn: card fields -> chat messages -> the model's own chat template -> token ids.

The card goes into the system turn, the greeting is the first assistant turn, then the history.
Lore and memory (a `TurnContext`, built by agent/chat/context.py) join where they keep the cached prefix:
constant lore in the system turn, the summary and notes after the greeting, key-activated lore and
recalled turns right before the newest user message (the user's words always come last).
When history outgrows the context budget, whole old turns are dropped (never the card or greeting).
The token ids go to the decoder.
"""
from __future__ import annotations

import threading
import weakref
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


class Cancelled(Exception):
    """The request was cancelled (its client went away): before its job ran, or while its prompt was fitted."""


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
    text = _template_text(tokenizer, messages, soft_tokens, add_generation_prompt)
    return _shown(text, soft_tokens), _token_ids(tokenizer, text, soft_tokens)


def _template_text(tokenizer, messages: list[dict], soft_tokens: int, add_generation_prompt: bool = True) -> str:
    """The chat template's text, with SOFT_SLOT where the soft vectors go (soft_tokens > 0)."""
    if soft_tokens:
        messages = [{**messages[0], "content": SOFT_SLOT + messages[0]["content"]}] + list(messages[1:])
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def _shown(text: str, soft_tokens: int) -> str:
    return text.replace(SOFT_SLOT, f"[soft prompt: {soft_tokens} vectors]", 1) if soft_tokens else text


def _token_ids(tokenizer, text: str, soft_tokens: int) -> list[int]:
    if not soft_tokens:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    before, after = text.split(SOFT_SLOT, 1)
    return list(tokenizer(before, add_special_tokens=False)["input_ids"]) + soft_placeholders(soft_tokens) + \
        list(tokenizer(after, add_special_tokens=False)["input_ids"])


@dataclass(frozen=True)
class Prompt:
    text: str  # the exact text the model sees
    ids: list[int]  # its token ids
    kept_from: int  # history index of the first turn kept after the greeting
    dropped: int  # old messages left out to fit the budget
    messages: list[dict]  # the messages that were rendered


def fit_prompt(tokenizer, card: Optional[CharacterCard], history: Sequence[Message], user: str, *,
               budget: int, kept_from: int = 1, soft_tokens: int = 0, with_card: bool = True,
               context: TurnContext = NO_CONTEXT, cancel: Optional[threading.Event] = None) -> Prompt:
    """Renders the prompt within `budget` tokens, dropping the oldest whole turns after the greeting.

    kept_from: where the previous turn's prompt started; it only moves forward, so the cached prefix
    stays valid between drops. The prompt from there is kept if it fits the budget; else the oldest turns
    go until what is left fits LOW_WATER of it (the newest turn alone need only fit the budget), so drops
    are rare. Raises ValueError when the card, greeting and newest turn alone don't fit, and Cancelled
    as soon as `cancel` is set.

    Costs a few tokenisations of about what is kept, however long the history (see `_Fitting`).
    """
    fitting = _Fitting(tokenizer, card, history, user, budget=budget, kept_from=kept_from, soft_tokens=soft_tokens,
                       with_card=with_card, context=context, cancel=cancel)
    prompt = fitting.run()
    if prompt is not None:
        return prompt
    prompt = fitting.prompt(len(fitting.starts) - 1)
    what = "the card, greeting" if card is not None else "the system messages, greeting"
    raise ValueError(f"{what} and latest message take {len(prompt.ids)} tokens, more than the "
                     f"{budget}-token prompt budget; shorten the card or raise chat.context_tokens")


class _Fitting:
    """One fit_prompt: the turn starts it may keep from, in order (`starts`), and the prompts tried so far.

    The answer is the one the old turn-by-turn walk found: kept_from if its prompt fits the budget, else the
    first later start whose prompt fits LOW_WATER of it (the newest turn alone: the budget). Assuming that
    dropping a turn never lengthens the prompt, a few renders find it: a text longer than the budget times
    the longest token is over without being tokenised; per-message token counts (each message tokenised at
    most once, only between the starts tried and the cut) estimate where the cut is; a real render decides.
    The answer is a rendered prompt known to fit while the start before it is known not to.
    """

    def __init__(self, tokenizer, card, history, user, *, budget, kept_from, soft_tokens, with_card, context, cancel):
        self.tokenizer, self.history, self.budget, self.cancel = tokenizer, history, budget, cancel
        self.soft_tokens = soft_tokens
        self.build = lambda kept: build_messages(card, kept, user, with_card=with_card, context=context)
        self.pinned = _pinned(history)
        last = _last_turn_start(history)
        start = max(self.pinned, min(kept_from, last))
        self.starts = [start]
        while start < last:
            start = _next_turn_start(history, start)
            self.starts.append(start)
        self.tried: dict[int, Prompt] = {}  # index in starts -> its rendered prompt
        self.tokens: dict[int, int] = {}  # history index -> tokens of its content alone
        self.per_message = 0.0  # template tokens per history message (its wrapper, post-history instructions)

    def limit(self, k: int) -> int:
        return self.budget if k in (0, len(self.starts) - 1) else int(self.budget * LOW_WATER)

    def _check(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled("the request was cancelled while its prompt was built")

    def prompt(self, k: int, text: Optional[str] = None, messages: Optional[list[dict]] = None) -> Prompt:
        """The prompt kept from starts[k] (rendered once); `text` and `messages`: its template text, if made."""
        if k not in self.tried:
            self._check()
            start = self.starts[k]
            if text is None:
                messages = self.build(list(self.history[:self.pinned]) + list(self.history[start:]))
                text = _template_text(self.tokenizer, messages, self.soft_tokens)
            ids = _token_ids(self.tokenizer, text, self.soft_tokens)
            self.tried[k] = Prompt(_shown(text, self.soft_tokens), ids, start, start - self.pinned, messages)
        return self.tried[k]

    def fits(self, k: int) -> bool:
        return len(self.prompt(k).ids) <= self.limit(k)

    def run(self) -> Optional[Prompt]:
        """The fitted prompt, or None when even the newest turn alone is over the budget."""
        messages = self.build(list(self.history[:self.pinned]) + list(self.history[self.starts[0]:]))
        text = _template_text(self.tokenizer, messages, self.soft_tokens)
        longest = _longest_token(self.tokenizer)
        # no token covers more than `longest` characters: a longer text is over the budget without tokenising it
        if longest is None or len(text) - (len(SOFT_SLOT) if self.soft_tokens else 0) <= self.budget * longest:
            if len(self.prompt(0, text, messages).ids) <= self.budget:
                return self.tried[0]
        lo, hi, known = 1, len(self.starts) - 1, None  # the answer is in [lo, known or hi]; `known` fits
        while lo <= (hi if known is None else known - 1):
            k = self._next_try(lo, hi, known)
            if self.fits(k):
                known = k
            else:
                lo = k + 1
            self._learn_overhead(lo - 1, known)
        return None if known is None else self.tried[known]

    def _next_try(self, lo: int, hi: int, known: Optional[int]) -> int:
        """The start to render next, in [lo, known - 1] (or [lo, hi] while none is known to fit)."""
        top = hi if known is None else known - 1
        if len(self.tried) > 6:  # the estimates keep missing (an unusual template): halve the range
            return (lo + top) // 2
        if known is not None:
            return self._walk_back(known, lo)
        below = self.tried.get(lo - 1)
        if below is not None and len(below.ids) <= 2 * self.budget:  # a near miss: walk forward from it
            return self._walk_forward(lo - 1, top)
        return top  # the newest turn alone first: small, and it says whether anything fits

    def _walk_back(self, known: int, lo: int) -> int:
        """Where the estimates say the prompt stops fitting, walking back a turn at a time from `known`."""
        tokens, k = len(self.tried[known].ids), known
        while k > lo:
            tokens += self._estimate(self.starts[k - 1], self.starts[k])
            if tokens > self.limit(k - 1):
                break
            k -= 1
        return min(k, known - 1)  # at `known` itself: try the start before it, which should not fit

    def _walk_forward(self, below: int, top: int) -> int:
        """Where the estimates say the prompt starts to fit, walking forward a turn at a time from `below`."""
        tokens, k = len(self.tried[below].ids), below
        while k < top:
            tokens -= self._estimate(self.starts[k], self.starts[k + 1])
            k += 1
            if tokens <= self.limit(k):
                break
        return k

    def _estimate(self, begin: int, end: int) -> float:
        """Estimated prompt tokens of history[begin:end]."""
        return sum(self._message_tokens(i) for i in range(begin, end)) + self.per_message * (end - begin)

    def _message_tokens(self, i: int) -> int:
        if i not in self.tokens:
            self._check()
            self.tokens[i] = len(self.tokenizer(self.history[i].content, add_special_tokens=False)["input_ids"])
        return self.tokens[i]

    def _learn_overhead(self, over: int, fits: Optional[int]) -> None:
        """per_message from the two tried prompts closest to the cut, one over and one within its limit
        (not from a prompt far over: the messages between would all be tokenised)."""
        if fits is None or over not in self.tried or len(self.tried[over].ids) > 2 * self.budget:
            return
        begin, end = self.starts[over], self.starts[fits]
        content = sum(self._message_tokens(i) for i in range(begin, end))
        self.per_message = max(0.0, (len(self.tried[over].ids) - len(self.tried[fits].ids) - content) / (end - begin))


_LONGEST: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _longest_token(tokenizer) -> Optional[int]:
    """Characters of the tokenizer's longest vocabulary entry, which no token's text exceeds; None if unknown."""
    try:
        return _LONGEST[tokenizer]
    except (KeyError, TypeError):
        pass
    try:
        longest = max(map(len, tokenizer.get_vocab()), default=0) or None
    except (AttributeError, TypeError):  # a tokenizer without a vocabulary to show: no bound
        longest = None
    try:
        _LONGEST[tokenizer] = longest
    except TypeError:  # not weakly referable: worked out again next time
        pass
    return longest


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
