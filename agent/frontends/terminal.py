"""Terminal chat: read a line, stream the persona's reply, handle /commands. Calls only the Agent API.

Ctrl-C while a reply streams stops that reply (what was written is kept); Ctrl-D or /quit leaves. A turn
that can't be answered (a prompt too long for the context, an LM engine that is down) is one line on
stderr and the chat goes on. Card text and names are printed through `for_terminal`.
"""
from __future__ import annotations

import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence, TextIO

from rich.console import Console
from rich.markup import escape

from ..agent import Agent
from ..chat.prompt import Cancelled
from ..untrusted_text import for_terminal, lone_surrogate, surrogate_problem

HELP = """commands:
  /retry          regenerate the last reply
  /reset          start a new conversation with this persona
  /persona NAME   switch to another persona (new conversation)
  /personas       list the personas
  /history        show this conversation
  /listen FILE    send a voice message from an audio file (the microphone when FILE is left out)
  /remember TEXT  keep a note for the rest of this conversation
  /forget [N|all] drop the newest note, memory number N (see /memory), or everything remembered
  /memory         show the summary, notes and what the last reply recalled
  /lore [attach|detach NAME]  show which lorebook entries fired and why; attach an imported lorebook
  /invite NAME    bring another persona into this conversation (it becomes a group scene)
  /leave NAME     a persona leaves the scene (its lines stay)
  /next NAME      NAME speaks next (in a scene; NAME may speak twice in a row when asked)
  /scene [name NAME]  who is in the scene, who speaks next, what the last replies cost; name it (the API's model NAME)
  /quit           leave (Ctrl-D too); Ctrl-C stops a reply mid-way"""
SCENE_ONLY = ("next", "leave", "scene")
NOT_IN_SCENES = ("retry", "persona", "remember", "forget", "memory", "lore", "listen")


def _shown(name: str) -> str:
    """A name (from a card or the user) for a rich markup string on the terminal."""
    return escape(for_terminal(name))


