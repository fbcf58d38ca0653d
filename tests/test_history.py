import textwrap
from pathlib import Path

import pytest

from agent.chat.history import HistoryStore
from agent.chat.prompt import Message

from conftest import killed_midway

REPO = Path(__file__).resolve().parents[1]


def test_sessions_persist_across_store_instances(tmp_path):
    db = tmp_path / "s.db"
    store = HistoryStore(db)
    sid = store.create_session("mara", "Ahoy.")
    store.append_turn(sid, "hi", "Hello, sailor.")
    again = HistoryStore(db)
    assert again.messages(sid) == [Message("assistant", "Ahoy."), Message("user", "hi"),
                                   Message("assistant", "Hello, sailor.")]
    assert again.latest_session("mara") == sid and again.latest_session("hale") is None


def test_latest_session_by_persona_and_channel(tmp_path):
    store = HistoryStore(tmp_path / "s.db")
    a = store.create_session("mara", "", channel="c1")
    b = store.create_session("mara", "", channel="c2")
    terminal = store.create_session("mara", "")
    store.append_turn(a, "x", "y")  # a becomes the most recently updated
    assert store.latest_session("mara", channel="c1") == a
    assert store.latest_session("mara", channel="c2") == b
    assert store.latest_session("mara") == terminal  # the terminal never resumes an API or Discord session
    assert store.session_persona(b) == "mara"


def test_replace_last_reply(tmp_path):
    store = HistoryStore(tmp_path / "s.db")
    sid = store.create_session("mara", "Ahoy.")
    store.append_turn(sid, "one", "first")
    store.append_turn(sid, "two", "second")
    store.replace_last_reply(sid, "second, again")
    assert [m.content for m in store.messages(sid)] == ["Ahoy.", "one", "first", "two", "second, again"]


def test_remove_last_deletes_only_that_sessions_newest_messages(tmp_path):
    store = HistoryStore(tmp_path / "h.db")
    sid, other = store.create_session("mara", "Ahoy."), store.create_session("mara", "Ahoy.")
    store.append_turn(sid, "hi", "hello")
    store.append_turn(other, "yo", "hey")
    store.append_turn(sid, "bye", "farew")
    store.remove_last(sid, 2)  # its client received none of "farew"
    assert [m.content for m in store.messages(sid)] == ["Ahoy.", "hi", "hello"]
    assert [m.content for m in store.messages(other)] == ["Ahoy.", "yo", "hey"]

