"""fit_prompt against the turn-by-turn walk it replaced (kept here as the reference), its cost on a long
history, and its cancel."""
import random
import threading

import pytest

from agent.chat.prompt import (LOW_WATER, NO_CONTEXT, Cancelled, Message, Prompt, TurnContext, _last_turn_start,
                               _next_turn_start, _pinned, build_messages, fit_prompt, render)
from agent.persona.card import CharacterCard


def reference_fit(tokenizer, card, history, user, *, budget, kept_from=1, soft_tokens=0, with_card=True,
                  context=NO_CONTEXT) -> Prompt:
    """fit_prompt as it was: re-renders the whole kept history after every dropped turn (quadratic)."""
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


def _card(**fields):
    base = dict(name="Mara", description="{{char}} captains the Gull.", personality="gruff, fair",
                scenario="{{user}} boards the ship.", first_mes="Welcome aboard, {{user}}.")
    base.update(fields)
    return CharacterCard.from_fields(base, "test")


WORDS = "the sea wind sail captain gull storm ahoy harbour rope knot silver map island rum 42 ! ? \n".split(" ")


def _text(rng: random.Random) -> str:
    n = rng.choice([1, 3, 8, 20, 60, 150])
    return " ".join(rng.choice(WORDS) for _ in range(n))


def _history(rng: random.Random) -> list[Message]:
    """Client system messages, a greeting, turns of very different lengths, now and then two messages
    of one side in a row; usually ending with a user message, sometimes not, sometimes with no user at all."""
    history = [Message("system", _text(rng)) for _ in range(rng.choice([0, 0, 1, 2]))]
    if rng.random() < 0.8:
        history.append(Message("assistant", _text(rng)))
    for _ in range(rng.choice([0, 1, 3, 10, 25])):
        history.append(Message("user", _text(rng)))
        if rng.random() < 0.1:
            history.append(Message("user", _text(rng)))
        if rng.random() < 0.9:
            history.append(Message("assistant", _text(rng)))
    if rng.random() < 0.8:
        history.append(Message("user", _text(rng)))
    return history


def _context(rng: random.Random) -> TurnContext:
    if rng.random() < 0.4:
        return NO_CONTEXT
    pick = lambda: _text(rng) if rng.random() < 0.6 else ""  # noqa: E731
    depth = tuple((rng.choice([0, 1, 4, 50]), rng.choice(["system", "user"]), _text(rng))
                  for _ in range(rng.choice([0, 1, 2])))
    return TurnContext(before_char=pick(), after_char=pick(), notes=pick(), recent=pick(), depth=depth)


def _outcome(fit, *args, **kwargs):
    try:
        p = fit(*args, **kwargs)
    except ValueError as e:
        return str(e)
    return p.kept_from, p.dropped, p.ids, p.text, p.messages


def test_the_same_turns_are_kept_as_by_the_turn_by_turn_walk(tiny_llama):
    tok = tiny_llama.tokenizer
    rng = random.Random(29)
    for case in range(60):
        history = _history(rng)
        card = None if rng.random() < 0.2 else _card(post_history_instructions=rng.choice(["", "Stay {{char}}."]))
        kwargs = dict(soft_tokens=rng.choice([0, 0, 3]), with_card=rng.random() < 0.8, context=_context(rng),
                      kept_from=rng.choice([0, 1, 2, 5, len(history) // 2, len(history) + 3]))
        full = len(reference_fit(tok, card, history, "Ann", budget=10 ** 9, **kwargs).ids)
        for share in (0.1, 0.4, 0.7, 0.9, 1.0, 1.3):
            budget = max(1, int(full * share))
            expected = _outcome(reference_fit, tok, card, history, "Ann", budget=budget, **kwargs)
            assert _outcome(fit_prompt, tok, card, history, "Ann", budget=budget, **kwargs) == expected, \
                (case, share, kwargs)


class CountingTokenizer:
    """The tiny tokenizer, counting the calls and characters it tokenises."""

    def __init__(self, tokenizer, *, vocab=True):
        self.tokenizer, self.calls, self.chars = tokenizer, 0, 0
        if vocab:
            self.get_vocab = tokenizer.get_vocab

    def __call__(self, text, **kwargs):
        self.calls += 1
        self.chars += len(text)
        return self.tokenizer(text, **kwargs)

    def apply_chat_template(self, *args, **kwargs):
        return self.tokenizer.apply_chat_template(*args, **kwargs)


def _long_request(messages: int = 1999, size: int = 1900) -> list[Message]:
    """The issue's request: 1,999 messages of 1.9 kB, alternating user and assistant, a user message last."""
    body = ("Ahoy, the wind is with us today and the captain said so. " * 40)[:size]
    return [Message("user" if i % 2 == 0 else "assistant", f"{i} {body}") for i in range(messages)]


def test_a_long_history_costs_about_one_tokenisation_of_what_is_kept(tiny_llama):
    tok = CountingTokenizer(tiny_llama.tokenizer)
    history = _long_request()
    prompt = fit_prompt(tok, _card(), history, "Ann", budget=4000)
    assert prompt.dropped > 1900 and len(prompt.ids) <= 4000
    kept = len(prompt.messages)
    assert tok.calls <= 2 * kept + 10  # per-message counts near the cut, plus a few renders
    assert tok.chars <= 6 * len(prompt.text)  # not the 3.8 MB of the whole request


def test_without_a_vocabulary_the_history_is_tokenised_once(tiny_llama):
    tok = CountingTokenizer(tiny_llama.tokenizer, vocab=False)
    history = _long_request(101)
    prompt = fit_prompt(tok, _card(), history, "Ann", budget=4000)
    assert prompt.dropped > 90
    assert tok.chars <= sum(len(m.content) for m in history) + 6 * len(prompt.text)


def test_a_set_cancel_stops_the_fit(tiny_llama):
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        fit_prompt(tiny_llama.tokenizer, _card(), _long_request(21), "Ann", budget=4000, cancel=cancel)


def test_a_cancel_set_while_fitting_stops_it_at_the_next_tokenisation(tiny_llama):
    cancel = threading.Event()

    class Cancelling(CountingTokenizer):  # the client goes away during the second tokenisation
        def __call__(self, text, **kwargs):
            cancel.set() if self.calls == 1 else None
            return super().__call__(text, **kwargs)

    tok = Cancelling(tiny_llama.tokenizer)
    with pytest.raises(Cancelled):
        fit_prompt(tok, _card(), _long_request(), "Ann", budget=4000, cancel=cancel)
    assert tok.calls == 2
