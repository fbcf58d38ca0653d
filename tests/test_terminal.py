"""The terminal front-end's loop, driven in-process: commands, streaming and Ctrl-C."""
import dataclasses
import io
import os
import signal

from agent.frontends.terminal import TerminalChat


def _reader(lines):
    """input() for the loop: the lines in turn, then EOF (Ctrl-D)."""
    feed = iter(lines)

    def read(_prompt):
        try:
            return next(feed)
        except StopIteration:
            raise EOFError

    return read


def _chat(agent, lines):
    out = io.StringIO()
    chat = TerminalChat(agent, out=out)
    chat.open("mara", resume=False, user_name="Ann")
    return chat, chat.loop(_reader(lines)), out.getvalue()


def test_loop_streams_replies_and_ends_on_eof(tiny_agent):
    chat, code, out = _chat(tiny_agent, ["hello there"])
    assert code == 0
    assert out.count("Captain Mara Vell: ") == 2  # greeting + reply
    assert chat.session.messages[-2].content == "hello there"


def test_ctrl_c_stops_the_reply_not_the_program(tiny_agent):
    """SIGINT while a reply streams cancels it; the loop goes on to the next line."""
    chat = TerminalChat(tiny_agent, out=io.StringIO())
    chat.open("mara", resume=False, user_name="Ann")
    session = chat.session
    session.chat = dataclasses.replace(session.chat, guard_tokens=2)  # the guard hands out text every 2 tokens
    original = session.reply

    def reply_then_interrupt(text, cancel=None):
        for i, piece in enumerate(original(text, cancel=cancel)):
            if i == 1:
                os.kill(os.getpid(), signal.SIGINT)
            yield piece

    session.reply = reply_then_interrupt
    lines = iter(["first", "/quit"])
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN when the suite runs as a background job
    assert chat.loop(lambda _p: next(lines)) == 0
    assert session.last_stats.stopped_by == "cancelled"
    assert session.messages[-2].content == "first"  # the interrupted turn was kept
    assert signal.getsignal(signal.SIGINT) is before  # the chat's handlers are gone again


def test_ctrl_c_works_even_when_started_with_sigint_ignored(tiny_agent):
    """A chat started as a background job (SIGINT ignored) still answers Ctrl-C at the prompt and mid-reply."""
    chat = TerminalChat(tiny_agent, out=io.StringIO())
    chat.open("mara", resume=False, user_name="Ann")
    seen = []

    def read(_prompt):
        seen.append(signal.getsignal(signal.SIGINT))
        if len(seen) == 1:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C at the prompt: KeyboardInterrupt, caught by the loop
        return "/quit" if len(seen) > 1 else "never read"

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        assert chat.loop(read) == 0
        assert seen[0] is signal.default_int_handler and len(seen) == 2
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_ctrl_c_at_the_prompt_does_not_quit(tiny_agent):
    chat = TerminalChat(tiny_agent, out=io.StringIO())
    chat.open("mara", resume=False, user_name="Ann")
    events = iter([KeyboardInterrupt, "/quit"])

    def read(_p):
        e = next(events)
        if e is KeyboardInterrupt:
            raise KeyboardInterrupt
        return e

    assert chat.loop(read) == 0


def test_remember_memory_forget_and_lore_commands(tiny_agent):
    chat, code, out = _chat(tiny_agent, ["/remember my horse is called Clover", "/memory", "/forget", "/memory",
                                         "/lore", "/forget seven", "/lore attach nothing-here", "/remember"])
    assert code == 0
    assert "[remembered as #1]" in out and "#1 my horse is called Clover" in out
    assert "[forgot #1: my horse is called Clover]" in out and "notes (0)" in out
    assert "lorebooks: Grey Gull lore" in out  # mara's card carries a lorebook


def test_lore_command_shows_what_fired(tiny_agent):
    chat, code, out = _chat(tiny_agent, ["Tell me about the Grey Gull.", "/lore"])
    assert "[lore fired]" in out


def _small_personas(agent):
    from agent.persona.card import CharacterCard
    from agent.persona.store import save_persona

    for slug, name in (("ann", "Ann Reed"), ("bob", "Bob"), ("cy", "Cy")):
        card = CharacterCard.from_fields({"name": name, "description": f"{name} is brief.",
                                          "first_mes": f"{name} waves."}, "t")
        save_persona(card, agent.home.personas / slug)


def _scene_chat(agent, personas, lines, *, resume=False):
    out, err = io.StringIO(), io.StringIO()
    from rich.console import Console

    chat = TerminalChat(agent, out=out, err=Console(file=err, highlight=False))
    chat.open(personas, resume=resume, user_name="Sam")
    return chat, chat.loop(_reader(lines)), out.getvalue(), err.getvalue()


def test_a_scene_in_the_terminal(tiny_agent):
    _small_personas(tiny_agent)
    chat, code, out, err = _scene_chat(tiny_agent, ["ann", "bob"], ["Bob, your view?", "/next ann", "/invite cy",
                                                                    "/scene", "/leave bob", "/history", "/retry",
                                                                    "/scene name crew"])
    assert code == 0 and chat.scene is not None
    assert out.startswith("Ann Reed: Ann Reed waves.\nBob: ")  # the greeting, then Bob answers his name
    assert "Cy (cy)" in out and "strategy: natural" in out and "prompt tokens computed" in out
    assert list(chat.scene.members) == ["ann", "cy"] and "Bob leaves the scene" in err
    assert "Sam: Bob, your view?" in out  # /history names every speaker
    assert "not in a group scene yet" in err  # /retry
    assert tiny_agent.history.scene_named("crew") == chat.scene.id
    resumed, *_ = _scene_chat(tiny_agent, ["cy", "ann"], [], resume=True)
    assert resumed.scene.id == chat.scene.id


def test_invite_turns_a_chat_into_a_scene(tiny_agent):
    _small_personas(tiny_agent)
    out = io.StringIO()
    chat = TerminalChat(tiny_agent, out=out)
    chat.open("ann", resume=False, user_name="Sam")
    chat.turn("hello")
    chat.command("/invite bob")
    assert chat.scene is not None and list(chat.scene.members) == ["ann", "bob"]
    assert [m.name for m in chat.scene.lines[:3]] == ["ann", "", "ann"] and chat.scene.lines[1].content == "hello"
    chat.command("/next bob")
    assert chat.scene.lines[-1].name == "bob"


def test_a_manual_scene_says_who_may_speak(tiny_agent):
    import dataclasses

    from agent.config import SceneConfig

    _small_personas(tiny_agent)
    tiny_agent.config = dataclasses.replace(tiny_agent.config, scene=SceneConfig(strategy="manual"))
    chat, code, out, err = _scene_chat(tiny_agent, ["ann", "bob"], ["hello?", "/next bob"])
    assert "nobody answers on their own" in err and "\nBob: " in out
    assert [m.name for m in chat.scene.lines] == ["ann", "Sam", "bob"]
