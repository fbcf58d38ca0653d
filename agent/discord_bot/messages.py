"""Discord's 2,000-character message limit: a long reply is cut at sentence boundaries into postable chunks.

`split_message` hands the poster chunks that each fit one Discord message.
"""
from __future__ import annotations

from ..speech.text import SentenceSplitter

DISCORD_LIMIT = 2000  # characters in one message's content


def split_message(text: str, limit: int = DISCORD_LIMIT) -> list[str]:
    """Text -> chunks of at most `limit` characters, cut between sentences (paragraph breaks kept where possible)."""
    text = text.strip()
    if len(text) <= limit:
        return [text] if text else []
    chunks: list[str] = []
    current = ""
    for paragraph in text.split("\n"):
        splitter = SentenceSplitter(min_chars=0, max_chars=min(limit, 1000))
        sentences = splitter.feed(paragraph) + splitter.flush() or [""]
        for i, sentence in enumerate(sentences):
            joiner = ("\n" if i == 0 else " ") if current else ""
            if len(current) + len(joiner) + len(sentence) <= limit:
                current += joiner + sentence
                continue
            if current:
                chunks.append(current)
            while len(sentence) > limit:  # an unbreakable block (a code fence): cut it hard
                chunks.append(sentence[:limit])
                sentence = sentence[limit:]
            current = sentence
    if current.strip():
        chunks.append(current)
    return [c.strip() for c in chunks if c.strip()]
