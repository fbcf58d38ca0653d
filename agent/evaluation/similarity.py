"""Similarity of replies to a card for the drift metric and the break detector's optional floor (MiniLM cosines)."""
from __future__ import annotations

from typing import Sequence

from ..models.embedder import Embedder


def cosine_to(embed: Embedder, texts: Sequence[str], reference: str) -> list[float]:
    """Cosine similarity of each text to `reference`; an empty text scores 0."""
    if not texts:
        return []
    vectors = embed([reference, *texts])  # (1 + n, d), unit rows
    scores = (vectors[1:] @ vectors[0]).tolist()  # (n,)
    return [score if text.strip() else 0.0 for score, text in zip(scores, texts)]
