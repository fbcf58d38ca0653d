"""Small text helpers for composed cards: numbers in words, articles, capitals, slugs, wrapping, filling templates."""
from __future__ import annotations

import re
import textwrap
import unicodedata

NUMBERS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
           "sixteen seventeen eighteen nineteen").split()
TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_words(n: int) -> str:
    if n < 20:
        return NUMBERS[n]
    if n < 100:
        return TENS[n // 10] + ("" if n % 10 == 0 else "-" + NUMBERS[n % 10])
    rest = n % 100
    return NUMBERS[n // 100] + " hundred" + ("" if rest == 0 else " and " + number_words(rest))


def article(phrase: str) -> str:
    """'a potter', 'an eleven-year-old', 'an android'."""
    low = phrase.lower()
    vowel = low[:1] in "aeiou" and not low.startswith(("uni", "one", "use", "eu"))
    return ("an " if vowel or low.startswith(("hour", "honest", "heir")) else "a ") + phrase


def cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def slugify(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")


def wrap(text: str) -> str:
    """Re-wraps prose at 100 columns, as the shipped personas are written."""
    return textwrap.fill(" ".join(text.split()), width=100, break_on_hyphens=False, break_long_words=False)


def words(card: dict) -> int:
    return sum(len(card[k].split()) for k in ("description", "personality", "scenario"))


PRONOUNS = {
    "f": {"subj": "she", "obj": "her", "pos": "her"},
    "m": {"subj": "he", "obj": "him", "pos": "his"},
    "n": {"subj": "it", "obj": "it", "pos": "its"},
    "1": {"subj": "I", "obj": "me", "pos": "my"},
}


def fill(template: str, fields: dict) -> str:
    """str.format with the fields, twice, so a field may itself hold {pos} and friends."""
    out = template.format(**fields)
    return out.format(**fields) if "{" in out else out
