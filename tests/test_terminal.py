"""The terminal front-end's loop, driven in-process: commands, streaming and Ctrl-C."""
import io
import os
import signal

from agent.frontends.terminal import TerminalChat


def _chat(agent, lines):
    out = io.StringIO()
    chat = TerminalChat(agent, out=out)
    chat.open("mara", resume=False, user_name="Ann")
    feed = iter(lines)

    def read(_prompt):
        try:
            return next(feed)
        except StopIteration:
            raise EOFError

    return chat, chat.loop(read), out.getvalue()


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
