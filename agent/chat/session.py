"""One conversation with one persona: history, its KV cache, and the turn logic (reply, retry).

Front-ends get a `ChatSession` from `Agent.open_session` and iterate `reply(text)` for text pieces;
each finished turn is written to the history store in one transaction.
"""
from __future__ import annotations

import dataclasses
import threading
from typing import Iterator, Optional

from ..config import ChatConfig
from ..models.lm import LoadedLM
from ..persona.store import Persona
from .decoding import CachedDecoder, DecodeStats, ReplyStream, common_prefix_length
from .history import HistoryStore
from .prefix import PrefixCache
from .prompt import NO_CONTEXT, Message, Prompt, fit_prompt, render, stop_strings
from .sampling import SamplingOptions


def _eos_ids(tokenizer, model) -> tuple[int, ...]:
    ids = set()
    for value in (getattr(model.generation_config, "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif value:
            ids.update(value)
    for token in ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|endoftext|>"):
        tid = tokenizer.convert_tokens_to_ids(token)
        if isinstance(tid, int) and tid != tokenizer.unk_token_id:
            ids.add(tid)
    return tuple(sorted(ids))


def name_prefixes(name: str) -> tuple[str, ...]:
    """'Captain Mara Vell' -> ('Captain Mara Vell:', 'Mara Vell:', 'Vell:', 'Captain Mara:', 'Captain:', 'Mara:'), longest first."""
    words = name.split()
    spans = {" ".join(words[i:j]) for i in range(len(words)) for j in range(i + 1, len(words) + 1)}
    return tuple(sorted((f"{span}:" for span in spans), key=len, reverse=True))


def _strip_name_prefix(pieces: Iterator[str], name: str) -> Iterator[str]:
    """Drops leading whitespace and a leading 'Name:' (or part of the name) that small models write first."""
    prefixes = name_prefixes(name)
    pieces = iter(pieces)
    buffer = ""
    for piece in pieces:
        buffer = (buffer + piece).lstrip()
        if not buffer or any(p.startswith(buffer) for p in prefixes):
            continue  # could still become a prefix
        break
    for prefix in prefixes:
        if buffer.startswith(prefix):
            buffer = buffer[len(prefix):].lstrip()
            break
    if buffer:
        yield buffer
    yield from pieces


class ChatSession:
    def __init__(self, *, persona: Persona, session_id: int, lm: LoadedLM, store: HistoryStore,
                 chat: ChatConfig, user_name: str, decoder=None,
                 soft=None, with_card: bool = True, prefixes: Optional[PrefixCache] = None, context=None):
        self.persona = persona
        self.id = session_id
        self.lm = lm
        self.store = store
        self.chat = chat
        self.user_name = user_name
        self.soft = soft  # (K, d) persona soft prompt, or None
        self.with_card = with_card  # False: the soft prompt stands in for the card text
        self.prefixes = prefixes  # shared persona-prefix KV caches
        self.context = context  # SessionContext: lore and memory (agent/chat/context.py), or None
        # CachedDecoder, or any decoder with its interface from agent/chat/backends.py (LlamaCppDecoder)
        self.decoder = decoder or CachedDecoder(lm.model, soft=soft)
        self.messages: list[Message] = store.messages(session_id)
        self.kept_from = 0  # history index where the prompt's kept turns start (see fit_prompt)
        self.last_stats = DecodeStats()
        self._last_text = ""
        self.sampling = SamplingOptions(
            max_new_tokens=chat.max_new_tokens, temperature=chat.temperature, top_p=chat.top_p,
            top_k=chat.top_k, repetition_penalty=chat.repetition_penalty, seed=chat.seed,
            eos_token_ids=_eos_ids(lm.tokenizer, lm.model))

    @property
    def greeting(self) -> str:
        return self.messages[0].content if self.messages and self.messages[0].role == "assistant" else ""

    @property
    def budget(self) -> int:
        """Prompt tokens allowed: the context minus room for the reply."""
        return min(self.chat.context_tokens, self.lm.context_length) - self.chat.max_new_tokens

    def _fit(self, history: list[Message], context) -> Prompt:
        """fit_prompt; when lore and memory leave no room for the card and the newest turn, they give way
        (per-turn parts first, then the notes, then all of it) rather than the turn failing."""
        lesser = [context, dataclasses.replace(context, recent="", depth=()),
                  dataclasses.replace(context, recent="", depth=(), notes=""), NO_CONTEXT]
        error = None
        for i, option in enumerate(lesser):
            if i and option == lesser[i - 1]:
                continue  # failed already
            try:
                prompt = fit_prompt(self.lm.tokenizer, self.persona.card, history, self.user_name,
                                    budget=self.budget, kept_from=self.kept_from, with_card=self.with_card,
                                    soft_tokens=0 if self.soft is None else self.soft.shape[0], context=option)
            except ValueError as e:
                error = error or e
                continue
            if i and self.context is not None:
                self.context.report.gave_way = ("recalled turns and key-activated lore", "and the memory notes",
                                                "and the constant lore")[:i]
            self.kept_from = prompt.kept_from
            return prompt
        raise error

    def prompt_for(self, history: list[Message]) -> Prompt:
        """The next prompt. With lore and memory: a first fit without recalled turns finds the window, turns
        that left it are archived, then the prompt is fitted again with what the new message recalls."""
        if self.context is None:
            return self._fit(history, NO_CONTEXT)
        self._fit(history, self.context.build(history, self.kept_from, archive=False, recall=False))
        return self._fit(history, self.context.build(history, self.kept_from))

    def _prefix_ids(self, prompt: Prompt) -> list[int]:
        """The persona's fixed prefix of `prompt`: the system turn and the greeting."""
        fixed = prompt.messages[:2] if len(prompt.messages) > 1 and prompt.messages[1]["role"] == "assistant" \
            else prompt.messages[:1]
        _, ids = render(self.lm.tokenizer, fixed, 0 if self.soft is None else self.soft.shape[0],
                        add_generation_prompt=False)
        return prompt.ids[:common_prefix_length(ids, prompt.ids)]

    def _generate(self, history: list[Message], cancel: Optional[threading.Event]) -> Iterator[str]:
        prompt = self.prompt_for(history)
        shared = None
        if self.prefixes is not None and not self.decoder.ids and self.decoder.reuse_cache:
            shared = self._prefix_ids(prompt)
            if self.prefixes.seed(self.decoder, self.persona.slug, shared):
                shared = None  # adopted: nothing to remember
        stream = ReplyStream(self.decoder, self.lm.tokenizer, prompt.ids, self.sampling,
                             stop_strings(self.persona.card, self.user_name), cancel)
        text = ""
        for piece in _strip_name_prefix(iter(stream), self.persona.card.name):
            text += piece
            yield piece
        self.last_stats = stream.stats
        self._last_text = text.strip()
        if shared:
            self.prefixes.remember(self.decoder, self.persona.slug, shared)

    def reply(self, text: str, *, cancel: Optional[threading.Event] = None) -> Iterator[str]:
        """Streams the persona's reply to `text`; the turn is saved when the stream ends (also when cancelled)."""
        if not text.strip():
            raise ValueError("the message is empty")
        history = self.messages + [Message("user", text)]
        yield from self._generate(history, cancel)
        self.store.append_turn(self.id, text, self._last_text)
        self.messages = history + [Message("assistant", self._last_text)]

    @property
    def can_retry(self) -> bool:
        """True when the conversation ends with a user message and its reply."""
        return len(self.messages) >= 2 and self.messages[-1].role == "assistant" and self.messages[-2].role == "user"

    def retry(self, *, cancel: Optional[threading.Event] = None) -> Iterator[str]:
        """Regenerates the last reply and replaces it."""
        if not self.can_retry:
            raise ValueError("there is no reply to retry yet")
        history = self.messages[:-1]
        yield from self._generate(history, cancel)
        self.store.replace_last_reply(self.id, self._last_text)
        self.messages = history + [Message("assistant", self._last_text)]

    # --- lore and memory (agent/chat/context.py) --------------------------------------------------
    def _needs_context(self):
        if self.context is None:
            raise ValueError("lore and memory are off for this session")
        return self.context

    def remember(self, text: str) -> int:
        """/remember: a note kept for the rest of the session; returns its memory number."""
        return self._needs_context().remember(text, len(self.messages))

    def forget(self, target: Optional[str] = None) -> str:
        """/forget: the newest note, memory number `target`, or 'all'."""
        return self._needs_context().forget(target)

    def memory_report(self) -> str:
        """/memory: summary, notes, archived turns, what the last turn recalled."""
        return self._needs_context().describe()

    def memory_snapshot(self) -> dict:
        """The memory as data: summary, notes [{id, text}], archived turns, the last turn's recall."""
        return self._needs_context().snapshot()

    def lore_report(self) -> str:
        """/lore: the lorebooks in force and which entries fired for the last prompt, and why."""
        context = self._needs_context()
        names = ", ".join(b.name or b.source for b in context.books) or "none"
        lore = context.report.lore
        gave_way = context.report.gave_way
        return (f"lorebooks: {names}\n" + (lore.explain() if lore is not None else "no entries scanned yet")
                + (f"\nleft out to fit the context: {' '.join(gave_way)}" if gave_way else ""))
