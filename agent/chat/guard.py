"""The guard: a reply is shown a sentence at a time, each checked with the break rules first (agent/chat/breaks.py).

`GuardedReply(start, options, check, ...)` wraps a factory of reply streams (`start(options, cancel)`, one
fresh `backend.stream(...)` per try; the same prompt prefills again from the KV cache). A first sentence that
breaks is dropped and sampled again with a new seed, before anything is shown; a later one cuts the reply
after the last good sentence. The last try (with a tokenizer given) bans the first tokens of the words that
broke the tries before it ("AI", the name it took), so a reply comes through where free samples kept
breaking. Greedy replies are never re-sampled (a new seed gives the same reply): they are cut, or shown as
they are when the first sentence breaks, and `report` says so. Hands the session the shown pieces, then
`text`, `stats` (the shown try's) and `report` (`GuardReport`).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import re
import threading
import time
import zlib
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Sequence

from ..persona.card import CharacterCard
from .breaks import RULES, detect_break, words_to_avoid
from .sampling import SamplingOptions
from .stream import DecodeStats

log = logging.getLogger(__name__)
HEADER = "X-Personae-Guard"  # what the guard did, on the server's responses (GuardReport.header)
# a sentence ends at . ! ? or … (with closing quotes, brackets or emphasis) followed by white space, or at a line end
SENTENCE_END = re.compile(r"[.!?…]+[\"'”’)\]*_]*\s+|\n+")


@dataclass(frozen=True)
class CharacterCheck:
    """Which break rules a reply text fires (detect_break), the speaker's own 'Name:' opening aside."""
    card: CharacterCard  # the persona's card: the names it may use
    user: str  # the user's name (lines it heads are the user's)
    user_turn: str = ""  # the message replied to: a rule's match that echoes it is no break
    system_text: str = ""  # the system turn the model read (a reply repeating it reveals the prompt)
    others: tuple[str, ...] = ()  # a group scene's other participants, whose lines the reply must not write

    def __call__(self, text: str) -> tuple[str, ...]:
        head = re.match(rf"\s*{re.escape(self.card.name)}\s*:", text) if self.card.name else None
        return detect_break(text[head.end():] if head else text, card=self.card, user=self.user,
                            user_turn=self.user_turn, system_text=self.system_text, others=self.others)

    def avoid(self, text: str, rules: Sequence[str]) -> tuple[str, ...]:
        """The words of `text` that broke `rules` (breaks.words_to_avoid): what the guard's last try bans."""
        return words_to_avoid(text, rules, card=self.card, others=self.others)


@dataclass
class GuardReport:
    """What the guard did to one reply; `header()` for the server, `note()` for people, `record()` for the store."""
    enabled: bool = True  # False: chat.guard is off (or the plain model: no character to keep)
    retried: int = 0  # samples dropped before anything was shown
    rules: tuple[str, ...] = ()  # the rules of the last break found, in detect_break's order
    outcome: str = ""  # "" | "resampled" | "banned": the shown try was sampled with the words that broke the others banned | "cut": a later sentence broke, the reply ends before it | "kept": greedy, shown as it is | "withheld": every sample broke, nothing shown
    banned: tuple[str, ...] = ()  # the words whose first tokens the last try could not sample
    first_shown: Optional[float] = None  # seconds from the start of the reply to its first shown text

    def header(self) -> str:
        """'retried=1 rule=changes_name' (a streamed response's header says what was known before its first text)."""
        if not self.enabled:
            return "off"
        parts = [f"retried={self.retried}"] + ([f"rule={','.join(self.rules)}"] if self.rules else [])
        parts += [f"banned={','.join(w.replace(' ', '_') for w in self.banned)}"] if self.banned else []
        return " ".join(parts + ([f"action={self.outcome}"] if self.outcome not in ("", "resampled") else []))

    def note(self) -> str:
        """A sentence for the terminal when the guard acted; '' when it had nothing to do."""
        rules = " and ".join(self.rules)
        dropped = f"{self.retried} sample{'s' * (self.retried != 1)} dropped" if self.retried else ""
        banned = ", ".join(self.banned)
        said = {"resampled": f"guard: {dropped} (it broke {rules})" if self.outcome == "resampled" else "",
                "banned": f"guard: {dropped} (they broke {rules}); the reply shown was sampled without {banned}",
                "cut": f"guard: {dropped + ', ' if dropped else ''}reply cut before a sentence that broke {rules}",
                "kept": f"guard: greedy reply shown as it is though it breaks {rules} "
                        "(temperature 0 is never re-sampled; /retry with a temperature above 0)",
                "withheld": f"guard: every sample broke ({rules}); nothing shown, /retry to try again"}
        return said.get(self.outcome, "")

    def record(self) -> str:
        """The JSON kept with the stored reply; '' when the guard was off."""
        if not self.enabled:
            return ""
        banned = {"banned": list(self.banned)} if self.banned else {}
        return json.dumps({"retried": self.retried, "rules": list(self.rules), "outcome": self.outcome, **banned})


