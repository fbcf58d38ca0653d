"""speakable and SentenceSplitter: what a voice says, and sentences cut the same however the text streams in."""
from __future__ import annotations

import random

import pytest

from agent.speech.text import SentenceSplitter, speakable

TRICKY = (
    "Aye. The tide turns at dawn, Mr. Smith, so be ready! Dr. J. R. R. Tolkien wrote it, e.g. the Hobbit, "
    "in 1937... or was it 3.14 years ago? \"Stop!\" she cried. *She walks to the rail. Then she sits.* "
    "We sail at ten, etc. Then home (we hope.) Mrs. Hale and St. Clair agree, i.e. we go.\n\n"
    "A new paragraph without an end mark\nShort.\nWait... what?! I see it now, vs. the old map. Is it \"real?\" "
    "Yes. It cost $4.50 in 2024, not 3.5 million! The end"
)

EXPECTED = [
    "Aye. The tide turns at dawn, Mr. Smith, so be ready!",
    "Dr. J. R. R. Tolkien wrote it, e.g. the Hobbit, in 1937... or was it 3.14 years ago?",
    "\"Stop!\" she cried. *She walks to the rail.*",
    "*Then she sits.* We sail at ten, etc.",
    "Then home (we hope.)",
    "Mrs. Hale and St. Clair agree, i.e. we go.",
    "A new paragraph without an end mark",
    "Short.",
    "Wait... what?! I see it now, vs. the old map.",
    "Is it \"real?\" Yes. It cost $4.50 in 2024, not 3.5 million!",
    "The end",
]


def split_whole(text: str, **kwargs) -> list[str]:
    splitter = SentenceSplitter(**kwargs)
    return splitter.feed(text) + splitter.flush()


def split_chunks(text: str, sizes, **kwargs) -> list[str]:
    splitter, out, at = SentenceSplitter(**kwargs), [], 0
    for size in sizes:
        out += splitter.feed(text[at:at + size])
        at += size
    return out + splitter.feed(text[at:]) + splitter.flush()


def test_splitter_handles_abbreviations_initials_decimals_ellipses_quotes_and_paragraphs():
    assert split_whole(TRICKY) == EXPECTED


def test_splitter_gives_the_same_sentences_however_the_text_is_streamed():
    by_char = split_chunks(TRICKY, [1] * len(TRICKY))
    assert by_char == EXPECTED
    rng = random.Random(7)
    for _ in range(30):
        sizes = [rng.randint(1, 12) for _ in range(len(TRICKY) // 3)]
        assert split_chunks(TRICKY, sizes) == EXPECTED


def test_feed_returns_a_sentence_as_soon_as_the_next_word_starts():
    splitter = SentenceSplitter()
    assert splitter.feed("The tide turns at dawn, captain.") == []  # could still be "captain.)" or "...": wait
    assert splitter.feed(" W") == ["The tide turns at dawn, captain."]
    assert splitter.feed("e sail") == []
    assert splitter.flush() == ["We sail"]
    assert splitter.flush() == []  # reset: ready for the next reply


def test_short_fragments_merge_with_the_next_sentence_but_min_chars_is_configurable():
    text = "Aye. No. The tide turns at dawn. Go."
    assert split_whole(text) == ["Aye. No. The tide turns at dawn.", "Go."]
    assert split_whole(text, min_chars=0) == ["Aye.", "No.", "The tide turns at dawn.", "Go."]


def test_a_run_on_sentence_is_cut_at_a_clause_break():
    text = ", ".join(["the rope and the sail and the mast"] * 20) + "."
    sentences = split_whole(text, max_chars=120)
    assert len(sentences) > 3 and all(len(s) <= 120 for s in sentences)
    assert " ".join(sentences) == text


def test_no_sentence_ends_inside_a_code_fence_or_ooc_aside():
    text = "Here it is:\n```\nx = 1. y = 2.\nprint(x)\n```\n((OOC: Sorry. Brb.)) Back to it now."
    sentences = split_whole(text, min_chars=0)
    assert sentences == ["Here it is:", "```\nx = 1. y = 2.\nprint(x)\n```", "((OOC: Sorry. Brb.)) Back to it now."]


@pytest.mark.parametrize("text, spoken", [
    ("*waves* Hi, {{user}}! I'm {{char}}.", "Hi, Ann! I'm Mara."),
    ("**Listen** to me. *She sighs, looking away.* Fine.", "Listen to me. Fine."),
    ("I *sigh*, fine.", "I, fine."),
    ("*nods*", ""),
    ("```python\nprint('x')\n```\nThat's the code.", "That's the code."),
    ("Unclosed fence ```\ncode", "Unclosed fence"),
    ("((OOC: brb)) Back to the story. [OOC: pause] (OOC: sorry) Aye.", "Back to the story. Aye."),
    ("<i>Whispers</i> &amp; then <b>shouts</b><br/>", "Whispers & then shouts"),
    ("See https://example.org/a?b=1. Or www.maps.com!", "See link. Or link!"),
    ("Check [the map](http://x.y/z) and ![img](a.png) now", "Check the map and now"),
    ("Aye, captain! 🏴\u200d☠️⚓👍🏽", "Aye, captain!"),
    ("# Orders\n- hoist the sail\n- *grins* weigh anchor\n> quoted", "Orders. hoist the sail. weigh anchor. quoted"),
    ("Use `grep` _quietly_ ~~now~~, at 20°C.", "Use grep quietly now, at 20°C."),
    ("   \n\t ", ""),
    ("... !!", ""),
])
def test_speakable_keeps_only_what_a_voice_should_say(text, spoken):
    assert speakable(text, char="Mara", user="Ann") == spoken


def test_speakable_reads_actions_when_asked():
    text = "*waves* Hi there. *She grins.*"
    assert speakable(text, char="M", user="A") == "Hi there."
    assert speakable(text, char="M", user="A", read_actions=True) == "waves Hi there. She grins."


def test_split_then_speakable_drops_an_action_that_spans_sentences():
    text = "Welcome aboard, sailor. *She walks to the rail. Then she looks back at you.* Tell me your name."
    spoken = [speakable(s, char="M", user="A") for s in split_whole(text)]
    assert [s for s in spoken if s] == ["Welcome aboard, sailor.", "Tell me your name."]


def test_list_bullets_are_not_taken_for_actions():
    sentences = split_whole("Orders:\r\n* hoist the sail\n* *grins* weigh anchor\nGo.", min_chars=0)
    assert sentences == ["Orders:", "* hoist the sail", "* *grins* weigh anchor", "Go."]
    assert [speakable(s, char="M", user="A") for s in sentences] == ["Orders:", "hoist the sail", "weigh anchor", "Go."]
