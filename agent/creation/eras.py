"""Which kind of era a text names: years, decades and words such as "medieval", "Victorian" or "far future".

`era_kinds` reads an idea (for check.py) or a draft's era (one of `KINDS`, the schema's enum; for voice.py).
A free-text era in the idea's own words was tried and measured worse on the 135M default (docs/persona_creation.md).
"""
from __future__ import annotations

import re

KINDS = ("ancient", "medieval", "1500s-1700s", "1800s", "1900s", "present day", "future", "fantasy")
ERA_WORDS = {  # a word -> the kinds of era it names
    "ancient": {"ancient"}, "antiquity": {"ancient"}, "roman": {"ancient"}, "rome": {"ancient"},
    "greece": {"ancient"}, "greek": {"ancient"}, "persia": {"ancient"}, "persian": {"ancient"},
    "egypt": {"ancient"}, "egyptian": {"ancient"}, "bronze": {"ancient"}, "viking": {"medieval", "ancient"},
    "vikings": {"medieval", "ancient"}, "medieval": {"medieval"}, "middle": {"medieval"}, "knight": {"medieval"},
    "samurai": {"1500s-1700s", "medieval"}, "renaissance": {"1500s-1700s"}, "victorian": {"1800s"},
    "regency": {"1800s"}, "future": {"future"}, "futuristic": {"future"}, "starship": {"future"},
    "space": {"future"}, "cyborg": {"future"}, "cyberpunk": {"future"}, "megacity": {"future"},
    "modern": {"present day"}, "modern-day": {"present day"}, "present": {"present day"}, "today": {"present day"},
    "contemporary": {"present day"}, "fantasy": {"fantasy", "medieval"}, "mythic": {"fantasy", "ancient"},
}
_YEAR = re.compile(r"\b(\d{3,4})s?\b")


def year_kind(year: int) -> str:
    if year < 500:
        return "ancient"
    if year < 1500:
        return "medieval"
    if year < 1800:
        return "1500s-1700s"
    if year < 1900:
        return "1800s"
    if year < 2000:
        return "1900s"
    return "present day" if year <= 2035 else "future"


def era_kinds(text: str) -> set[str]:
    """The kinds of era `text` names ({"1800s"} for "1890s Maine"); empty when it names no time."""
    years = [int(y) for y in _YEAR.findall(text)]
    if years:
        return {year_kind(years[0])}
    found: set[str] = set()
    for word in re.findall(r"[a-z-]+", text.lower()):
        found |= ERA_WORDS.get(word, set())
    return found
