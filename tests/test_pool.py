"""agent/chat/pool.py: the bounded pool of open chat sessions the server and the Discord bot share."""
import pytest

from agent.chat.pool import SessionPool


class Decoder:
    def __init__(self, n):
        self.ids = list(range(n))


class Session:
    def __init__(self, cached=0):
        self.decoder = Decoder(cached)
        self.closed = 0

    @property
    def cached_tokens(self):
        return len(self.decoder.ids)

    def close(self):
        self.closed += 1
        self.decoder.ids = []


def test_least_recently_used_sessions_close_past_the_count():
    pool = SessionPool(max_sessions=2)
    a, b, c = Session(), Session(), Session()
    assert pool.open("a", lambda: a) is a and pool.open("b", lambda: b) is b
    assert pool.get("a") is a  # a is now the most recently used
    assert pool.open("c", lambda: c) is c
    assert "b" not in pool and b.closed == 1 and a.closed == 0 and len(pool) == 2 and pool.closed == 1
    assert pool.open("a", lambda: pytest.fail("a is open")) is a


def test_the_token_bound_closes_old_sessions_but_never_the_newest():
    pool = SessionPool(max_sessions=10, max_cached_tokens=100)
    old, new = Session(60), Session(60)
    pool.open("old", lambda: old)
    pool.open("new", lambda: new)
    assert "old" not in pool and old.closed == 1 and pool.cached_tokens() == 60
    huge = Session(500)
    pool.open("huge", lambda: huge)
    assert list(pool._open) == ["huge"] and huge.closed == 0


def test_drop_closes_and_the_next_open_makes_a_new_one():
    pool = SessionPool()
    first = pool.open("k", Session)
    pool.drop("k")
    pool.drop("missing")  # no error
    assert first.closed == 1 and pool.open("k", Session) is not first


def test_bounds_are_checked():
    with pytest.raises(ValueError, match="max_sessions"):
        SessionPool(max_sessions=0)


def test_a_closed_session_reopens_from_its_history(tiny_agent):
    pool = SessionPool(max_sessions=1)
    s = pool.open("one", lambda: tiny_agent.open_session("mara", channel="one"))
    "".join(s.reply("the password is kraken"))
    assert s.decoder.ids
    pool.open("two", lambda: tiny_agent.open_session("mara", channel="two"))
    assert "one" not in pool and not s.decoder.ids  # its KV cache is freed
    again = pool.open("one", lambda: tiny_agent.open_session("mara", resume=True, channel="one"))
    assert again.id == s.id and again.messages[-2].content == "the password is kraken"
    assert "".join(again.reply("and now?"))  # and it goes on, recomputing its prompt
