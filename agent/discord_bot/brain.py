"""What the bot does, in plain Python: which messages to answer, the replies, slash commands, rate limits.

`DiscordBrain` takes an `Incoming` (ids, flags, text, audio bytes) and hands back an `Outgoing` (chunks to
post, as which persona, with which avatar and audio); `bot.py` only translates Discord events to and from these.
Methods that touch the models (`answer`, `retry`, commands) block: call them on a model thread, one call at a
time per channel (the bot holds a lock per channel).
"""
from __future__ import annotations

import tempfile
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

from ..agent import Agent
from ..chat.pool import MAX_SESSIONS, SessionPool
from .messages import split_message
from .settings import ChannelSettings

CREATE_SECONDS = 120.0  # /persona create: past this the remaining fields close early (an interaction lasts 15 minutes)


def channel_key(channel_id: int) -> str:
    """The history/settings key of a Discord channel, thread or DM."""
    return f"discord:{channel_id}"


@dataclass(frozen=True)
class Incoming:
    channel_id: int  # the channel, thread or DM the message is in (threads are their own channels)
    author_id: int
    author_name: str  # display name, the {{user}} of a new conversation
    text: str  # content with the bot's mention removed
    is_dm: bool = False
    mentioned: bool = False  # the bot was @mentioned
    reply_to_bot: bool = False  # a reply to the bot or to one of its persona posts
    from_bot: bool = False  # posted by a bot (this one included)
    from_webhook: bool = False  # posted through a webhook (the persona posts are)
    audio: tuple[tuple[str, bytes], ...] = ()  # (file name, bytes) of voice messages and audio attachments


@dataclass(frozen=True)
class Outgoing:
    persona: str  # display name to post as
    avatar: Optional[Path]  # portrait file, or None
    chunks: tuple[str, ...]  # message contents, each within Discord's limit
    audio: Optional[bytes] = None  # WAV of the reply in the persona's voice (voice on)
    audio_name: str = "reply.wav"
    notice: str = ""  # a line from the bot itself (what it heard, why voice failed), posted first