@contextmanager
def _ctrl_c_interrupts():
    """While the chat runs, Ctrl-C raises KeyboardInterrupt, even when the process was started with SIGINT
    ignored (a background job `cmd &` inherits that); the handler before is put back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextmanager
def _ctrl_c_cancels(cancel: threading.Event):
    """While a reply streams, Ctrl-C sets `cancel` instead of raising KeyboardInterrupt."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, lambda *_: cancel.set())
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class TerminalChat:
    def __init__(self, agent: Agent, *, out: Optional[TextIO] = None, err: Optional[Console] = None,
                 voice: bool = False):
        self.agent = agent
        self.out = out or sys.stdout  # read when the chat starts, not when this module was imported
        self.err = err or Console(stderr=True, highlight=False)
        self.session = None
        self.scene = None  # a group Scene (agent/chat/scene.py) when several personas talk here
        self.voice = voice  # speak every reply, sentence by sentence, while it is written
        self.speaker = None  # the sounddevice module when an output device exists
        self.replies_spoken = 0

    def _write(self, text: str) -> None:
        self.out.write(for_terminal(text, lines=True))  # card text and replies may hold escape or bidi codes
        self.out.flush()

    def _stream(self, start: Callable[[threading.Event], Iterator[str]], session=None,
                cancel: Optional[threading.Event] = None) -> None:
        """Writes the pieces of `start(cancel)` as `session`'s persona (default this chat's) as they come;
        Ctrl-C sets `cancel` (before the reply began: while its prompt was fitted, nothing is kept)."""
        session = session or self.session
        cancel = cancel or threading.Event()
        speech, sink = self._speech(session) if self.voice else (None, None)
        self._write(f"{session.persona.name}: ")
        began = True
        try:
            with _ctrl_c_cancels(cancel):
                try:
                    for piece in start(cancel):
                        self._write(piece)
                        if speech:
                            speech.feed(piece)
                except Cancelled:
                    began = False
        except Exception:
            self._write("\n")  # end the reply's line; `answer` says why it stopped
            if speech:
                speech.close()
            raise
        self._write("\n")
        if speech:
            stats = speech.close()
            for path in sink.paths:
                self.err.print(f"[dim]audio: {path}[/dim]", highlight=False)
            for error in stats.errors:
                self.err.print(f"[yellow]speech failed: {error}[/yellow]", markup=False)
        if not began:
            self.err.print("[dim](stopped before the reply began; nothing was kept)[/dim]")
        elif cancel.is_set():
            self.err.print("[dim](stopped; the partial reply was kept — /retry to regenerate)[/dim]")

    def _speech(self, session):
        from ..speech.playback import open_audio_sink

        self.replies_spoken += 1
        folder = self.agent.home.session_dir(self.scene.id if self.scene is not None else session.id)
        sink = open_audio_sink(folder, self.replies_spoken, self.speaker)
        return self.agent.speech_stream(session, sink), sink

    def open(self, persona: Optional[str | Sequence[str]], *, resume: bool, user_name: Optional[str]) -> None:
        """Opens a chat with `persona`, or a group scene when several are named."""
        with self.err.status("loading the model…", spinner="dots"):
            _ = self.agent.chat_backend
        if self.voice:
            from ..speech.playback import output_device

            self.speaker = output_device()
            if self.speaker is None:
                self.err.print("[dim]no audio output device: spoken replies are written as WAV files[/dim]")
        names = [persona] if isinstance(persona, str) or persona is None else list(persona)
        if len(names) > 1:
            self.scene = self.agent.open_scene(names, resume=resume, user_name=user_name)
            self.session = next(iter(self.scene.members.values()))
            self._show_scene_start(resumed=resume and any(m.role == "user" for m in self.scene.lines))
            return
        self.session = self.agent.open_session(names[0], resume=resume, user_name=user_name)
        self._show_start(resumed=resume and len(self.session.messages) > 1)

    def _show_start(self, resumed: bool) -> None:
        s = self.session
        self.err.print(f"[bold]{_shown(s.persona.name)}[/bold] [dim](session {s.id}; /help for commands)[/dim]")
        if resumed:
            for m in s.messages[-4:]:
                who = s.persona.name if m.role == "assistant" else s.user_name
                self._write(f"{who}: {m.content}\n")
        elif s.greeting:
            self._write(f"{s.persona.name}: {s.greeting}\n")

    def _show_scene_start(self, resumed: bool) -> None:
        scene = self.scene
        names = ", ".join(_shown(s.persona.name) for s in scene.members.values())
        self.err.print(f"[bold]{names}[/bold] [dim](scene {scene.id}; /help for commands)[/dim]", markup=True,
                       highlight=False)
        for line in scene.lines[-4:] if resumed else scene.lines:
            self._write(f"{scene._who(line)}: {line.content}\n")

    def scene_command(self, name: str, arg: str) -> None:
        """/invite, /leave, /next, /scene, and /history and /reset of a scene."""
        from ..models.engine import EngineError
        from ..persona.store import UnknownPersona

        try:
            if name == "invite":
                if self.scene is None:  # the one-persona chat so far opens the scene
                    s = self.session
                    self.scene = self.agent.open_scene([s.persona.slug], user_name=s.user_name, opening=[
                        m if m.role == "user" else type(m)(m.role, m.content, s.persona.slug) for m in s.messages])
                joined = self.scene.invite(arg)
                self.err.print(f"[dim]{_shown(joined.persona.name)} joins the scene[/dim]", highlight=False)
            elif name == "leave":
                if len(self.scene.members) == 1:
                    raise ValueError("the scene needs someone in it; /quit to leave it")
                self.err.print(f"[dim]{_shown(self.scene.leave(arg))} leaves the scene[/dim]", highlight=False)
                self.session = next(iter(self.scene.members.values()))
            elif name == "next":
                self.scene_turn(None, speaker=arg)
            elif name == "scene" and arg.startswith("name "):
                self.scene.store.name_scene(self.scene.id, arg[5:].strip() or None)
                self._write(f"[this scene is called {arg[5:].strip()!r}]\n")
            elif name == "scene":
                self._write(self.scene_report() + "\n")
            elif name == "history":
                for line in self.scene.lines:
                    self._write(f"{self.scene._who(line)}: {line.content}\n")
            elif name == "reset":
                self.scene = self.agent.open_scene(list(self.scene.members), user_name=self.scene.user_name)
                self._show_scene_start(resumed=False)
        except (ValueError, UnknownPersona, EngineError) as e:  # /next's turn too: nothing of it was saved
            self.err.print(for_terminal(str(e)), markup=False)

    def scene_report(self) -> str:
        scene = self.scene
        nxt = scene.next_speaker()
        lines = [f"scene {scene.id}: " + ", ".join(f"{s.persona.name} ({slug})" for slug, s in scene.members.items()),
                 f"strategy: {scene.config.strategy}, at most {scene.config.max_auto_turns} replies in a row after "
                 f"yours; next: {scene.names[nxt] if nxt else 'you (or /next NAME)'}"]
        for reply in scene.replies[-6:]:
            st = reply.stats
            lines.append(f"  {reply.name}{' (switched)' if reply.switched else ''}: {st.prefill_tokens} of "
                         f"{st.prompt_tokens} prompt tokens computed, first token after {st.time_to_first_token:.2f} s")
        return "\n".join(lines)

    def scene_turn(self, text: Optional[str], *, speaker: Optional[str] = None) -> None:
        cancel = threading.Event()
        answered = False
        try:
            for reply in self.scene.turn(text, speaker=speaker, cancel=cancel):
                self._stream(lambda c, reply=reply: iter(reply), session=reply.speaker, cancel=cancel)
                answered = True
        except Cancelled:  # Ctrl-C while a line's prompt was fitted (_stream said so): the turn ends
            return
        if not answered:
            self.err.print(f"[dim](nobody answers on their own with scene.strategy={self.scene.config.strategy}; "
                           f"/next NAME chooses)[/dim]", highlight=False)

    def command(self, line: str) -> bool:
        """Runs a /command; returns False when the chat should end."""
        name, _, arg = line[1:].partition(" ")
        arg = arg.strip()
        if name in ("quit", "exit", "q"):
            return False
        if name in ("invite", "leave", "next") and not arg:
            self.err.print(f"usage: /{name} NAME  (see /personas)")
        elif name in SCENE_ONLY and self.scene is None:
            self.err.print(f"/{name} works in a group scene; /invite NAME starts one", markup=False)
        elif name == "invite" or (self.scene is not None and name in (*SCENE_ONLY, "history", "reset")):
            self.scene_command(name, arg)
        elif self.scene is not None and name in NOT_IN_SCENES:
            self.err.print(f"/{name} works in one-persona chats, not in a group scene yet", markup=False)
        elif name == "help":
            self.err.print(HELP, markup=False)
        elif name == "retry":
            if not self.session.can_retry:
                self.err.print("there is no reply to retry yet")
            else:
                self.answer(lambda: self._stream(lambda cancel: self.session.retry(cancel=cancel)))
        elif name == "reset":
            self.session = self.agent.open_session(self.session.persona.slug, user_name=self.session.user_name)
            self._show_start(resumed=False)
        elif name == "persona":
            if not arg:
                self.err.print("usage: /persona NAME  (see /personas)")
            else:
                from ..persona.store import UnknownPersona
                try:
                    self.session = self.agent.open_session(arg, user_name=self.session.user_name)
                    self._show_start(resumed=False)
                except UnknownPersona as e:
                    self.err.print(str(e), markup=False)
        elif name == "personas":
            for p in self.agent.personas.list():
                self._write(f"{p.slug:16} {p.name}\n")
        elif name == "listen":
            self.listen(arg)
        elif name in ("remember", "forget", "memory", "lore"):
            self.memory_command(name, arg)
        elif name == "history":
            for m in self.session.messages:
                who = self.session.persona.name if m.role == "assistant" else self.session.user_name
                self._write(f"{who}: {m.content}\n")
        else:
            self.err.print(f"unknown command /{name}; /help lists them", markup=False)
        return True

    def memory_command(self, name: str, arg: str) -> None:
        from ..persona.lorebook import LoreError

        s = self.session
        try:
            if name == "remember":
                if not arg:
                    self.err.print("usage: /remember TEXT")
                    return
                self._write(f"[remembered as #{s.remember(arg)}]\n")
            elif name == "forget":
                self._write(f"[{s.forget(arg or None)}]\n")
            elif name == "memory":
                self._write(s.memory_report() + "\n")
            elif arg:
                action, _, book = arg.partition(" ")
                if action not in ("attach", "detach") or not book.strip():
                    self.err.print("usage: /lore | /lore attach NAME | /lore detach NAME")
                    return
                (self.agent.attach_lore if action == "attach" else self.agent.detach_lore)(s, book.strip())
                self._write(f"[lorebook {book.strip()} {action}ed]\n")
            else:
                self._write(s.lore_report() + "\n")
        except (ValueError, LoreError) as e:
            self.err.print(str(e), markup=False)

    def listen(self, path: str) -> None:
        """Transcribes a voice message and sends its text as the user's turn."""
        from ..speech.audio import AudioError

        try:
            if path:
                with self.err.status("transcribing…", spinner="dots"):
                    transcript = self.agent.transcribe(Path(path).expanduser())
            else:
                transcript = self._record()
                if transcript is None:
                    return
        except AudioError as e:
            self.err.print(str(e), markup=False)
            return
        if not transcript.text:
            self.err.print(f"(nothing heard in {path}: {transcript.reason})", markup=False)
            return
        self._write(f"{self.session.user_name} (voice): {transcript.text}\n")
        self.turn(transcript.text)

    def _record(self):
        """A voice message from the microphone, recorded until Enter; None when there is no microphone."""
        from ..speech.playback import input_device, record_until_enter

        microphone = input_device()
        if microphone is None:
            self.err.print("no microphone found (it needs `pip install sounddevice` and an input device); "
                           "use /listen FILE", markup=False)
            return None
        samples = record_until_enter(microphone, lambda: input("recording… press Enter to stop "))
        with self.err.status("transcribing…", spinner="dots"):
            return self.agent.transcriber.transcribe_samples(samples)

    def turn(self, text: str) -> None:
        if self.scene is not None:
            self.answer(lambda: self.scene_turn(text))
        else:
            self.answer(lambda: self._stream(lambda cancel: self.session.reply(text, cancel=cancel)))

    def answer(self, run: Callable[[], None]) -> None:
        """Runs a turn; when it can't be answered, says why in one line and the chat goes on. A reply is
        saved only when it ends, so the failed one left nothing behind."""
        from ..models.engine import EngineError
        from ..models.llamacpp import KVFull

        try:
            run()
        except (ValueError, EngineError, KVFull) as e:
            self.err.print(f"personae: no reply: {for_terminal(str(e))} (nothing of it was saved; the chat goes on)",
                           markup=False, highlight=False)

    def loop(self, read=input) -> int:
        with _ctrl_c_interrupts():
            return self._loop(read)

    def _loop(self, read) -> int:
        prompt = for_terminal(f"{self.scene.user_name if self.scene is not None else self.session.user_name}> ")
        while True:
            try:
                line = read(prompt)
            except EOFError:
                self._write("\n")
                return 0
            except UnicodeDecodeError as e:  # a strict UTF-8 stdin given other bytes
                self.err.print(f"that line was not sent: it is not UTF-8 text ({e.reason})", markup=False)
                continue
            except KeyboardInterrupt:
                self.err.print("\n[dim](Ctrl-D or /quit to leave)[/dim]")
                continue
            line = line.strip()
            if not line:
                continue
            found = lone_surrogate(line)  # bytes that are not UTF-8, read with surrogateescape
            if found:
                self.err.print(f"that line was not sent: it {surrogate_problem(found[1])} (not UTF-8 input?)",
                               markup=False)
                continue
            if line.startswith("/"):
                if not self.command(line):
                    return 0
            else:
                self.turn(line)