OFF = GuardReport(enabled=False)


def resample_seed(seed: Optional[int], attempt: int) -> Optional[int]:
    """The seed of try `attempt` (0: the request's own): derived, so a seeded reply stays reproducible; None
    stays None (an unseeded generator draws afresh each try)."""
    if seed is None or attempt == 0:
        return seed
    return zlib.crc32(f"{seed}/guard/{attempt}".encode())


def first_token_ids(tokenizer, words: Sequence[str]) -> tuple[int, ...]:
    """The first token of each word as the model could start it (after a space or not; as written, lower case,
    capitalised, upper case): banning these keeps a sample from writing the word. A first token shorter than
    two characters ("A" of "A.I.") is left alone: banning it would ban far more than the word."""
    ids: dict[int, None] = {}
    for word in words:
        for form in dict.fromkeys((word, word.lower(), word[:1].upper() + word[1:], word.upper())):
            for text in (form, " " + form):
                first = tokenizer(text, add_special_tokens=False)["input_ids"][:1]
                piece = tokenizer.decode(first).strip() if first else ""
                if len(piece) >= 2 and form.lower().startswith(piece.lower()):
                    ids[first[0]] = None
    return tuple(ids)


class _Either(threading.Event):
    """Set when the caller's cancel or the guard's own is: the guard stops a try without touching the caller's."""

    def __init__(self, outer: Optional[threading.Event]):
        super().__init__()
        self.outer = outer

    def is_set(self) -> bool:
        return super().is_set() or (self.outer is not None and self.outer.is_set())


