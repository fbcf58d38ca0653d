"""A group scene over the API: `model: "mara+hale"` (or a scene's name); each request is answered by one persona, the next speaker.

The client's messages become scene lines (an assistant message's `name`, or a leading "Name:" in its text,
says which persona wrote it); the scene picks who speaks (or the `X-Personae-Speaker` request header names
them), and the reply carries the speaker's slug in the message's `name` and in the `X-Personae-Speaker`
response header. With a session id the scene is saved in channel "openai:<id>"; a resent conversation that
is not the stored one continues in a new stored scene.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Optional, Sequence

from ..chat.prompt import Message
from ..chat.scene import Scene, opening_lines
from ..chat.template import StopCutter
from .completion import FINISH_REASONS, Completion, Halt, stored_last
from .sessions import CHANNEL_PREFIX
from .jobs import Job

SPEAKER_HEADER = "X-Personae-Speaker"


def scene_names(model: str) -> Optional[list[str]]:
    """'mara+hale' -> ['mara', 'hale']; None for a one-persona model."""
    if "+" not in model:
        return None
    names = [part.strip() for part in model.split("+")]
    if any(not n for n in names):
        raise ValueError(f"model {model!r}: a scene is persona names joined by '+', such as mara+hale")
    return names


def named_scene_members(agent, model: str) -> Optional[list[str]]:
    """The members of the scene called `model` (`/scene name` in the terminal), unless a persona has that name."""
    from ..persona.store import UnknownPersona

    if "/" in model or "\\" in model:
        return None
    scene_id = agent.history.scene_named(model.strip())
    if scene_id is None:
        return None
    try:
        agent.personas.get(model.strip())
        return None  # a persona's name wins
    except UnknownPersona:
        return [slug for slug, _ in agent.history.scene_members(scene_id)] or None


@dataclass(frozen=True)
class SceneRequest:
    personas: tuple  # the Personas `model` named, in speaking order
    messages: tuple[tuple[str, str, str], ...]  # (role, text, name) as the client sent them
    session_id: Optional[str]  # None: stateless
    speaker: Optional[str]  # the persona asked to speak (X-Personae-Speaker), or None: the scene chooses
    max_tokens: Optional[int]
    temperature: Optional[float]
    top_p: Optional[float]
    seed: Optional[int]
    stop: tuple[str, ...]


def _speaker_of(text: str, name: str, personas: Sequence) -> tuple[str, str]:
    """(slug, text) of an assistant message: its `name`, else a leading 'Card Name:' (cut), else the first persona."""
    for p in personas:
        if name.strip().lower() in (p.slug, p.name.lower()):
            return p.slug, text
    for p in personas:
        if text.startswith(f"{p.name}:"):
            return p.slug, text[len(p.name) + 1:].strip()
    return personas[0].slug, text


def read_scene_turn(messages: Sequence[tuple[str, str, str]], personas: Sequence):
    """-> (system text, prior lines, new message text, its author's name, resent). ValueError when there is no
    user message to answer."""
    start = 0
    while start < len(messages) and messages[start][0] == "system":
        start += 1
    system = "\n\n".join(text for _, text, _ in messages[:start] if text.strip())
    lines = []
    for role, text, name in messages[start:]:
        if role == "assistant":
            slug, said = _speaker_of(text, name, personas)
            lines.append(Message("assistant", said, slug))
        elif role == "user":
            lines.append(Message("user", text, name))
    last_reply = max((i for i, m in enumerate(lines) if m.role == "assistant"), default=-1)
    users = [m for m in lines[last_reply + 1:] if m.content.strip()]
    if not users:
        raise ValueError("messages: the conversation has no user message after the last reply; personae answers one")
    return system, lines[:last_reply + 1], "\n\n".join(m.content for m in users), users[-1].name, last_reply >= 0


def _spoken(lines: Sequence[Message]) -> list[tuple[str, str]]:
    return [(m.role, m.content) for m in lines]


def _scene(sessions, request: SceneRequest, prior: list[Message], resent: bool, user: str) -> Scene:
    """The scene to answer in, its lines brought in line with what the client sent."""
    agent, slugs = sessions.agent, [p.slug for p in request.personas]
    channel = None if request.session_id is None else CHANNEL_PREFIX + request.session_id
    key = (request.session_id, "+".join(slugs))
    scene = sessions.pool.open(key, lambda: agent.open_scene(slugs, resume=channel is not None, channel=channel,
                                                             save=channel is not None, user_name=user))
    opening = opening_lines([(p.slug, p.card) for p in request.personas], user)
    if resent and prior[0].role != "assistant":
        prior = opening + prior
    if channel is None:
        scene.replace_lines(prior if resent else opening)
    elif resent and (len(prior) > len(scene.lines) or _spoken(scene.lines[len(scene.lines) - len(prior):]) != _spoken(prior)):
        sessions.pool.drop(key)  # an edited conversation: the client's version, stored anew
        scene = sessions.pool.open(key, lambda: agent.open_scene(slugs, channel=channel, opening=prior, user_name=user))
    return scene


def _keep_received(scene: Scene, written: list[Message], received: str) -> None:
    """Cuts the lines `written` (the message and the persona's line) to what the client received of the line;
    when it received nothing, they all go."""
    if not stored_last(scene.store, scene.id, written) or received.strip() == written[-1].content:
        return
    if received.strip() and written[-1].role == "assistant":
        scene.correct_last_line(received.strip())
    else:
        scene.drop_last_lines(len(written))


def complete_scene(sessions, request: SceneRequest, job: Job) -> Completion:
    """One persona's reply in the scene; its slug goes to `job.info["speaker"]` before the first piece. One
    request at a time per scene (others wait)."""
    with sessions.held((request.session_id, "+".join(p.slug for p in request.personas))):
        return _complete_scene(sessions, request, job)


def _complete_scene(sessions, request: SceneRequest, job: Job) -> Completion:
    system, prior, text, human, resent = read_scene_turn(request.messages, request.personas)
    user = sessions.agent.config.chat.user_name
    scene = _scene(sessions, request, prior, resent, user)
    scene.instructions = system
    slug = scene.member(request.speaker) if request.speaker else scene.next_speaker(
        scene.lines + [Message("user", text, human or user)])
    if slug is None:
        raise ValueError(f"nobody speaks next with scene.strategy={scene.config.strategy}: name the persona in "
                         f"the {SPEAKER_HEADER} header")
    job.info["speaker"] = slug
    halt = Halt(job.cancel)
    stopper = StopCutter(request.stop)
    member = scene.members[slug]
    sampling = member.options(max_new_tokens=request.max_tokens, temperature=request.temperature,
                              top_p=request.top_p, seed=request.seed)
    before = len(scene.lines)
    turns = scene.turn(text, speaker=slug, human=human or None, cancel=halt, sampling=sampling)
    try:
        reply = next(turns)
        for piece in reply:
            job.emit(stopper.feed(piece))
            if stopper.stopped or job.cancel.is_set():
                halt.set()  # keep draining: the scene saves the line when its stream ends
        job.emit(stopper.flush())
    finally:
        turns.close()  # one reply per request: no auto-turns over the API
        sessions.trim()
    if stopper.stopped and scene.lines and scene.lines[-1].name == slug:
        scene.correct_last_line(stopper.text.strip())
    stats = member.last_stats
    written = scene.lines[before:]
    keep = sessions.under((request.session_id, "+".join(p.slug for p in request.personas)),
                          partial(_keep_received, scene, written)) if request.session_id is not None and written else None
    return Completion(text=stopper.text.strip(), finish_reason=FINISH_REASONS.get(stats.stopped_by, "stop"),
                      prompt_tokens=stats.prompt_tokens, completion_tokens=stats.new_tokens,
                      cached_tokens=stats.prompt_tokens - stats.prefill_tokens, speaker=slug, keep_received=keep)
