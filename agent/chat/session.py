"""One conversation with one persona: history, its KV cache, and the turn logic (reply, retry, fork).

Front-ends get a `ChatSession` from `Agent.open_session` and iterate `reply(text)` for text pieces;
each finished turn is written to the history store in one transaction. They change a session only through
its methods (`replace_history`, `fork`, `correct_last_reply`, per-reply `sampling`), never its fields.
"""
from __future__ import annotations

import dataclasses
import threading
from typing import Iterator, Optional, Sequence

from ..config import ChatConfig
from ..persona.card import CharacterCard
from ..persona.store import Persona
from .guard import OFF, CharacterCheck, GuardedReply, GuardReport
from .stream import DecodeStats, common_prefix_length
from .history import HistoryStore, UnsavedHistory
from .prefix import PrefixCache
from .prompt import NO_CONTEXT, Message, Prompt, fit_prompt, render, stop_strings
from .sampling import SamplingOptions
from .template import with_turn_markers


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
    """backend: what the session decodes with (agent/chat/backends.py: tokenizer, context_length,
    stop_token_ids, new_decoder); store: the history store (UnsavedHistory for stateless API requests).

    persona=None: the bare LM (the server's plain model): no card, greeting, lore or name stops of personae's,
    the conversation alone is the prompt, rendered through the model's chat template."""

    def __init__(self, *, persona: Optional[Persona], session_id: int, backend, store: HistoryStore,
                 chat: ChatConfig, user_name: str, decoder=None,
                 soft=None, with_card: bool = True, prefixes: Optional[PrefixCache] = None, context=None, kv=None):
        self.persona = persona
        # the card personae puts in the prompt; None: the conversation alone (see leave_prompt_to_client)
        self.card: Optional[CharacterCard] = None if persona is None else persona.card
        self.id = session_id
        self.backend = backend
        self.tokenizer = backend.tokenizer
        self.store = store
        self.chat = chat
        self.user_name = user_name
        self.soft = soft  # (K, d) persona soft prompt, or None
        self.with_card = with_card  # False: the soft prompt stands in for the card text
        self.prefixes = prefixes  # shared persona-prefix KV caches
        self.kv = kv  # PersonaKV (agent/embedding/persona_kv.py): the system turn as the persona's KV cells, or None
        self.context = context  # SessionContext: lore and memory (agent/chat/context.py), or None
        self.decoder = decoder or backend.new_decoder(soft)  # CachedDecoder's interface (agent/chat/backends.py)
        self._keep_cache()
        self.messages: list[Message] = store.messages(session_id)
        self.kept_from = 0  # history index where the prompt's kept turns start (see fit_prompt)
        self.last_stats = DecodeStats()
        self.last_guard: GuardReport = OFF  # what the guard did to the newest reply (live while it streams)
        self._last_text = ""
        self.last_added = ""  # the text the last `continue_reply` added
        self.sampling = SamplingOptions(
            max_new_tokens=chat.max_new_tokens, temperature=chat.temperature, top_p=chat.top_p,
            top_k=chat.top_k, min_p=chat.min_p, repetition_penalty=chat.repetition_penalty, seed=chat.seed,
            eos_token_ids=backend.stop_token_ids)  # the defaults; `reply(sampling=)` overrides them per turn
        self.stops = with_turn_markers(stop_strings(persona.card, user_name) if persona else [], self.tokenizer)

    def _keep_cache(self) -> None:
        """A saved session names its KV cache (llama.cpp), so an idle one is spilled rather than dropped and a
        restart picks it up; the soft prompt is part of the name (other vectors: other cells)."""
        if not self.saved or not hasattr(self.decoder, "keep_as"):
            return
        soft = ""
        if self.soft is not None:
            import hashlib

            rows = self.soft.detach().float().cpu().numpy() if hasattr(self.soft, "detach") else self.soft
            soft = ":" + hashlib.sha256(rows.tobytes()).hexdigest()[:16]
        self.decoder.keep_as(f"session:{self.id}{soft}")

    @property
    def key(self) -> str:
        """Whose fixed prefix this session shares (agent/chat/prefix.py): the persona's slug, '' for the bare LM."""
        return "" if self.persona is None else self.persona.slug

    @property
    def adds_card(self) -> bool:
        """Whether personae puts the persona's card (and its lore and memory) into the prompt."""
        return self.card is not None

    def leave_prompt_to_client(self, client_owns: bool) -> None:
        """client_owns=True: the client's messages already carry the character (its own copy of the card, as
        SillyTavern sends it), so from the next turn on personae adds no card, greeting, lore or memory of its
        own; False: it adds them again. The bare LM's sessions never add any."""
        card = None if client_owns or self.persona is None else self.persona.card
        if card != self.card:
            self.kept_from = 0  # another prompt: the old drop point means nothing in it
        self.card = card

    @property
    def greeting(self) -> str:
        return self.messages[0].content if self.messages and self.messages[0].role == "assistant" else ""

    @property
    def saved(self) -> bool:
        """Whether turns are written to the history database (False: a stateless API session)."""
        return not isinstance(self.store, UnsavedHistory)

    def budget(self, max_new_tokens: Optional[int] = None) -> int:
        """Prompt tokens allowed: the context minus room for a reply of max_new_tokens (default chat's)."""
        reply = self.chat.max_new_tokens if max_new_tokens is None else max_new_tokens
        saved = self.kv.saved_tokens(self.card, self.user_name) if self._cells else 0  # fitted before the swap
        return min(self.chat.context_tokens, self.backend.context_length) - reply + saved

    @property
    def _cells(self) -> bool:
        """Whether this turn's system turn goes in as the persona's KV cells (kv mode, and personae adds the card)."""
        return self.kv is not None and self.card is not None

    def options(self, **changes) -> SamplingOptions:
        """This session's sampling with `changes` (max_new_tokens, temperature, top_p, seed, ...) that are not None."""
        return dataclasses.replace(self.sampling, **{k: v for k, v in changes.items() if v is not None})

    def _fit(self, history: list[Message], context, budget: int, cancel: Optional[threading.Event] = None) -> Prompt:
        """fit_prompt; when lore and memory leave no room for the card and the newest turn, they give way
        (per-turn parts first, then the notes, then all of it) rather than the turn failing. Raises
        Cancelled (agent/chat/prompt.py) once `cancel` is set."""
        lesser = [context, dataclasses.replace(context, recent="", depth=()),
                  dataclasses.replace(context, recent="", depth=(), notes=""), NO_CONTEXT]
        error = None
        for i, option in enumerate(lesser):
            if i and option == lesser[i - 1]:
                continue  # failed already
            try:
                prompt = fit_prompt(self.tokenizer, self.card, history, self.user_name,
                                    budget=budget, kept_from=self.kept_from, with_card=self.with_card,
                                    soft_tokens=0 if self.soft is None else self.soft.shape[0], context=option,
                                    cancel=cancel)
            except ValueError as e:
                error = error or e
                continue
            if i and self.context is not None:
                self.context.report.gave_way = ("recalled turns and key-activated lore", "and the memory notes",
                                                "and the constant lore")[:i]
            self.kept_from = prompt.kept_from
            return prompt
        raise error

    def prompt_for(self, history: list[Message], *, max_new_tokens: Optional[int] = None,
                   cancel: Optional[threading.Event] = None) -> Prompt:
        """The next prompt, leaving room for max_new_tokens. With lore and memory: a first fit without recalled
        turns finds the window, turns that left it are archived, then the prompt is fitted again with what the
        new message recalls. Raises Cancelled once `cancel` is set."""
        budget = self.budget(max_new_tokens)
        if self.context is None or not self.adds_card:
            return self._fit(history, NO_CONTEXT, budget, cancel)
        self._fit(history, self.context.build(history, self.kept_from, archive=False, recall=False), budget, cancel)
        return self._fit(history, self.context.build(history, self.kept_from), budget, cancel)

    def preview(self, history: list[Message], *, prefix: str = "") -> Prompt:
        """The prompt `prompt_for` would build after `history`, with nothing archived (for `personae prompt`)."""
        budget = self.budget()
        if self.context is None:
            return self.with_reply_prefix(self._as_cells(self._fit(history, NO_CONTEXT, budget))[0], prefix)
        self._fit(history, self.context.build(history, self.kept_from, archive=False, recall=False), budget)
        prompt = self._fit(history, self.context.build(history, self.kept_from, archive=False), budget)
        return self.with_reply_prefix(self._as_cells(prompt)[0], prefix)

    def _as_cells(self, prompt: Prompt):
        """(prompt, plan): kv mode swaps the system turn's ids for the persona's cells; else (prompt, None)."""
        if not self._cells:
            return prompt, None
        return self.kv.apply(prompt, self.card.name)

    def _prefix_ids(self, prompt: Prompt) -> list[int]:
        """The persona's fixed prefix of `prompt`: the system turn and the greeting."""
        fixed = prompt.messages[:2] if len(prompt.messages) > 1 and prompt.messages[1]["role"] == "assistant" \
            else prompt.messages[:1]
        _, ids = render(self.tokenizer, fixed, 0 if self.soft is None else self.soft.shape[0],
                        add_generation_prompt=False)
        return prompt.ids[:common_prefix_length(ids, prompt.ids)]

    def with_reply_prefix(self, prompt: Prompt, prefix: str) -> Prompt:
        """`prompt` with the reply opened by `prefix` (a scene speaker's 'Name:'), which the model continues."""
        if not prefix:
            return prompt
        ids = list(self.tokenizer(prefix, add_special_tokens=False)["input_ids"])
        return dataclasses.replace(prompt, text=prompt.text + prefix, ids=prompt.ids + ids)

    @property
    def guarded(self) -> bool:
        """Whether replies pass the guard (agent/chat/guard.py): chat.guard is on and there is a character to keep."""
        return self.chat.guard and self.persona is not None

    def _guard_check(self, history: list[Message], prompt: Prompt, others: Sequence[str]) -> CharacterCheck:
        turn = history[-1].content if history and history[-1].role == "user" else ""
        system = prompt.messages[0]["content"] if prompt.messages and prompt.messages[0]["role"] == "system" else ""
        return CharacterCheck(card=self.persona.card, user=self.user_name, user_turn=turn, system_text=system,
                              others=tuple(others))

    def _stream(self, history: list[Message], prompt: Prompt, sampling: SamplingOptions, stops: list[str],
                cancel: Optional[threading.Event], others: Sequence[str]):
        """The reply stream: through the guard when `guarded` (`last_guard` is its report, live while it runs)."""
        def start(options: SamplingOptions, halt: Optional[threading.Event]):
            return self.backend.stream(self.decoder, prompt, options, stops, halt)

        if not self.guarded:
            self.last_guard = OFF
            return start(sampling, cancel)
        guarded = GuardedReply(start, sampling, self._guard_check(history, prompt, others),
                               retries=self.chat.guard_retries, hold_tokens=self.chat.guard_tokens, cancel=cancel,
                               tokenizer=self.tokenizer)
        self.last_guard = guarded.report
        return guarded

    def _start(self, history: list[Message], cancel: Optional[threading.Event], sampling: SamplingOptions,
               prefix: str = "", stops: Sequence[str] = (), others: Sequence[str] = (), prefix_tokens: int = 0):
        """(the reply stream after `history`, opened by `prefix`; the shared prefix ids to remember once it ends,
        or None). prefix_tokens: room the prompt leaves for `prefix` besides the reply."""
        full = self.prompt_for(history, max_new_tokens=sampling.max_new_tokens + prefix_tokens, cancel=cancel)
        prompt, plan = self._as_cells(full)
        prompt = self.with_reply_prefix(prompt, prefix)
        shared = None
        if plan is not None:  # the persona's cells (shared by its sessions) stand for the system turn
            self.kv.start(self.decoder, plan)
        elif self.prefixes is not None and not self.decoder.ids and self.decoder.reuse_cache:
            shared = self._prefix_ids(prompt)
            if self.prefixes.seed(self.decoder, self.key, shared):
                shared = None  # adopted: nothing to remember
        return self._stream(history, prompt, sampling, [*self.stops, *stops], cancel, others), shared

    def _finish(self, stream, text: str, shared: Optional[list[int]]) -> None:
        self.last_stats = stream.stats
        self._last_text = text.strip()
        if shared:
            self.prefixes.remember(self.decoder, self.key, shared)

    def _generate(self, history: list[Message], cancel: Optional[threading.Event],
                  sampling: Optional[SamplingOptions], prefix: str = "", stops: Sequence[str] = (),
                  others: Sequence[str] = ()) -> Iterator[str]:
        stream, shared = self._start(history, cancel, sampling or self.sampling, prefix, stops, others)
        text = ""
        name = "" if self.persona is None else self.persona.card.name  # "": only leading whitespace goes
        for piece in _strip_name_prefix(iter(stream), name):
            text += piece
            yield piece
        self._finish(stream, text, shared)

    def reply(self, text: str, *, cancel: Optional[threading.Event] = None,
              sampling: Optional[SamplingOptions] = None) -> Iterator[str]:
        """Streams the persona's reply to `text`; the turn is saved when the stream ends (also when cancelled).

        sampling: this reply's options (see `options`); default the session's. A `cancel` set before the reply
        starts, while its prompt is fitted, raises Cancelled (agent/chat/prompt.py) and saves nothing.
        """
        if not text.strip():
            raise ValueError("the message is empty")
        history = self.messages + [Message("user", text)]
        yield from self._generate(history, cancel, sampling)
        self.store.append_turn(self.id, text, self._last_text, guard=self.last_guard.record())
        self.messages = history + [Message("assistant", self._last_text)]

    def speak(self, view: list[Message], *, prefix: str, stops: Sequence[str] = (), others: Sequence[str] = (),
              cancel: Optional[threading.Event] = None, sampling: Optional[SamplingOptions] = None) -> Iterator[str]:
        """Streams the persona's next line after `view`, a group scene seen from its side (agent/chat/scene.py):
        the reply opens with `prefix` (its name), is cut at `stops` (the other participants' names starting a
        line), the guard drops lines spoken as one of `others` (the other participants' names), and nothing
        is stored here: the scene saves the line. `last_text` is the line once it ends."""
        self.replace_history(view)
        yield from self._generate(view, cancel, sampling, prefix=prefix, stops=stops, others=others)
        self.messages = view + [Message("assistant", f"{prefix} {self._last_text}".strip())]

    @property
    def last_text(self) -> str:
        """The text of the last reply written, stripped (as stored)."""
        return self._last_text

    @property
    def can_retry(self) -> bool:
        """True when the conversation ends with a user message and its reply."""
        return len(self.messages) >= 2 and self.messages[-1].role == "assistant" and self.messages[-2].role == "user"

    def retry(self, *, cancel: Optional[threading.Event] = None,
              sampling: Optional[SamplingOptions] = None) -> Iterator[str]:
        """Regenerates the last reply and shows the new one; the store keeps both as alternatives (swipes)."""
        if not self.can_retry:
            raise ValueError("there is no reply to retry yet")
        history = self.messages[:-1]
        yield from self._generate(history, cancel, sampling)
        self.store.add_swipe(self.id, self._last_text, guard=self.last_guard.record())
        self.messages = history + [Message("assistant", self._last_text)]

    def continue_reply(self, *, cancel: Optional[threading.Event] = None,
                       sampling: Optional[SamplingOptions] = None) -> Iterator[str]:
        """Streams more of the last reply: the LM reads the prompt with that reply's turn left open (no
        end-of-turn token after it) and writes on, through the guard like any reply. The stored reply becomes
        the whole (updated, not duplicated); `last_text` is the whole, `last_added` the part written now.

        Pieces come as written, leading space included, so they join the reply's text as they are.
        """
        if not self.can_retry:
            raise ValueError("there is no reply to continue yet")
        written = self.messages[-1].content
        sampling = sampling or self.sampling
        room = len(self.tokenizer(written, add_special_tokens=False)["input_ids"])
        stream, shared = self._start(self.messages[:-1], cancel, sampling, written, prefix_tokens=room)
        added = ""
        for piece in stream:
            added += piece
            yield piece
        self._finish(stream, written + added, shared)
        self.last_added = added.rstrip()
        self.correct_last_reply(self._last_text, guard=self.last_guard.record())

    def correct_last_reply(self, text: str, *, guard: Optional[str] = None) -> None:
        """The last reply becomes `text`, in memory and in the store (a client's stop string cut it shorter);
        guard: the guard's record of a regenerated reply (None keeps the stored one)."""
        if not self.messages or self.messages[-1].role != "assistant":
            raise ValueError("the conversation does not end with a reply")
        self.store.replace_last_reply(self.id, text, guard=guard)
        self.messages = self.messages[:-1] + [Message("assistant", text)]

    @property
    def swipes(self) -> tuple[list[str], int]:
        """The stored alternatives of the last reply and the position of the one shown (([], 0): none)."""
        return self.store.swipes(self.id) if self.saved else ([], 0)

    def choose_swipe(self, index: int) -> str:
        """The last reply becomes its stored alternative number `index` (IndexError: no such one); returns it."""
        text = self.store.choose_swipe(self.id, index)
        self.messages = self.messages[:-1] + [Message("assistant", text)]
        return text

    def drop_swipe(self) -> None:
        """The alternative shown goes (an API client received none of it); the one before it is shown again."""
        self.store.drop_swipe(self.id)
        self.messages = self.store.messages(self.id) if self.saved else self.messages[:-1]

    def edit_last(self, text: str) -> None:
        """The newest message (the user's or a reply) becomes `text`, in memory and in the store."""
        if not self.messages:
            raise ValueError("the conversation has no message to edit")
        if not text.strip():
            raise ValueError("the message is empty")
        self.store.edit_last(self.id, text)
        self.messages = self.messages[:-1] + [Message(self.messages[-1].role, text)]

    def delete_last(self) -> Message:
        """The newest message goes, in memory and in the store (a deleted reply leaves its message unanswered;
        the server answers it with the client's next request, agent/server/completion.py). Returns it."""
        if not self.messages:
            raise ValueError("the conversation has no message to delete")
        self.store.remove_last(self.id, 1)
        return self.messages.pop()

    def drop_last_turn(self) -> None:
        """The last message and its reply go, in memory and in the store (an API client went away having
        received none of the reply)."""
        if not self.can_retry:
            raise ValueError("the conversation does not end with a message and its reply")
        self.store.remove_last(self.id, 2)
        self.messages = self.messages[:-2]

    def replace_history(self, messages: list[Message]) -> None:
        """The conversation so far is `messages` (an API client resent or edited it); nothing is stored.

        When it does not extend the history the last prompt was built from, that prompt's drop point is
        forgotten. The KV cache keeps whatever token prefix the new prompt shares with it.
        """
        if list(messages[:len(self.messages)]) != self.messages:
            self.kept_from = 0
        self.messages = list(messages)

    def fork(self, greeting: str, turns: list[tuple[str, str]]) -> int:
        """Stores `greeting` and (user, reply) `turns` as a new conversation of this persona and channel, and
        continues there (memory follows it); the old one stays as it was. Returns the new session id."""
        new_id = self.store.fork_session(self.id, greeting, turns)
        self.id = new_id
        self._keep_cache()
        if self.context is not None:
            self.context.session_id = new_id
        self.messages = self.store.messages(new_id)
        self.kept_from = 0
        return new_id

    @property
    def cached_tokens(self) -> int:
        """Tokens held in this session's KV cache."""
        return len(self.decoder.ids)

    def close(self) -> None:
        """Moves the KV cache out of memory (llama.cpp: spilled, to disk for a saved session; else freed); the
        history stays in the store and the session still works."""
        getattr(self.decoder, "close", self.decoder.reset)()

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
