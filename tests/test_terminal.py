"""The terminal front-end's loop, driven in-process: commands, streaming and Ctrl-C."""
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


def test_ctrl_c_while_the_prompt_is_fitted_keeps_nothing_and_the_chat_goes_on(tiny_agent, monkeypatch):
    import agent.chat.session as session_module

    fit = session_module.fit_prompt
    interrupted = []

    def interrupt_first_fit(*args, **kwargs):
        if not interrupted:
            interrupted.append(os.kill(os.getpid(), signal.SIGINT))
        return fit(*args, **kwargs)

    monkeypatch.setattr(session_module, "fit_prompt", interrupt_first_fit)
    chat, code, out = _chat(tiny_agent, ["first", "second"])
    assert code == 0
    contents = [m.content for m in chat.session.messages]
    assert "first" not in contents and contents[-2] == "second"


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


def test_a_turn_that_fails_is_one_line_and_the_chat_goes_on(tiny_agent):
    """An LM engine that is down (or a prompt too long for the context) costs the turn, not the chat; the failed
    turn stores nothing and the next one is answered."""
    from agent.models.engine import EngineError

    chat = TerminalChat(tiny_agent, out=io.StringIO(), err=_console())
    chat.open("mara", resume=False, user_name="Ann")
    session, original = chat.session, chat.session.reply
    fail = [EngineError("the LM engine at http://127.0.0.1:9 is down", status=503)]

    def reply(text, cancel=None):
        if fail:
            raise fail.pop()
        yield from original(text, cancel=cancel)

    session.reply = reply
    assert chat.loop(_reader(["first try", "second try"])) == 0
    err = chat.err.file.getvalue()
    assert "no reply: the LM engine at http://127.0.0.1:9 is down" in " ".join(err.split())
    assert [m.content for m in session.messages if m.role == "user"] == ["second try"]
    stored = tiny_agent.history.messages(session.id)
    assert [m.content for m in stored if m.role == "user"] == ["second try"]
    assert chat.out.getvalue().count("Captain Mara Vell: ") == 3  # greeting, the failed line (ended), the reply


def test_a_line_that_is_not_utf8_is_not_sent(tiny_agent):
    chat = TerminalChat(tiny_agent, out=io.StringIO(), err=_console())
    chat.open("mara", resume=False, user_name="Ann")
    assert chat.loop(_reader(["caf\udce9 au lait"])) == 0  # what surrogateescape makes of Latin-1 bytes
    assert "not sent" in chat.err.file.getvalue() and "U+DCE9" in chat.err.file.getvalue()
    assert [m.role for m in chat.session.messages] == ["assistant"]


def test_names_and_card_text_are_printed_escaped(tiny_agent):
    from agent.persona.card import CharacterCard
    from agent.persona.store import save_persona

    card = CharacterCard.from_fields({"name": "Eve\u202e[/bold] \x1b[2J", "first_mes": "Hi\u2067 there\nfriend"}, "t")
    save_persona(card, tiny_agent.home.personas / "eve")
    chat = TerminalChat(tiny_agent, out=io.StringIO(), err=_console())
    chat.open("eve", resume=False, user_name="Ann\u202e")  # rich markup in a name must not break the header
    assert chat.loop(_reader(["/personas", "/history"])) == 0
    out, err = chat.out.getvalue(), chat.err.file.getvalue()
    assert "Eve\\u202e[/bold] \\x1b[2J: Hi\\u2067 there\nfriend" in out
    assert "Eve\\u202e[/bold] \\x1b[2J" in err
    for text in (out, err):
        assert not {"\u202e", "\u2067", "\x1b"} & set(text)


def _console():
    from rich.console import Console

    return Console(file=io.StringIO(), highlight=False, width=200)