class RateLimiter:
    """At most `limit` messages per user in any `window` seconds; says once per window when someone is over.

    Users silent for a whole window are forgotten (swept at most once a window), so the memory held is
    bounded by who wrote in the last two windows, not by everyone who ever wrote.
    """

    def __init__(self, limit: int = 5, window: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.limit, self.window, self.clock = limit, window, clock
        self._times: dict[int, deque] = {}
        self._warned: dict[int, float] = {}
        self._swept = clock()

    def check(self, user_id: int) -> tuple[bool, Optional[float]]:
        """(allowed, None) or (False, seconds until allowed); the seconds are None when already told."""
        now = self.clock()
        if now - self._swept >= self.window:
            self._sweep(now)
        times = self._times.setdefault(user_id, deque())
        while times and now - times[0] >= self.window:
            times.popleft()
        if len(times) < self.limit:
            times.append(now)
            self._warned.pop(user_id, None)
            return True, None
        wait = self.window - (now - times[0])
        if self._warned.get(user_id, -1.0) >= times[0]:
            return False, None
        self._warned[user_id] = now
        return False, wait

    def _sweep(self, now: float) -> None:
        """Drops the users whose every message is older than the window (and their warnings)."""
        for user_id in [u for u, times in self._times.items() if not times or now - times[-1] >= self.window]:
            del self._times[user_id]
            self._warned.pop(user_id, None)
        self._swept = now


class DiscordBrain:
    def __init__(self, agent: Agent, *, rate: Optional[RateLimiter] = None, max_sessions: int = MAX_SESSIONS):
        self.agent = agent
        self.settings = ChannelSettings(agent.home.database)
        self.rate = rate or RateLimiter()
        # channel key -> ChatSession; the least recently used channels' sessions close (their history stays)
        self.sessions = SessionPool(max_sessions=max_sessions)

    # -- routing (cheap: safe on the event loop) --

    def wants(self, msg: Incoming) -> bool:
        """Should the persona answer? Never bots or webhooks; always DMs; else mention, reply or an always-channel."""
        if msg.from_bot or msg.from_webhook:
            return False
        if not msg.text.strip() and not msg.audio:
            return False
        if msg.is_dm or msg.mentioned or msg.reply_to_bot:
            return True
        return self.settings.get(channel_key(msg.channel_id)).always

    def over_rate(self, author_id: int) -> Optional[str]:
        """None when the user may send; else a friendly line ("" when they were already told)."""
        allowed, wait = self.rate.check(author_id)
        if allowed:
            return None
        if wait is None:
            return ""
        return (f"You're sending messages faster than I can answer. Give me {max(1, round(wait))} s "
                f"and try again.")

    # -- model work (blocking: run on a model thread, one at a time per channel) --

    def session(self, channel_id: int, user_name: Optional[str] = None, *, fresh: bool = False):
        """This channel's conversation: the open one, else its latest stored one resumed (fresh: a new one)."""
        key = channel_key(channel_id)
        if fresh:
            self.sessions.drop(key)
        persona = self.settings.get(key).persona
        return self.sessions.open(key, lambda: self.agent.open_session(persona, resume=not fresh, channel=key,
                                                                       user_name=user_name))

    def _heard(self, msg: Incoming) -> tuple[str, list[str]]:
        """(the text and what its audio said, notes for the channel)."""
        heard, notes = [], []
        for name, data in msg.audio:
            transcript = self.agent.transcribe(data, name=name)
            if transcript.text:
                heard.append(transcript.text)
            else:
                notes.append(f"(I couldn't make out {name}: {transcript.reason})")
        if heard:
            notes.insert(0, "🎙️ heard: " + " ".join(heard))
        return "\n".join(part for part in [msg.text.strip(), *heard] if part), notes

    def answer(self, msg: Incoming) -> Outgoing:
        """Transcribes any audio, then the persona's reply to the text and what was said."""
        text, notes = self._heard(msg)
        session = self.session(msg.channel_id, msg.author_name)
        if not text:
            return self._outgoing(msg.channel_id, session, "", notice=" ".join(notes))
        reply = "".join(session.reply(text))
        return self._outgoing(msg.channel_id, session, reply, notice="\n".join(notes))

    def replies(self, msg: Incoming) -> Iterator[Outgoing]:
        """What to post for `msg`, one Outgoing at a time (call `next` on the model thread): the persona's
        answer, or in a group scene each persona's line as it is written, through its own webhook."""
        if self.settings.get(channel_key(msg.channel_id)).scene is None:
            yield self.answer(msg)
            return
        text, notes = self._heard(msg)
        scene = self.scene(msg.channel_id, msg.author_name)
        if not text:
            if notes:
                yield Outgoing("", None, (), notice=" ".join(notes))
            return
        for reply in scene.turn(text, human=msg.author_name):
            reply.finish()
            if reply.text:
                yield self._outgoing(msg.channel_id, reply.speaker, reply.text, notice="\n".join(notes))
                notes = []

    # -- group scenes: several personas in one channel --

    def scene(self, channel_id: int, user_name: Optional[str] = None):
        """This channel's group scene (open, or reopened from the store)."""
        key = channel_key(channel_id)
        scene_id = self.settings.get(key).scene
        if scene_id is None:
            raise ValueError("no group scene here: /scene add NAME starts one")
        return self.sessions.open(key, lambda: self.agent.open_scene(scene_id=scene_id, user_name=user_name))

    def scene_add(self, channel_id: int, name: str, user_name: Optional[str] = None) -> str:
        """/scene add NAME: NAME joins this channel's scene; the first one starts it with the channel's persona
        and its conversation so far."""
        key = channel_key(channel_id)
        persona = self.agent.personas.get(name)  # UnknownPersona names what it looked for
        if self.settings.get(key).scene is None:
            session = self.session(channel_id, user_name)
            if persona.slug == session.persona.slug:
                raise ValueError(f"{persona.name} already answers here; add another persona")
            opening = [m if m.role == "user" else type(m)(m.role, m.content, session.persona.slug)
                       for m in session.messages]
            scene = self.agent.open_scene([session.persona.slug], channel=key, user_name=user_name, opening=opening)
            self.sessions.drop(key)
            self.settings.update(key, scene=scene.id)
        self.scene(channel_id, user_name).invite(persona.slug)
        return f"**{persona.name}** joins the scene: {self.scene_list(channel_id)}"

    def scene_remove(self, channel_id: int, name: str) -> str:
        scene = self.scene(channel_id)
        if len(scene.members) == 1:
            raise ValueError("the scene needs someone in it; /persona set NAME ends it")
        return f"**{scene.leave(name)}** leaves the scene."

    def scene_list(self, channel_id: int) -> str:
        if self.settings.get(channel_key(channel_id)).scene is None:
            return "No group scene here: /scene add NAME starts one."
        scene = self.scene(channel_id)
        return ", ".join(f"**{s.persona.name}** (`{slug}`)" for slug, s in scene.members.items()) + \
            f" (who speaks: {scene.config.strategy})"

    def _one_persona(self, channel_id: int, what: str) -> None:
        if self.settings.get(channel_key(channel_id)).scene is not None:
            raise ValueError(f"{what} works with one persona, not in a group scene yet (/persona set NAME ends it)")

    def retry(self, channel_id: int) -> Outgoing:
        self._one_persona(channel_id, "/retry")
        session = self.session(channel_id)
        if not session.can_retry:
            raise ValueError("there is no reply to retry yet in this channel")
        return self._outgoing(channel_id, session, "".join(session.retry()))

    def _outgoing(self, channel_id: int, session, reply: str, *, notice: str = "") -> Outgoing:
        persona = session.persona
        audio = None
        if reply.strip() and self.settings.get(channel_key(channel_id)).voice:
            try:
                audio = self._speech(persona.slug, reply)
            except Exception as e:  # noqa: BLE001 - the text still goes out; say why the voice didn't
                notice = (notice + "\n" if notice else "") + f"(no voice: {e})"
        chunks = tuple(split_message(reply)) or (("…",) if not notice else ())
        return Outgoing(persona.name, persona.portrait, chunks, audio, f"{persona.slug}.wav", notice)

    def _speech(self, persona: str, text: str) -> bytes:
        from ..speech.audio import write_wav

        samples, rate = self.agent.speak(persona, text)
        with tempfile.TemporaryDirectory() as folder:
            return write_wav(Path(folder) / "reply.wav", samples, rate).read_bytes()

    # -- slash commands: each returns the line to answer with --

    def set_persona(self, channel_id: int, name: str) -> str:
        persona = self.agent.personas.get(name)  # UnknownPersona names what it looked for
        self.settings.update(channel_key(channel_id), persona=persona.slug, scene=None)  # a scene here ends
        self.sessions.drop(channel_key(channel_id))  # the next message resumes this persona's session here
        return f"**{persona.name}** now answers in this channel."

    def create_persona(self, idea: str, name: Optional[str] = None, *, is_admin: bool) -> str:
        """/persona create: a new persona written from `idea` (agent/creation); server admins only."""
        if not is_admin:
            return "Only server admins can create personas."
        created = self.agent.create_persona(idea, name=name, time_limit=CREATE_SECONDS)
        p = created.persona
        description = " ".join(p.card.description.replace("{{char}}", p.name).split())
        if len(description) > 300:
            description = description[:297] + "..."
        return f"Created **{p.name}** (`{p.slug}`): {description}\n`/persona set {p.slug}` to talk to them here."

    def persona_list(self) -> str:
        return "\n".join(f"• **{p.name}** (`{p.slug}`)" for p in self.agent.personas.list()) or "No personas."

    def persona_info(self, channel_id: int) -> str:
        config = self.settings.get(channel_key(channel_id))
        persona = self.agent.persona(config.persona)
        description = " ".join(persona.card.description.split())
        if len(description) > 600:
            description = description[:600].rsplit(" ", 1)[0] + "…"
        answers = "every message" if config.always else "mentions, replies and DMs"
        return (f"**{persona.name}** (`{persona.slug}`)\n{description}\n"
                f"Answers: {answers}. Voice: {'on' if config.voice else 'off'}.")

    def reset(self, channel_id: int, user_name: Optional[str] = None) -> Outgoing:
        """A new conversation here (a new scene of the same personas in a scene); the outgoing carries the
        (first) greeting."""
        key = channel_key(channel_id)
        if self.settings.get(key).scene is not None:
            old = self.scene(channel_id, user_name)
            scene = self.agent.open_scene(list(old.members), channel=key, user_name=user_name)
            self.sessions.drop(key)
            self.settings.update(key, scene=scene.id)
            first = scene.lines[0] if scene.lines else None
            speaker = scene.members.get(first.name) if first else None
            return self._outgoing(channel_id, speaker or next(iter(scene.members.values())),
                                  first.content if first else "")
        session = self.session(channel_id, user_name, fresh=True)
        return Outgoing(session.persona.name, session.persona.portrait, tuple(split_message(session.greeting)))

    def remember(self, channel_id: int, text: str) -> str:
        """/remember: a note this channel's conversation keeps."""
        self._one_persona(channel_id, "/remember")
        number = self.session(channel_id).remember(text)
        return f"I'll remember that (memory #{number})."

    def forget(self, channel_id: int, what: Optional[str] = None) -> str:
        """/forget: the newest note, memory number `what`, or 'all'."""
        self._one_persona(channel_id, "/forget")
        return self.session(channel_id).forget(what).capitalize() + "."

    def memory(self, channel_id: int) -> str:
        """/memory: the summary, notes and what the last reply recalled."""
        self._one_persona(channel_id, "/memory")
        return self.session(channel_id).memory_report()

    def set_voice(self, channel_id: int, on: bool) -> str:
        self.settings.update(channel_key(channel_id), voice=on)
        return "Replies here now come with a voice clip." if on else "Voice clips are off here."

    def set_always(self, channel_id: int, on: bool) -> str:
        self.settings.update(channel_key(channel_id), always=on)
        return ("I'll answer every message in this channel." if on
                else "I'll answer here only when mentioned or replied to.")
