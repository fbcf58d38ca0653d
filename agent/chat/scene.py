"""Group scenes: several personas and the humans in one conversation with one shared history.

A `Scene` holds a `ChatSession` per persona (its own card, lore, memory, soft prompt and KV cache), the
shared lines (Messages naming their speakers, saved one transaction per reply), and picks who speaks next
with a strategy from `STRATEGIES`: pure functions of the members, the lines and a seeded RNG. Each
speaker's prompt is the scene seen from its side (`Scene.view`): its own lines as its replies, everyone
else's as named messages, its name opening the reply, and other participants' names starting a line as
stop strings. Front-ends iterate `Scene.turn(text)` for `SceneReply`s, each an iterator of text pieces.
"""
from __future__ import annotations

import random
import re
import threading
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Sequence

from ..config import SCENE_STRATEGIES, SceneConfig
from ..persona.card import CharacterCard
from ..persona.macros import substitute
from .prompt import Message, greeting
from .session import ChatSession, name_prefixes
from .stream import DecodeStats


@dataclass(frozen=True)
class Member:
    """What the strategies know of a persona in the scene."""
    slug: str
    name: str  # the card's name
    talkativeness: float  # 0..1: how readily it speaks when nobody named anyone


def talkativeness(card: CharacterCard, default: float = 0.5) -> float:
    """The card's `extensions.talkativeness` (SillyTavern writes it as a string, "0.5"), clamped to 0..1."""
    try:
        value = float(card.extensions.get("talkativeness", default))
    except (TypeError, ValueError):
        return default
    return min(1.0, max(0.0, value)) if value == value else default  # NaN: the default


def mentioned(text: str, members: Sequence[Member]) -> list[str]:
    """Slugs of the members `text` names or addresses (a word of the card name, or the slug, as a whole word),
    in order of first mention. Words that two members' names share ("Captain") name neither."""
    words: dict[str, list[str]] = {}
    for m in members:
        for word in {w.lower() for w in re.findall(r"\w+", m.name) if len(w) >= 3} | {m.slug.lower()}:
            words.setdefault(word, []).append(m.slug)
    first: dict[str, int] = {}
    for word, slugs in words.items():
        if len(slugs) != 1:
            continue
        found = re.search(rf"(?<!\w){re.escape(word)}(?!\w)", text, re.IGNORECASE)
        if found and found.start() < first.get(slugs[0], len(text) + 1):
            first[slugs[0]] = found.start()
    return sorted(first, key=first.get)


def _not_last(members: Sequence[Member], lines: Sequence[Message]) -> list[Member]:
    """A persona never answers itself: the members less the speaker of the last line."""
    last = lines[-1] if lines else None
    return [m for m in members if last is None or last.role != "assistant" or m.slug != last.name]


def natural(members: Sequence[Member], lines: Sequence[Message], rng: random.Random) -> Optional[str]:
    """SillyTavern's natural order: a member the last line names answers; else each member, in a shuffled
    order, speaks with its talkativeness as the chance; after a human's line someone always answers (a
    talkativeness-weighted draw when every roll failed); after a persona's, nobody may (the human's turn)."""
    candidates = _not_last(members, lines)
    if not candidates:
        return None
    last = lines[-1] if lines else None
    named = mentioned(last.content, candidates) if last is not None else []
    if named:
        return named[0]
    order = list(candidates)
    rng.shuffle(order)
    for m in order:
        if rng.random() < m.talkativeness:
            return m.slug
    if last is not None and last.role == "assistant":
        return None
    weights = [m.talkativeness for m in candidates]
    return rng.choices(candidates, weights=weights if sum(weights) > 0 else None)[0].slug


def list_order(members: Sequence[Member], lines: Sequence[Message], rng: random.Random) -> Optional[str]:
    """Members take turns in list order: the one after the last persona that spoke; after a persona's line
    the round goes on until every member has spoken since the human's last line."""
    if not members:
        return None
    slugs = [m.slug for m in members]
    last_persona = next((line.name for line in reversed(lines) if line.role == "assistant"), None)
    start = slugs.index(last_persona) + 1 if last_persona in slugs else 0
    chosen = slugs[start % len(slugs)]
    if lines and lines[-1].role == "assistant":
        human = max((i for i, line in enumerate(lines) if line.role == "user"), default=-1)
        if chosen == lines[-1].name or chosen in {line.name for line in lines[human + 1:]}:
            return None
    return chosen


def manual(members: Sequence[Member], lines: Sequence[Message], rng: random.Random) -> Optional[str]:
    """Nobody speaks until asked (`/next NAME`)."""
    return None


STRATEGIES: dict[str, Callable[[Sequence[Member], Sequence[Message], random.Random], Optional[str]]] = {
    "natural": natural, "list": list_order, "manual": manual}
assert set(STRATEGIES) == set(SCENE_STRATEGIES), "agent/config.py's SCENE_STRATEGIES must list these names"


