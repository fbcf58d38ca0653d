"""Per-turn lore and memory for a session: which lorebook entries fire, what is archived and recalled.

`SessionContext.build(history, kept_from)` returns the `TurnContext` that `fit_prompt` places around the
card and history, and remembers why (for `personae prompt`, /lore and /memory). Placement keeps the
cached persona prefix (system turn + greeting) intact: constant lore sits in the system turn and never
changes; key-activated lore and recalled turns sit right before the newest user message, so when they change
only the previous turn and the new one run again.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

from ..config import LoreConfig, MemoryConfig
from ..persona.lore_activation import Activation, activate
from ..persona.lorebook import Lorebook
from ..persona.macros import substitute
from .memory import MemoryItem, MemoryStore, Recalled, rank, turn_text
from .prompt import Message, TurnContext

log = logging.getLogger(__name__)


@dataclass
class ContextReport:
    """What the last `build` put in the prompt, and why."""
    lore: Optional[Activation] = None
    recalled: list[Recalled] = field(default_factory=list)
    notes: list[MemoryItem] = field(default_factory=list)
    summary: str = ""
    archived_now: int = 0  # turns archived while building this turn's prompt
    gave_way: tuple[str, ...] = ()  # parts left out because the card and newest turn needed the room


def _turns(history: Sequence[Message], start: int, stop: int) -> list[tuple[int, str, str]]:
    """(index of the user message, user text, reply) for whole turns in history[start:stop]."""
    out = []
    for i in range(start, min(stop, len(history))):
        if history[i].role == "user" and i + 1 < len(history) and history[i + 1].role == "assistant":
            out.append((i, history[i].content, history[i + 1].content))
    return out


def _block(lore: Activation, positions, constant: Optional[bool] = None) -> str:
    """Contents of the fired entries at `positions` (in insertion order), all or only (non-)constant ones."""
    positions = (positions,) if isinstance(positions, str) else positions
    return "\n".join(f.entry.content.strip() for f in lore.fired if f.entry.position in positions
                     and (constant is None or f.entry.constant == constant) and f.entry.content.strip())


class SessionContext:
    """Lore and memory of one chat session.

    books: the lorebooks in force (the card's own first); store=None turns memory off (stateless API sessions).
    embedder: returns the sentence embedder (texts -> (n, d) unit vectors), loaded on first use.
    summarize: (previous summary, new turn texts) -> updated summary, or None for no summaries.
    count_tokens: LM tokens of a text.
    """

    def __init__(self, *, session_id: int, char: str, user: str, books: Sequence[Lorebook], lore: LoreConfig,
                 memory: MemoryConfig, store: Optional[MemoryStore], embedder: Callable[[], Callable],
                 summarize: Optional[Callable[[str, list[str]], str]], count_tokens: Callable[[str], int]):
        self.session_id = session_id
        self.char, self.user = char, user
        self.books = list(books)
        self.lore, self.memory = lore, memory
        self.store = store if memory.enabled else None
        self._embedder = embedder
        self._embed = None
        self._embed_failed = False
        self.summarize = summarize if memory.summary else None
        self.count_tokens = count_tokens
        self.report = ContextReport()

    # --- embeddings -------------------------------------------------------------------------------
    def embed(self, texts: list[str]):
        """(n, d) numpy unit vectors, or None when no embedder can be loaded (memory then keeps only text)."""
        if self._embed is None and not self._embed_failed:
            try:
                self._embed = self._embedder()
            except Exception as e:  # noqa: BLE001 - a chat must go on without recall; say why once
                self._embed_failed = True
                log.warning("memory recall is off: %s", e)
        if self._embed is None:
            return None
        return self._embed(texts).numpy()

    # --- memory -----------------------------------------------------------------------------------
    def remember(self, text: str, position: int) -> int:
        if self.store is None:
            raise ValueError("memory is off for this session (memory.enabled is false, or the session is not saved)")
        if not text.strip():
            raise ValueError("nothing to remember: the note is empty")
        vectors = self.embed([text.strip()])
        return self.store.add_note(self.session_id, text.strip(), None if vectors is None else vectors[0], position)

    def forget(self, target: Optional[str] = None) -> str:
        """`None`: the newest note; a number: that memory; 'all': everything. Returns what happened, for the user."""
        if self.store is None:
            raise ValueError("memory is off for this session")
        if target is not None and target.strip().lower() == "all":
            n = self.store.forget_all(self.session_id)
            return f"forgot {n} memories and the summary"
        memory_id = None
        if target is not None and target.strip():
            try:
                memory_id = int(target.strip().lstrip("#"))
            except ValueError:
                raise ValueError(f"/forget takes a memory number from /memory, or 'all'; got {target!r}") from None
        gone = self.store.forget(self.session_id, memory_id)
        if not gone:
            return "no such memory" if memory_id is not None else "there is no note to forget"
        return f"forgot #{gone[0].id}: {gone[0].text[:80]}"

    def _archive(self, history: Sequence[Message], kept_from: int) -> int:
        """Archives whole turns that left the window (history[archived:kept_from]); updates the summary."""
        archived, summary = self.store.state(self.session_id)
        if kept_from <= archived:
            return 0
        turns = _turns(history, archived, kept_from)
        texts = [turn_text(self.user, self.char, u, r) for _, u, r in turns]
        vectors = self.embed(texts) if texts else None
        if self.summarize is not None and texts:
            summary = self.summarize(summary, texts)
        self.store.archive(self.session_id, [(i, t) for (i, _, _), t in zip(turns, texts)], vectors, kept_from, summary)
        return len(turns)

    def _notes_text(self) -> tuple[str, list[MemoryItem], str]:
        """The summary and /remember notes within memory.notes_tokens: notes first (newest first), the
        summary in what is left (its oldest words cut when it does not fit)."""
        _, summary = self.store.state(self.session_id)
        notes, used, kept = self.store.items(self.session_id, "note"), 0, []
        for note in reversed(notes):
            tokens = self.count_tokens(note.text)
            if used + tokens > self.memory.notes_tokens:
                continue
            kept.insert(0, note)
            used += tokens
        words = summary.split()
        while words and self.count_tokens(" ".join(words)) > self.memory.notes_tokens - used:
            words = words[max(1, len(words) // 8):]
        parts = [f"Summary of the chat so far: {' '.join(words)}"] if words else []
        if kept:
            parts.append(f"{self.user} asked {self.char} to remember:\n" + "\n".join(f"- {n.text}" for n in kept))
        return "\n\n".join(parts), kept, summary

    def _recall(self, query: str, kept_from: int) -> list[Recalled]:
        items, matrix = self.store.vectors(self.session_id, "turn")
        if not items or not query.strip():
            return []
        vectors = self.embed([query])
        if vectors is None:
            return []
        return rank(vectors[0], items, matrix, top_k=self.memory.top_k, min_score=self.memory.min_score,
                    budget_tokens=self.memory.budget_tokens, count_tokens=self.count_tokens, exclude_from=kept_from)

    # --- lore -------------------------------------------------------------------------------------
    def _activate(self, history: Sequence[Message]) -> Optional[Activation]:
        if not self.lore.enabled or not self.books:
            return None
        texts = [m.content for m in history if m.role in ("user", "assistant")]
        return activate(self.books, texts, count_tokens=self.count_tokens, scan_depth=self.lore.scan_depth or None,
                        token_budget=self.lore.token_budget, max_recursion=self.lore.max_recursion)

    # --- the turn ---------------------------------------------------------------------------------
    def build(self, history: Sequence[Message], kept_from: int, *, archive: bool = True,
              recall: bool = True) -> TurnContext:
        """The lore and memory for a prompt whose kept turns start at history[kept_from].

        archive: first store the turns before kept_from that are not yet archived (summary included);
        recall: add the archived turns most like the newest user message.
        """
        report = ContextReport()
        sub = lambda text: substitute(text, char=self.char, user=self.user)  # noqa: E731
        before = after = recent_lore = ""
        depth: list[tuple[int, str, str]] = []
        lore = self._activate(history)
        if lore is not None:
            report.lore = lore
            if self.lore.placement == "card":
                before, after = sub(_block(lore, "before_char")), sub(_block(lore, "after_char"))
            else:  # constant entries never change: they may sit in the cached system turn
                before = sub(_block(lore, "before_char", constant=True))
                after = sub(_block(lore, "after_char", constant=True))
                recent_lore = sub(_block(lore, ("before_char", "after_char"), constant=False))
            depth = [(d, role, sub(text)) for d, role, text in lore.at_depth()]
        notes = recalled_text = ""
        if self.store is not None:
            if archive:
                report.archived_now = self._archive(history, kept_from)
            notes, report.notes, report.summary = self._notes_text()
            newest = next((m.content for m in reversed(history) if m.role == "user"), "")
            report.recalled = self._recall(newest, kept_from) if recall else []
            if report.recalled:
                ordered = sorted(report.recalled, key=lambda r: r.item.position)
                recalled_text = "From earlier in this chat:\n" + "\n".join(r.item.text for r in ordered)
        recent = "\n\n".join(p for p in (recent_lore.strip(), recalled_text) if p)
        self.report = report
        return TurnContext(before_char=before, after_char=after, notes=notes, recent=recent, depth=tuple(depth))

    def snapshot(self) -> dict:
        """The memory as data (for the HTTP API): summary, notes, archived turns, last recall."""
        if self.store is None:
            raise ValueError("memory is off for this session")
        archived, summary = self.store.state(self.session_id)
        items = self.store.items(self.session_id)
        return {"summary": summary,
                "notes": [{"id": i.id, "text": i.text} for i in items if i.kind == "note"],
                "archived_turns": sum(1 for i in items if i.kind == "turn"),
                "archived_messages": archived,
                "recalled": [{"id": r.item.id, "score": round(r.score, 4), "text": r.item.text}
                             for r in self.report.recalled]}

    def describe(self) -> str:
        """/memory: the summary, the notes, how much is archived, and what the last turn recalled."""
        if self.store is None:
            return "memory is off for this session"
        archived, summary = self.store.state(self.session_id)
        items = self.store.items(self.session_id)
        notes = [i for i in items if i.kind == "note"]
        turns = [i for i in items if i.kind == "turn"]
        lines = [f"summary: {summary.strip() or '(none yet)'}",
                 f"notes ({len(notes)}):" + ("" if notes else " none; add one with /remember TEXT")]
        lines += [f"  #{n.id} {n.text}" for n in notes]
        lines.append(f"archived turns: {len(turns)} (history messages before #{archived} left the context window)")
        if self.report.recalled:
            lines.append("recalled for the last turn:")
            lines += [f"  #{r.item.id} (score {r.score:.2f}, {r.tokens} tokens) {r.item.text.splitlines()[0][:70]}"
                      for r in self.report.recalled]
        return "\n".join(lines)
