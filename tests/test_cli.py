"""The `personae` command as a user runs it, on the tiny config: its output and exit codes.

The flows run `agent.cli.main` in this process (argv, stdin, stdout and stderr swapped, the exit code read
from SystemExit), which is what `python -m agent` runs; two tests start the real command as a subprocess,
so the entry point, the import time and a fresh interpreter stay covered.
"""
import io
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "configs" / "tiny.yaml")


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str


def _home_args(args, home):
    return ["--home", str(home)] if home and args and args[0] in ("chat", "prompt") else []


def personae(*args, input=None, home=None) -> Run:
    """`personae ARGS` with `input` on stdin, in this process."""
    from agent.cli import main

    out, err = io.StringIO(), io.StringIO()
    saved = sys.argv, sys.stdin, sys.stdout, sys.stderr
    sys.argv = ["personae", *args, *_home_args(args, home)]
    sys.stdin, sys.stdout, sys.stderr = io.StringIO(input or ""), out, err
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv, sys.stdin, sys.stdout, sys.stderr = saved
    return Run(code, out.getvalue(), err.getvalue())


def personae_process(*args, input=None, home=None, timeout=240) -> Run:
    """`python -m agent ARGS` as a subprocess."""
    cmd = [sys.executable, "-m", "agent", *args, *_home_args(args, home)]
    done = subprocess.run(cmd, input=input, capture_output=True, text=True, cwd=REPO, timeout=timeout)
    return Run(done.returncode, done.stdout, done.stderr)


