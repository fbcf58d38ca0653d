"""The running summary of a long chat: the LM folds turns that left the context window into a short text.

`summarize(backend, previous, turns, ...)` is one greedy generation with its own decoder, so the session's KV
cache is untouched. The summary sits after the greeting (agent/chat/context.py); it changes only when
turns are dropped, and a drop already moves everything after the greeting.
"""
from __future__ import annotations

from typing import Sequence

from .prompt import Prompt
from .sampling import SamplingOptions
from .template import turn_markers

INSTRUCTION = (
    "You keep notes on a role-play chat between {user} and {char}. Update the notes with the new lines: "
    "keep every name, fact, place, promise and plan that was stated, drop small talk. "
    "Write plain sentences, at most {words} words, no preamble."
)
MAX_INPUT_TOKENS = 768  # the oldest new lines are cut beyond this, so one summary costs a bounded prefill


def summary_prompt(tokenizer, previous: str, turns: Sequence[str], *, user: str, char: str, max_tokens: int) -> Prompt:
    """The chat-template prompt: the instruction, the notes so far, the new lines (newest kept if too long)."""
    words = max(20, int(max_tokens * 0.7))
    lines = "\n\n".join(t.strip() for t in turns)
    ids = tokenizer(lines, add_special_tokens=False)["input_ids"]
    if len(ids) > MAX_INPUT_TOKENS:
        lines = tokenizer.decode(ids[-MAX_INPUT_TOKENS:], skip_special_tokens=True)
    body = (f"Notes so far:\n{previous.strip()}\n\n" if previous.strip() else "") + f"New lines:\n{lines}\n\nUpdated notes:"
    messages = [{"role": "system", "content": INSTRUCTION.format(user=user, char=char, words=words)},
                {"role": "user", "content": body}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    return Prompt(text=text, ids=ids, kept_from=0, dropped=0, messages=messages)


def summarize(backend, previous: str, turns: Sequence[str], *, user: str, char: str, max_tokens: int) -> str:
    """The updated running summary (greedy, at most max_tokens). Falls back to `previous` if the LM writes nothing.

    backend: the chat backend (agent/chat/backends.py); the summary is written by a fresh decoder of its own.
    """
    tokenizer = backend.tokenizer
    prompt = summary_prompt(tokenizer, previous, turns, user=user, char=char, max_tokens=max_tokens)
    options = SamplingOptions(max_new_tokens=max_tokens, temperature=0.0, repetition_penalty=1.15,
                              eos_token_ids=backend.stop_token_ids)
    stream = backend.stream(backend.new_decoder(reuse_cache=False), prompt, options, turn_markers(tokenizer))
    text = "".join(stream).strip()
    return text or previous