def test_wal_mode(tmp_path):
    import sqlite3

    HistoryStore(tmp_path / "s.db")
    assert sqlite3.connect(tmp_path / "s.db").execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_killing_the_process_mid_reply_loses_no_earlier_turn(tmp_path):
    """A child process completes one turn, then is SIGKILLed while streaming the second."""
    script = textwrap.dedent(f"""
        import os, signal
        from agent.agent import Agent
        from agent.config import load_config
        agent = Agent(load_config({str(REPO / 'configs/tiny.yaml')!r}, ["chat.max_new_tokens=40"]), home={str(tmp_path)!r})
        s = agent.open_session("mara")
        "".join(s.reply("first message"))
        print(s.id, flush=True)
        for piece in s.reply("second message"):  # the guard hands out a sentence at a time: the first will do
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    sid = int(killed_midway(script).split()[0])
    messages = HistoryStore(tmp_path / "sessions.db").messages(sid)
    assert [m.role for m in messages] == ["assistant", "user", "assistant"]
    assert messages[1].content == "first message"


def test_fork_session_copies_persona_and_channel_and_leaves_the_old_one(tmp_path):
    import pytest

    from agent.chat.history import UnsavedHistory

    store = HistoryStore(tmp_path / "s.db")
    sid = store.create_session("mara", "Ahoy.", channel="api:x")
    store.append_turn(sid, "one", "first")
    new = store.fork_session(sid, "Hello.", [("a", "b"), ("c", "d")])
    assert new != sid and store.session_persona(new) == "mara"
    assert [m.content for m in store.messages(new)] == ["Hello.", "a", "b", "c", "d"]
    assert [m.content for m in store.messages(sid)] == ["Ahoy.", "one", "first"]
    assert store.latest_session("mara", channel="api:x") == new
    with pytest.raises(KeyError, match="no session 999"):
        store.fork_session(999, "", [])
    with pytest.raises(ValueError, match="stateless"):
        UnsavedHistory().fork_session(1, "", [])


def test_a_regenerated_reply_keeps_its_alternatives_and_shows_the_one_chosen(tmp_path):
    store = HistoryStore(tmp_path / "s.db")
    sid = store.create_session("mara", "Ahoy.")
    store.append_turn(sid, "hi", "first", guard='{"retried": 0}')
    assert store.swipes(sid) == ([], 0)
    assert store.add_swipe(sid, "second", guard='{"retried": 1}') == 1
    assert store.add_swipe(sid, "third") == 2
    assert store.swipes(sid) == (["first", "second", "third"], 2)
    assert store.messages(sid)[-1].content == "third" and len(store.messages(sid)) == 3  # replaced, not added
    assert store.choose_swipe(sid, 1) == "second"
    assert store.messages(sid)[-1].content == "second" and store.guard_records(sid)[-1] == '{"retried": 1}'
    store.replace_last_reply(sid, "second, cut")  # a stop string or a client that left cut the one shown
    assert store.swipes(sid) == (["first", "second, cut", "third"], 1)
    store.edit_last(sid, "second, edited")
    assert store.swipes(sid) == (["first", "second, edited", "third"], 1)
    store.drop_swipe(sid)  # its client received none of it
    assert store.swipes(sid) == (["first", "third"], 1) and store.messages(sid)[-1].content == "third"
    with pytest.raises(IndexError):
        store.choose_swipe(sid, 2)
    store.append_turn(sid, "next", "reply")
    assert store.swipes(sid) == ([], 0)  # only the newest reply's alternatives are offered
    store.remove_last(sid, 2)
    assert store.swipes(sid) == (["first", "third"], 1)


def test_deleting_a_reply_deletes_its_alternatives_and_edit_last_takes_either_role(tmp_path):
    import sqlite3

    store = HistoryStore(tmp_path / "s.db")
    sid = store.create_session("mara", "Ahoy.")
    store.append_turn(sid, "hi", "first")
    store.add_swipe(sid, "second")
    store.remove_last(sid, 1)
    assert sqlite3.connect(tmp_path / "s.db").execute("SELECT COUNT(*) FROM swipes").fetchone()[0] == 0
    store.edit_last(sid, "hi there")
    assert store.messages(sid)[-1] == Message("user", "hi there") and store.swipes(sid) == ([], 0)


def test_a_database_from_before_swipes_gains_them_when_opened(tmp_path):
    import sqlite3

    db = sqlite3.connect(tmp_path / "old.db")
    db.executescript("""
        CREATE TABLE sessions (id INTEGER PRIMARY KEY, persona TEXT NOT NULL, channel TEXT, created REAL NOT NULL,
                               updated REAL NOT NULL);
        CREATE TABLE messages (id INTEGER PRIMARY KEY, session_id INTEGER NOT NULL REFERENCES sessions(id)
                               ON DELETE CASCADE, role TEXT NOT NULL, content TEXT NOT NULL, created REAL NOT NULL,
                               speaker TEXT, guard TEXT);
        INSERT INTO sessions VALUES (1, 'mara', NULL, 0, 0);
        INSERT INTO messages (session_id, role, content, created) VALUES (1, 'assistant', 'Ahoy.', 0),
                                                                        (1, 'user', 'hi', 0), (1, 'assistant', 'old', 0);
    """)
    db.close()
    store = HistoryStore(tmp_path / "old.db")
    assert store.swipes(1) == ([], 0)
    store.add_swipe(1, "new")
    assert store.swipes(1) == (["old", "new"], 1) and store.messages(1)[-1].content == "new"
