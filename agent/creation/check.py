"""Does a created card contradict its idea? A documented, rule-based check (no judge model runs offline).

`contradictions(idea, values)` hands benchmarks/persona_creation.py the reasons a draft goes against its idea:
- era: the idea names a time (a year, a decade, a word such as "medieval" or "Victorian") and the draft's era
  (free text) names another kind of era, or none (eras.py);
- age: the idea says old ("retired", "elderly", "old", "veteran") and the draft is under 45, or young ("young",
  "teenage", "child", "apprentice", "girl", "boy") and the draft is over 30;
- off-topic: none of the idea's content words (4+ letters, or their first 5 letters) is in the description,
  personality, scenario or greeting.
`copied_example(values)` says whether it took names from the prompt's worked example (reported apart).
"""
from __future__ import annotations

import json
import re

from .eras import era_kinds

OLD_WORDS = ("retired", "elderly", "old", "veteran", "aging", "grandmother", "grandfather", "weary")
YOUNG_WORDS = ("young", "teenage", "teen", "child", "kid", "apprentice", "girl", "boy")
OLD_AGES = range(55, 96)  # what an idea's OLD_WORDS allow (the check flags an old character under 45)
YOUNG_AGES = range(8, 27)  # what YOUNG_WORDS allow (the check flags a young one over 30)
STOPWORDS = frozenset("""a an the who whom with that this from into onto over under their there they them her his
    its and but for not never now secretly keeps loves hates wants become been have has after about runs running
    still again""".split())
EXAMPLE_NAMES = ("Pip", "Larkin", "Cloudreach", "Quill", "Bessie", "honey-rye")


def content_words(idea: str) -> list[str]:
    words = re.findall(r"[a-z]+", idea.lower())
    return [w for w in words if len(w) >= 4 and w not in STOPWORDS]


def stated(idea: str) -> dict[tuple, dict]:
    """What the idea itself says of the era and the age, as narrowed leaf schemas (path -> JSON Schema): the
    writer picks among those values only, so an idea naming "1890s" never gets a medieval card. Empty when the
    idea says neither, or says both old and young."""
    from .eras import KINDS

    out: dict[tuple, dict] = {}
    eras = [kind for kind in KINDS if kind in era_kinds(idea)]
    if eras:
        out[("era",)] = {"enum": eras}
    words = set(re.findall(r"[a-z-]+", idea.lower()))
    old, young = bool(words & set(OLD_WORDS)), bool(words & set(YOUNG_WORDS))
    if old != young:
        out[("age",)] = {"type": "integer", "enum": list(OLD_AGES if old else YOUNG_AGES)}
    return out


def contradictions(idea: str, values: dict) -> list[str]:
    """The reasons (era, age, off-topic) a validated draft goes against its idea; empty when none."""
    out = []
    eras = era_kinds(idea)
    if eras and not era_kinds(values["era"]) & eras:
        out.append(f"era: {values['era']!r}, the idea says {'/'.join(sorted(eras))}")
    words = set(re.findall(r"[a-z-]+", idea.lower()))
    if words & set(OLD_WORDS) and values["age"] < 45:
        out.append(f"age: {values['age']}, the idea says old")
    if words & set(YOUNG_WORDS) and values["age"] > 30:
        out.append(f"age: {values['age']}, the idea says young")
    text = " ".join(values[k] for k in ("description", "personality", "scenario", "first_mes")).lower()
    if not any(w in text or w[:5] in text for w in content_words(idea)):
        out.append("off-topic: no word of the idea in the description, personality, scenario or greeting")
    return out


def copied_example(values: dict) -> bool:
    """Whether the draft reuses a name from the worked example (prompts.EXAMPLE)."""
    text = json.dumps(values, ensure_ascii=False)
    return any(re.search(rf"\b{re.escape(name)}\b", text) for name in EXAMPLE_NAMES)