class GuardedReply:
    """Streams the checked reply. start(options, cancel) -> a reply stream (iterate for pieces; .stats after);
    check(text) -> the rules text breaks; retries: new samples of a first sentence that breaks; hold_tokens:
    pieces held back at most when no sentence ended; cancel: the caller's (Ctrl-C, a client gone); tokenizer:
    the model's, for the last try's ban (check must then have `avoid`, as CharacterCheck has); None: the last
    try samples freely."""

    def __init__(self, start: Callable[[SamplingOptions, threading.Event], object], options: SamplingOptions,
                 check: Callable[[str], Sequence[str]], *, retries: int, hold_tokens: int,
                 cancel: Optional[threading.Event] = None, tokenizer=None):
        self.start, self.options, self.check = start, options, check
        self.retries, self.hold_tokens, self.cancel, self.tokenizer = retries, hold_tokens, cancel, tokenizer
        self.broken: list[tuple[str, tuple[str, ...]]] = []  # (first sentence, rules) of each dropped try
        self.text = ""
        self.stats = DecodeStats()
        self.report = GuardReport()

    def __iter__(self) -> Iterator[str]:
        began = time.perf_counter()
        greedy = self.options.temperature == 0
        for attempt in range(self.retries + 1):
            options = dataclasses.replace(self.options, seed=resample_seed(self.options.seed, attempt))
            if attempt == self.retries and attempt > 0:
                options = self._banning(options)
            self.report.outcome = ""
            for piece in self._attempt(options, last=greedy or attempt == self.retries, greedy=greedy):
                if self.report.first_shown is None:
                    self.report.first_shown = time.perf_counter() - began
                self.text += piece
                yield piece
            if self.report.outcome != "retry":
                break
            self.report.retried += 1
        if self.report.retried and not self.report.outcome:
            self.report.outcome = "banned" if self.report.banned else "resampled"
        log.debug("guard: %s", self.report.header())

    def _banning(self, options: SamplingOptions) -> SamplingOptions:
        """The last try's options: the first tokens of the words that broke the dropped tries banned."""
        if self.tokenizer is None:
            return options
        words = tuple(dict.fromkeys(w for text, rules in self.broken for w in self.check.avoid(text, rules)))
        ids = first_token_ids(self.tokenizer, words)
        if not ids:
            return options
        self.report.banned = words
        return dataclasses.replace(options, banned_token_ids=tuple(dict.fromkeys(options.banned_token_ids + ids)))

    def _release_point(self, text: str, shown: int, held_pieces: int) -> Optional[int]:
        """Where the text to show next ends: after the last complete sentence, else (after hold_tokens pieces)
        after the last space; None: keep holding."""
        ends = [m.end() for m in SENTENCE_END.finditer(text, shown)]
        if ends and ends[-1] > shown:
            return ends[-1]
        if held_pieces < self.hold_tokens:
            return None
        space = max(text.rfind(" ", shown), text.rfind("\n", shown))
        return space + 1 if space >= shown else len(text)

    def _attempt(self, options: SamplingOptions, *, last: bool, greedy: bool) -> Iterator[str]:
        """One try: yields the checked text; sets report.outcome to 'retry' when its first sentence broke and
        another try may follow."""
        halt = _Either(self.cancel)
        stream = self.start(options, halt)
        pieces = iter(stream)
        text, shown, held = "", 0, 0
        unguarded = False
        finished = False
        while not finished:
            piece = next(pieces, None)
            if piece is None:
                finished = True
                end = len(text)
                if end == shown:
                    break
            else:
                text += piece
                if unguarded:
                    shown = len(text)
                    yield piece
                    continue
                held += 1
                end = self._release_point(text, shown, held)
                if end is None:
                    continue
            fired = tuple(self.check(text[:end]))
            if fired:
                self.report.rules = fired
                if shown == 0 and greedy:  # a new seed would give the same reply: show it, and say so
                    self.report.outcome, unguarded, end = "kept", True, len(text)
                else:
                    stopped = last or (self.cancel is not None and self.cancel.is_set())
                    self.report.outcome = "cut" if shown else ("withheld" if stopped else "retry")
                    if not shown:
                        self.broken.append((text[:end], fired))
                    halt.set()
                    for _ in pieces:  # the stream ends at its next token, with its stats complete
                        pass
                    break
            if end > shown:
                out, shown, held = text[shown:end], end, 0
                yield out
        self.stats = stream.stats


def describe(*, on: bool, retries: int, hold_tokens: int, scene: bool = False) -> str:
    """The guard's line in `personae prompt`: whether it is on, its rules, and how to turn it off (or on)."""
    if not on:
        return "[guard: off; replies are shown as sampled (-s chat.guard=true checks them)]"
    rules = [name for name in RULES if scene or name != "speaks_as_other"]
    return (f"[guard: on; each sentence of the reply is checked before it is shown ({', '.join(rules)}: "
            f"docs/guard.md); a first sentence that breaks is sampled again up to {retries} times with new seeds "
            f"(the last without the words that broke the others), "
            f"a later one cuts the reply; the first text waits for a sentence end or {hold_tokens} tokens; "
            f"-s chat.guard=false turns it off]")
