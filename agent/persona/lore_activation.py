"""Lorebook activation: which entries of which books fire for the recent chat, and why.

`activate(books, messages)` scans the newest messages for each entry's keys (case, whole words, regex,
secondary keys with their logic), adds constant entries, recurses into fired entries' text where the book
allows, and keeps the result within a token budget. The prompt builder places `Activation.block(...)`
around the card and `Activation.at_depth()` inside the history (agent/chat/context.py).
"""
from __future__ import annotations

import functools
import random
import re
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import regex  # (a dependency of transformers) searches with a timeout

from .lorebook import POSITIONS, ROLES, LoreEntry, Lorebook

REGEX_TIMEOUT = 0.05  # seconds one regex key may search one message; a card's catastrophic pattern must not stall a turn
_SLASHED = re.compile(r"/(.+)/([gimsuy]*)", re.DOTALL)  # SillyTavern's "/pattern/flags" keys


# --- key matching ---

@functools.lru_cache(maxsize=4096)
def _key_pattern(key: str, case_sensitive: bool, whole_words: bool, use_regex: bool) -> "re.Pattern | str":
    """The compiled matcher for one key, or the error text when it is a broken regex.

    A /pattern/flags key is a regex whose own flags (i, m, s) decide case; whole words never apply to regexes.
    """
    slashed = _SLASHED.fullmatch(key)
    try:
        # regex keys come from untrusted cards: the `regex` package can stop a search that backtracks too long
        if slashed:
            flags = {"i": regex.IGNORECASE, "m": regex.MULTILINE, "s": regex.DOTALL}
            return regex.compile(slashed[1], sum(flags.get(f, 0) for f in set(slashed[2])))
        case = 0 if case_sensitive else re.IGNORECASE
        if use_regex:
            return regex.compile(key, regex.IGNORECASE if not case_sensitive else 0)
        body = re.escape(key)
        if whole_words:  # a boundary only where the key has a word character at that edge
            left, right = re.match(r"\w", key[0]), re.match(r"\w", key[-1])
            body = ("(?<!\\w)" if left else "") + body + ("(?!\\w)" if right else "")
        return re.compile(body, case)
    except (re.error, regex.error) as e:
        return f"invalid regex {key!r}: {e}"


# --- activation ---

@dataclass(frozen=True)
class Fired:
    entry: LoreEntry
    book: str  # the book's name
    reason: str  # why it fired: "constant", "key 'dragon' in message 2 of 3 scanned", ...
    tokens: int  # count_tokens(entry.content)


@dataclass(frozen=True)
class Activation:
    fired: tuple[Fired, ...] = ()  # by insertion_order, then book order, then entry order
    dropped: tuple[tuple[Fired, str], ...] = ()  # matched but left out, with why
    notes: tuple[str, ...] = ()  # broken regex keys, lost probability rolls

    def block(self, position: str) -> str:
        """The contents of fired entries at "before_char" or "after_char", joined with newlines."""
        if position not in POSITIONS[:2]:
            raise ValueError(f"position must be before_char or after_char, got {position!r} (depth: at_depth())")
        return "\n".join(f.entry.content for f in self.fired if f.entry.position == position and f.entry.content)

    def at_depth(self) -> list[tuple[int, str, str]]:
        """[(depth, role, text)] for entries placed in the chat, one group per depth and role, by depth then role."""
        groups: dict[tuple[int, str], list[str]] = {}
        for f in self.fired:
            if f.entry.position == "depth" and f.entry.content:
                groups.setdefault((f.entry.depth, f.entry.role), []).append(f.entry.content)
        order = sorted(groups, key=lambda g: (g[0], ROLES.index(g[1])))
        return [(depth, role, "\n".join(groups[depth, role])) for depth, role in order]

    def explain(self) -> str:
        """One line per fired and dropped entry and per note, for `personae prompt` and /lore."""
        lines = [f"[lore fired] {f.entry.label} ({f.book}, {f.tokens} tokens): {f.reason}" for f in self.fired]
        lines += [f"[lore dropped] {f.entry.label} ({f.book}, {f.tokens} tokens): {f.reason}; {why}"
                  for f, why in self.dropped]
        lines += [f"[lore note] {note}" for note in self.notes]
        return "\n".join(lines) or "no lorebook entries fired"


@dataclass
class _Scan:
    """One activate() call's state: what fired, in which pass, and the notes so far."""
    books: Sequence[Lorebook]
    messages: Sequence[str]
    scan_depth: Optional[int]
    rng: random.Random
    fired: dict = field(default_factory=dict)  # (book index, entry index) -> reason, in firing order
    failed: set = field(default_factory=set)  # lost their probability roll; not rolled again
    notes: list = field(default_factory=list)

    def window(self, book: Lorebook, entry: LoreEntry) -> list[tuple[str, str]]:
        """[(label, text)] of the scanned messages, newest first."""
        depth = next(d for d in (entry.scan_depth, self.scan_depth, book.scan_depth) if d is not None)
        scanned = list(self.messages[-depth:]) if depth > 0 else []
        n = len(scanned)
        return [(f"message {i + 1} of {n} scanned", scanned[i]) for i in reversed(range(n))]

    def recursed(self) -> list[tuple[str, str]]:
        """[(label, text)] of fired entries' content that may fire others."""
        out = []
        for (b, e) in self.fired:
            book, entry = self.books[b], self.books[b].entries[e]
            if book.recursive_scanning and not entry.prevent_recursion:
                out.append((f"entry {entry.label!r}", entry.content))
        return out

    def find(self, book: Lorebook, entry: LoreEntry, key: str, texts: list[tuple[str, str]]) -> Optional[str]:
        """The label of the first text containing `key`, or None; a broken regex is noted once."""
        if not key:
            return None
        pattern = _key_pattern(key, bool(entry.case_sensitive), bool(entry.match_whole_words), entry.use_regex)
        if isinstance(pattern, str):
            note = f"{entry.label} [{book.name}]: {pattern}; the key never matches"
            if note not in self.notes:
                self.notes.append(note)
            return None
        for label, text in texts:
            try:
                found = pattern.search(text, timeout=REGEX_TIMEOUT) if isinstance(pattern, regex.Pattern) \
                    else pattern.search(text)
            except TimeoutError:
                note = f"{entry.label} [{book.name}]: regex key {key!r} took over {REGEX_TIMEOUT} s; it did not match"
                if note not in self.notes:
                    self.notes.append(note)
                return None
            if found:
                return label
        return None


