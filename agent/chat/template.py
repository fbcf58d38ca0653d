"""What the LM's chat template says about ending a turn, and cutting streamed text at stop strings.

`stop_token_ids` and `turn_markers` are read from the tokenizer itself (its special tokens, and what its own
template writes around a probe conversation), never from a list of known model families. `StopCutter` holds
back streamed text that could still become a stop string; the decoders' reply streams and the server's
client stop strings both use it. No torch here.
"""
from __future__ import annotations

from typing import Iterable, Optional, Sequence

_PROBE = [{"role": "user", "content": "personae-probe-user"},
          {"role": "assistant", "content": "personae-probe-reply"}]


def _special_tokens(tokenizer) -> dict[str, int]:
    """Every special (control) token of the tokenizer: text -> id."""
    found = {}
    for tid, added in getattr(tokenizer, "added_tokens_decoder", {}).items():
        if getattr(added, "special", False):
            found[str(added)] = int(tid)
    for text, tid in zip(tokenizer.all_special_tokens, tokenizer.all_special_ids):
        found.setdefault(text, int(tid))
    return found


def turn_markers(tokenizer) -> tuple[str, ...]:
    """The special tokens the chat template writes around messages (e.g. '<|im_start|>', '<|im_end|>'), longest first.

    Text that holds one of them was not meant as the persona's words: a reply is cut there.
    """
    try:
        rendered = tokenizer.apply_chat_template(_PROBE, tokenize=False)
    except Exception:  # noqa: BLE001 - a template that refuses the probe gives no markers, not a failed chat
        rendered = ""
    return tuple(sorted((t for t in _special_tokens(tokenizer) if t and t in rendered), key=len, reverse=True))


def _ids(value) -> set[int]:
    if isinstance(value, int):
        return {value}
    return {int(v) for v in value} if value else set()


def stop_token_ids(tokenizer, generation_config=None) -> tuple[int, ...]:
    """Token ids that end a reply: the tokenizer's and the model's end-of-sequence ids, and every special token.

    Special tokens are control tokens (turn markers, end of text, padding): the LM writing one means its
    turn is over, whatever the model family calls it. generation_config: the model's (its eos_token_id),
    or None when only the tokenizer is loaded.
    """
    ids = _ids(tokenizer.eos_token_id) | set(_special_tokens(tokenizer).values())
    if generation_config is not None:
        ids |= _ids(getattr(generation_config, "eos_token_id", None))
    return tuple(sorted(ids))


def held_back(text: str, stops: Iterable[str]) -> int:
    """How many trailing characters of `text` could be the start of a stop string (not yet safe to show)."""
    hold = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:k]):
                hold = max(hold, k)
                break
    return hold


class StopCutter:
    """Streamed text, cut at the first stop string; says what is safe to show as the text grows.

    `update(text)` takes everything written so far, `feed(piece)` the next piece; both return the part that
    became safe to show: a tail that could still turn into a stop string, or half a multi-byte character
    (U+FFFD at the end), waits. `flush()` gives what was held back once the stream ends.
    """

    def __init__(self, stops: Sequence[str] = ()):
        self.stops = [s for s in stops if s]
        self.text = ""  # everything so far, cut at the stop string once one was found
        self.shown = 0  # characters of `text` already handed out
        self.stopped = False  # a stop string was found
        self.found = ""  # the stop string that cut the text

    def update(self, text: str) -> str:
        if self.stopped:
            return ""
        cut, found = min(((text.find(s), s) for s in self.stops if s in text), default=(-1, ""))
        if cut >= 0:
            self.text, self.stopped, self.found = text[:cut], True, found
            safe = cut
        else:
            self.text = text
            safe = len(text) - (1 if text.endswith("\ufffd") else held_back(text, self.stops))
        out = self.text[self.shown:safe] if safe > self.shown else ""
        self.shown = max(self.shown, safe)
        return out

    def feed(self, piece: str) -> str:
        return self.update(self.text + piece)

    def flush(self) -> str:
        out, self.shown = self.text[self.shown:], len(self.text)
        return out


def with_turn_markers(stops: Optional[Sequence[str]], tokenizer) -> list[str]:
    """`stops` and the template's turn markers, each once, in that order."""
    out = list(stops or ())
    return out + [m for m in turn_markers(tokenizer) if m not in out]