def get_strategy(name: str):
    if name not in STRATEGIES:
        raise ValueError(f"unknown scene strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    return STRATEGIES[name]


def opening_lines(cards: Sequence[tuple[str, CharacterCard]], user: str) -> list[Message]:
    """The lines that open a scene: each member's first `group_only_greetings` (Card V3), in order; when
    no member has one, the first member's `first_mes`."""
    lines = [Message("assistant", substitute(card.group_only_greetings[0], char=card.name, user=user), slug)
             for slug, card in cards if card.group_only_greetings]
    if not lines and cards and cards[0][1].first_mes.strip():
        lines = [Message("assistant", greeting(cards[0][1], user), cards[0][0])]
    return lines


SCENE_NOTE = ("This is a group chat between {names}. Write only {char}'s next message, as {char}; "
              "never write the lines of anyone else.")


class SceneReply:
    """One persona's line in a scene: iterate for its text pieces; it is saved when the stream ends (also
    when cancelled). `speaker` is the persona's ChatSession, `switched` whether another persona spoke last."""

    def __init__(self, scene: "Scene", slug: str, pending: list[Message], cancel, sampling):
        self.scene, self.slug, self.speaker = scene, slug, scene.members[slug]
        self.switched = scene.last_persona() not in (None, slug)
        self._pending, self._cancel, self._sampling = pending, cancel, sampling
        self.text, self.done = "", False
        self._stats: Optional[DecodeStats] = None  # this line's, kept: the speaker's last_stats move on with its next

    @property
    def name(self) -> str:
        return self.speaker.persona.name

    @property
    def stats(self) -> DecodeStats:
        return self._stats if self._stats is not None else self.speaker.last_stats

    def __iter__(self) -> Iterator[str]:
        if self.done:
            return
        lines = self.scene.lines + self._pending
        for piece in self.speaker.speak(self.scene.view(self.slug, lines), prefix=f"{self.name}:",
                                        stops=self.scene.stops_for(self.slug, lines), cancel=self._cancel,
                                        sampling=self._sampling):
            yield piece
        self.text, self._stats = self.speaker.last_text, self.speaker.last_stats
        self.scene.save(self._pending + ([Message("assistant", self.text, self.slug)] if self.text else []))
        self.done = True

    def finish(self) -> None:
        """Writes the line if the caller did not read it."""
        for _ in self:
            pass


class Scene:
    """A group conversation. members: slug -> ChatSession (speaking order); lines: the shared history;
    store: HistoryStore (UnsavedHistory for stateless API requests); join: slug or name -> the ChatSession of
    a persona joining (it records the membership); names: slug -> card name of everyone who ever spoke."""

    def __init__(self, *, scene_id: int, members: dict[str, ChatSession], lines: list[Message], store,
                 config: SceneConfig, user_name: str, join: Callable[[str], ChatSession],
                 names: Optional[dict[str, str]] = None):
        self.id = scene_id
        self.members = dict(members)
        self.lines = list(lines)
        self.store = store
        self.config = config
        self.user_name = user_name
        self._join = join
        self.names = {**(names or {}), **{slug: s.persona.name for slug, s in self.members.items()}}
        self.replies: list[SceneReply] = []  # this run's replies, newest last (their stats)
        self.instructions = ""  # an API client's system text: it follows the scene note in every view

    # --- who is here ------------------------------------------------------------------------------
    def roster(self) -> list[Member]:
        default = self.config.default_talkativeness
        return [Member(slug, s.persona.name, talkativeness(s.persona.card, default)) for slug, s in self.members.items()]

    def member(self, name: str) -> str:
        """The slug of the member named `name` (slug, card name, or a word of it); ValueError listing them."""
        wanted = name.strip().lower()
        for slug, s in self.members.items():
            if wanted in (slug, s.persona.name.lower()):
                return slug
        found = mentioned(name, self.roster())
        if len(found) == 1:
            return found[0]
        raise ValueError(f"{name!r} is not in this scene; here: {', '.join(self.members) or 'nobody'}")

    def invite(self, name: str) -> ChatSession:
        session = self._join(name)
        if session.persona.slug in self.members:
            raise ValueError(f"{session.persona.name} is already in this scene")
        self.members[session.persona.slug] = session
        self.names[session.persona.slug] = session.persona.name
        return session

    def leave(self, name: str) -> str:
        """The member leaves (its lines stay); returns its name."""
        slug = self.member(name)
        session = self.members.pop(slug)
        self.store.leave_scene(self.id, slug)
        session.close()
        return session.persona.name

    @property
    def cached_tokens(self) -> int:
        """Tokens held in the members' KV caches."""
        return sum(s.cached_tokens for s in self.members.values())

    def replace_lines(self, lines: Sequence[Message]) -> None:
        """The scene so far is `lines` (an API client resent it); nothing is stored."""
        self.lines = list(lines)
        for line in self.lines:
            if line.role == "assistant" and line.name not in self.names:
                self.names[line.name] = line.name

    def close(self) -> None:
        """Frees every member's KV cache; the scene still works and recomputes its prompts."""
        for session in self.members.values():
            session.close()

    # --- the turn ---------------------------------------------------------------------------------
    def last_persona(self) -> Optional[str]:
        return next((line.name for line in reversed(self.lines) if line.role == "assistant"), None)

    def next_speaker(self, lines: Optional[Sequence[Message]] = None) -> Optional[str]:
        """The strategy's choice after `lines` (default the scene's), or None; the same lines give the same
        choice (the RNG is seeded by scene.seed, else the scene id, and the number of lines)."""
        lines = self.lines if lines is None else lines
        seed = self.config.seed if self.config.seed is not None else self.id
        rng = random.Random(f"{seed}:{len(lines)}")
        return get_strategy(self.config.strategy)(self.roster(), lines, rng)

    def turn(self, text: Optional[str] = None, *, speaker: Optional[str] = None, human: Optional[str] = None,
             cancel: Optional[threading.Event] = None, sampling=None) -> Iterator[SceneReply]:
        """A human's message `text` (None: no message) and the replies it draws: `speaker` (asked by name: it
        may speak twice in a row) or the strategy's choice, then at most scene.max_auto_turns more. The
        message is saved with the first reply, or alone when nobody answers (manual strategy)."""
        if text is not None and not text.strip():
            raise ValueError("the message is empty")
        pending = [Message("user", text, human or self.user_name)] if text is not None else []
        slug = self.member(speaker) if speaker is not None else self.next_speaker(self.lines + pending)
        if slug is None:
            self.save(pending)
            return
        for auto in range(self.config.max_auto_turns + 1):
            reply = SceneReply(self, slug, pending, cancel, sampling)
            self.replies.append(reply)
            yield reply
            reply.finish()
            pending = []
            if not reply.text or (cancel is not None and cancel.is_set()):
                return
            if auto == self.config.max_auto_turns:
                return
            slug = self.next_speaker()
            if slug is None:
                return

    def prompt(self, text: Optional[str] = None, *, speaker: Optional[str] = None, human: Optional[str] = None):
        """(slug, Prompt) of the next speaker after the lines and `text`, as `turn` would build it (nothing is
        written); slug None when nobody would speak (manual strategy)."""
        lines = self.lines + ([Message("user", text, human or self.user_name)] if text else [])
        slug = self.member(speaker) if speaker is not None else self.next_speaker(lines)
        if slug is None:
            return None, None
        return slug, self.members[slug].preview(self.view(slug, lines), prefix=f"{self.names[slug]}:")

    def correct_last_line(self, text: str) -> None:
        """The newest persona line becomes `text`, in memory and in the store (a client's stop string cut it)."""
        if not self.lines or self.lines[-1].role != "assistant":
            raise ValueError("the scene does not end with a persona's line")
        self.store.replace_last_reply(self.id, text)
        self.lines[-1] = Message("assistant", text, self.lines[-1].name)

    def drop_last_lines(self, count: int) -> None:
        """The newest `count` lines go, in memory and in the store (an API client received none of the reply)."""
        if count:
            self.store.remove_last(self.id, count)
            self.lines = self.lines[:-count]

    def save(self, lines: list[Message]) -> None:
        if lines:
            self.store.append_lines(self.id, lines)
            self.lines.extend(lines)

    # --- each speaker's side ----------------------------------------------------------------------
    def _who(self, line: Message) -> str:
        if line.role == "assistant":
            return self.names.get(line.name, line.name or "?")
        return line.name or self.user_name

    def humans(self, lines: Sequence[Message]) -> list[str]:
        found = [self.user_name]
        for line in lines:
            if line.role == "user" and line.name and line.name not in found:
                found.append(line.name)
        return found

    def view(self, slug: str, lines: Optional[Sequence[Message]] = None) -> list[Message]:
        """The scene as `slug` reads it: a note naming the participants, its own lines as its replies
        ('Name: text'), everyone else's as user messages ('Other: text', consecutive ones joined)."""
        lines = self.lines if lines is None else lines
        others = [s.persona.name for other, s in self.members.items() if other != slug] + self.humans(lines)
        names = ", ".join([self.names[slug], *others[:-1]]) + f" and {others[-1]}"
        note = SCENE_NOTE.format(names=names, char=self.names[slug])
        out = [Message("system", f"{note}\n\n{self.instructions}" if self.instructions.strip() else note)]
        for line in lines:
            if line.role == "assistant" and line.name == slug:
                out.append(Message("assistant", f"{self.names[slug]}: {line.content}"))
            elif out[-1].role == "user":
                out[-1] = Message("user", f"{out[-1].content}\n{self._who(line)}: {line.content}")
            else:
                out.append(Message("user", f"{self._who(line)}: {line.content}"))
        return out

    def stops_for(self, slug: str, lines: Optional[Sequence[Message]] = None) -> list[str]:
        """'\\nName:' for every other participant (and the parts of their names), so `slug` never writes
        their lines; parts of its own name are left out."""
        lines = self.lines if lines is None else lines
        own = set(name_prefixes(self.names[slug]))
        others = [name for other, name in self.names.items() if other != slug] + self.humans(lines)
        return [f"\n{p}" for p in dict.fromkeys(p for name in others for p in name_prefixes(name)) if p not in own]