def activate(books: Sequence[Lorebook], messages: Sequence[str], *,
             count_tokens: Callable[[str], int] = lambda s: len(s.split()), scan_depth: Optional[int] = None,
             token_budget: Optional[int] = None, max_recursion: int = 3,
             rng: Optional[random.Random] = None) -> Activation:
    """Entries of `books` fired by the chat `messages` (texts, oldest first, newest user message last).

    The newest `scan_depth` messages are scanned (an entry's own scan_depth wins, then the argument, then its
    book's). Books with recursive_scanning then scan fired entries' content, up to `max_recursion` passes,
    stopping when a pass fires nothing. The budget is the smallest of `token_budget` and the books' own.
    """
    scan = _Scan(books, messages, scan_depth, rng or random.Random())
    for depth in range(max_recursion + 1):
        if depth and not any(b.recursive_scanning for b in books):
            break
        recursed = scan.recursed() if depth else []
        new = {}
        for b, book in enumerate(books):
            for e, entry in enumerate(book.entries):
                if (b, e) in scan.fired or (b, e) in scan.failed or not entry.enabled:
                    continue
                reason = _trigger(scan, book, entry, depth, recursed)
                if reason is None:
                    continue
                if entry.probability < 100 and scan.rng.random() * 100 >= entry.probability:
                    scan.failed.add((b, e))
                    scan.notes.append(f"{entry.label} [{book.name}]: {reason}, but lost its {entry.probability}% roll")
                    continue
                new[b, e] = reason
        scan.fired.update(new)  # after the pass: what fires now is scanned by the next pass
        if not new:
            break
    found = [Fired(books[b].entries[e], books[b].name, reason, count_tokens(books[b].entries[e].content))
             for (b, e), reason in sorted(scan.fired.items())]  # book order, then entry order
    budgets = [x for x in [token_budget, *(book.token_budget for book in books)] if x is not None]
    drops = _budget(found, min(budgets) if budgets else None)
    by_order = sorted(range(len(found)), key=lambda i: found[i].entry.insertion_order)  # stable
    return Activation(fired=tuple(found[i] for i in by_order if i not in drops),
                      dropped=tuple((found[i], drops[i]) for i in by_order if i in drops), notes=tuple(scan.notes))


def _trigger(scan: _Scan, book: Lorebook, entry: LoreEntry, depth: int,
             recursed: list[tuple[str, str]]) -> Optional[str]:
    """Why `entry` fires in pass `depth` (0 = the chat, 1+ = recursion), or None."""
    if entry.constant:
        return "constant" if depth == 0 else None
    if depth == 0:
        if entry.delay_until_recursion:
            return None
        texts, tail = scan.window(book, entry), ""
    else:
        if not book.recursive_scanning:
            return None
        # delayed entries see the chat once recursion starts; the others already had their look at it
        texts = scan.window(book, entry) if entry.delay_until_recursion else []
        texts += [] if entry.exclude_recursion else recursed
        tail = f" (recursion, depth {depth})"
    if not texts:
        return None
    for key in entry.keys:
        where = scan.find(book, entry, key, texts)
        if where is not None:
            secondary = _secondary(scan, book, entry, texts)
            if secondary is None:
                return None
            return f"key {key!r} in {where}{tail}{secondary}"
    return None


def _secondary(scan: _Scan, book: Lorebook, entry: LoreEntry, texts: list[tuple[str, str]]) -> Optional[str]:
    """"" when secondary keys don't apply, "; <why>" when they pass, None when they fail."""
    keys = entry.secondary_keys
    if not (entry.selective and keys):
        return ""
    hits = [k for k in keys if scan.find(book, entry, k, texts) is not None]
    logic = entry.selective_logic
    if logic == "and_any" and hits:
        return f"; secondary key {hits[0]!r} (and_any)"
    if logic == "and_all" and len(hits) == len(keys):
        return "; all secondary keys (and_all)"
    if logic == "not_any" and not hits:
        return "; no secondary key (not_any)"
    if logic == "not_all" and len(hits) < len(keys):
        return f"; secondary key {next(k for k in keys if k not in hits)!r} absent (not_all)"
    return None


def _budget(fired: list[Fired], budget: Optional[int]) -> dict[int, str]:
    """{index in `fired`: why it is dropped}: constants are kept first, then higher priority, then higher
    insertion_order (as SillyTavern does), then book order, until one doesn't fit; it and the rest are dropped."""
    if budget is None or sum(f.tokens for f in fired) <= budget:
        return {}
    line = sorted(range(len(fired)), key=lambda i: (not fired[i].entry.constant, -fired[i].entry.priority,
                                                    -fired[i].entry.insertion_order))
    drops: dict[int, str] = {}
    used = 0
    for i in line:
        if not drops and used + fired[i].tokens <= budget:
            used += fired[i].tokens
        else:
            drops[i] = f"over the token budget ({budget}: {used} used, needs {fired[i].tokens})"
    return drops