def test_chat_greets_streams_and_quits_as_a_subprocess(tmp_path):
    r = personae_process("chat", "-c", TINY, "-p", "hale", input="Good morning!\n/history\n/quit\n", home=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "Professor Edmund Hale: *" in r.stdout  # the greeting
    assert "User: Good morning!" in r.stdout  # /history shows the turn
    assert (tmp_path / "sessions.db").exists()


def test_chat_resume_continues_the_conversation(tmp_path):
    personae("chat", "-c", TINY, input="the password is kraken\n", home=tmp_path)
    r = personae("chat", "-c", TINY, "--resume", input="/history\n", home=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("the password is kraken") >= 1


def test_chat_commands(tmp_path):
    r = personae("chat", "-c", TINY, input="/retry\nhi\n/retry\n/persona pixel\n/persona nobody\n/bogus\n/reset\n",
                 home=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "no reply to retry" in r.stderr
    assert "Pixel" in r.stdout
    assert "no persona named 'nobody'" in r.stderr and "unknown command /bogus" in r.stderr


def test_prompt_shows_the_exact_prompt_with_counts(tmp_path):
    r = personae("prompt", "-c", TINY, "-p", "mara", "-m", "Where are we?", home=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "[system:" in r.stdout and "[total:" in r.stdout
    assert "<|im_start|>user\nWhere are we?<|im_end|>" in r.stdout
    assert "Captain Mara Vell" in r.stdout


@pytest.mark.parametrize("args, code, words", [
    (["chat", "-c", TINY, "-p", "nobody"], 2, ["nobody", "mara"]),
    (["chat", "-s", "chat.temprature=1"], 2, ["temprature"]),
    (["chat", "-c", "/no/such/config.yaml"], 2, ["/no/such/config.yaml"]),
    (["chat", "-s", "lm.name_or_path=/no/such/model.gguf"], 3, ["/no/such/model.gguf"]),
    (["persona", "import", "/no/such/card.png"], 2, ["/no/such/card.png"]),
])
def test_bad_input_gives_one_clear_line_and_an_exit_code(args, code, words, tmp_path):
    r = personae(*args, input="", home=tmp_path)
    assert r.returncode == code, (r.stdout, r.stderr)
    assert all(w in r.stderr for w in words), r.stderr
    assert "Traceback" not in r.stderr


def test_a_missing_model_fails_fast_as_a_subprocess(tmp_path):
    start = time.perf_counter()
    r = personae_process("chat", "-s", "lm.name_or_path=/no/such/model.gguf", input="", home=tmp_path)
    assert r.returncode == 3 and "/no/such/model.gguf" in r.stderr and "Traceback" not in r.stderr
    assert time.perf_counter() - start < 60


def test_persona_import_export_round_trip(tmp_path):
    home = tmp_path / "home"
    out = tmp_path / "mara.json"
    r = personae("persona", "export", "mara", "-f", "json", "-o", str(out), "--home", str(home))
    assert r.returncode == 0, r.stderr
    card = json.loads(out.read_text())
    assert card["spec"] == "chara_card_v2" and card["data"]["name"] == "Captain Mara Vell"
    card["data"]["name"] = "Mara Two"
    out.write_text(json.dumps(card))
    r = personae("persona", "import", str(out), "--home", str(home))
    assert r.returncode == 0, r.stderr
    listing = personae("persona", "list", "--home", str(home)).stdout
    assert "mara-two" in listing and "hale" in listing
    assert personae("persona", "import", str(out), "--home", str(home)).returncode == 2  # exists already


def test_corrupt_card_import_touches_nothing(tmp_path):
    home = tmp_path / "home"
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    r = personae("persona", "import", str(bad), "--home", str(home))
    assert r.returncode == 2 and "bad.png" in r.stderr
    assert not (home / "personas").exists() or not any((home / "personas").iterdir())


def test_speak_writes_a_wav_and_transcribe_reads_errors(tmp_path):
    pytest.importorskip("piper")
    out = tmp_path / "hi.wav"
    r = personae("speak", "-p", "hale", "*adjusts spectacles* Good morning, {{user}}.", "-o", str(out),
                 "--home", str(tmp_path / "home"))
    assert r.returncode == 0, r.stderr
    from agent.speech.audio import load_audio
    assert 0.5 < len(load_audio(out, max_seconds=30)) / 16000 < 6
    bad = tmp_path / "notes.wav"
    bad.write_text("this is not audio")
    r = personae("transcribe", str(bad), "-c", TINY, "--home", str(tmp_path / "home"))
    assert r.returncode == 2 and "notes.wav" in r.stderr and "Traceback" not in r.stderr
    r = personae("speak", "-p", "nobody", "hi", "-o", str(out), "--home", str(tmp_path / "home"))
    assert r.returncode == 2 and "nobody" in r.stderr


def test_lore_import_attach_list_show_and_prompt_explain(tmp_path):
    world = tmp_path / "world.json"
    world.write_text(json.dumps({"entries": {"0": {"uid": 0, "key": ["kraken"], "comment": "Kraken",
                                                   "content": "The kraken sleeps under Tortuga.", "order": 100,
                                                   "position": 0}}}))
    home = tmp_path / "home"
    r = personae("lore", "import", str(world), "--name", "sea", "--persona", "mara", "--home", str(home))
    assert r.returncode == 0, r.stderr
    assert "1 entries" in r.stdout and "attached sea to persona mara" in r.stdout
    r = personae("lore", "list", "--home", str(home))
    assert "sea" in r.stdout and "mara" in r.stdout
    r = personae("lore", "show", "sea", "--home", str(home))
    assert "Kraken: keys ['kraken']" in r.stdout
    r = personae("prompt", "-c", TINY, "-p", "mara", "-m", "Is the kraken real?", home=home)
    assert r.returncode == 0, r.stderr
    assert "[lore fired] Kraken (sea" in r.stdout and "The kraken sleeps under Tortuga." in r.stdout
    r = personae("lore", "import", str(world), "--name", "sea", "--home", str(home))
    assert r.returncode == 2 and "already exists" in r.stderr
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    r = personae("lore", "import", str(broken), "--home", str(home))
    assert r.returncode == 2 and "broken.json" in r.stderr
    r = personae("lore", "attach", "nothing", "-p", "mara", "--home", str(home))
    assert r.returncode == 2 and "no lorebook named 'nothing'" in r.stderr


@pytest.mark.parametrize("debug", ["", "1"])
def test_an_error_on_exit_never_prints_the_discord_token(tmp_path, monkeypatch, debug):
    """The last-resort line, and the traceback PERSONAE_DEBUG asks for, come out with the token cut."""
    import agent.discord_bot
    from agent import logs

    secret = "MTAx.secret-token-value.xyz"
    monkeypatch.setattr(logs, "_SECRETS", set())
    monkeypatch.setenv("DISCORD_TOKEN", secret)
    monkeypatch.setenv("PERSONAE_DEBUG", debug)

    def crash(agent):
        raise RuntimeError(f"the gateway closed on Bot {secret}")
    monkeypatch.setattr(agent.discord_bot, "run_bot", crash)
    r = personae("discord", "-c", TINY, "--home", str(tmp_path / "home"))
    assert r.returncode == 1 and "the gateway closed on Bot [REDACTED]" in r.stderr
    assert secret not in r.stderr
    assert ("Traceback" in r.stderr) == bool(debug)


def test_a_card_with_a_lone_surrogate_is_refused_naming_the_field(tmp_path):
    home = tmp_path / "home"
    card = tmp_path / "bad.json"
    card.write_text(json.dumps({"spec": "chara_card_v2", "data": {"name": "Mara\ud800"}}))  # JSON's "\ud800"
    r = personae("persona", "import", str(card), "--home", str(home))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "bad.json" in r.stderr and "'data.name'" in r.stderr and "U+D800" in r.stderr
    assert not (home / "personas").exists() or not any((home / "personas").iterdir())


def test_arguments_that_are_not_utf8_are_refused(tmp_path):
    r = personae("prompt", "-c", TINY, "-p", "mara", "-m", "hi \udcff", home=tmp_path)  # surrogateescape'd argv
    assert r.returncode == 2 and "argument 7" in r.stderr and "U+DCFF" in r.stderr, r.stderr


def test_a_turn_that_cannot_be_answered_is_one_line_and_the_chat_goes_on(tmp_path):
    """`printf 'Hello\\n' | personae chat -s chat.context_tokens=40`: the prompt can't fit, the chat says why,
    stores nothing of the turn, and ends 0 at EOF."""
    r = personae("chat", "-c", TINY, "-s", "chat.context_tokens=40", input="Hello kraken\n/history\n", home=tmp_path)
    assert r.returncode == 0, r.stderr
    error = " ".join(r.stderr.split())  # rich wraps long lines
    assert "no reply:" in error and "chat.context_tokens" in error and "Traceback" not in error
    assert "kraken" not in r.stdout  # /history: the failed turn left nothing
    r = personae("chat", "-c", TINY, "-s", "chat.context_tokens=20", input="Hello kraken\n", home=tmp_path)
    assert r.returncode == 2 and "chat.context_tokens" in r.stderr  # a config that can't start still fails at once


def test_names_with_control_and_bidi_characters_are_escaped(tmp_path):
    home = tmp_path / "home"
    card = tmp_path / "evil.json"
    card.write_text(json.dumps({"name": "Eve\u202eexe.txt\x1b[2J", "description": "Line\u2066 one\nline two"}))
    r = personae("persona", "import", str(card), "--name", "evil", "--home", str(home))
    assert r.returncode == 0, r.stderr
    listing = personae("persona", "list", "--home", str(home)).stdout
    shown = personae("persona", "show", "evil", "--home", str(home)).stdout  # YAML writes ESC as \e itself
    for out in (r.stdout, listing, shown):
        assert "Eve\\u202eexe.txt" in out and "\u202e" not in out and "\x1b" not in out, out
    assert "Eve\\u202eexe.txt\\x1b[2J" in r.stdout + listing
    assert "Line\\u2066 one" in shown and "\u2066" not in shown
    prompt = personae("prompt", "-c", TINY, "-p", "evil", "-m", "hi", home=home).stdout
    assert "Eve\\u202eexe.txt" in prompt and "\u202e" not in prompt and "\u2066" not in prompt
