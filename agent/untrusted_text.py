"""Text from outside (requests, card files, the terminal, Discord) checked before it is kept or shown.

`lone_surrogate` finds text Python can hold but not encode (JSON's "\\ud800"), so each boundary refuses it
naming the field; `for_terminal` escapes control and bidi characters before names and card text are printed.
"""
from __future__ import annotations

import re
from typing import Any, Optional

# Characters that reorder or hide what follows them on a terminal line: the bidi embeddings, overrides and
# isolates (U+202E turns "gpj.exe" around), the bidi marks, and the line/paragraph separators.
_BIDI = r"\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029"
_UNSAFE = re.compile(rf"[\x00-\x08\x0b-\x1f\x7f-\x9f{_BIDI}\ud800-\udfff]")  # keeps \t and \n
_UNSAFE_IN_LINE = re.compile(rf"[\x00-\x1f\x7f-\x9f{_BIDI}\ud800-\udfff]")


def lone_surrogate(value: Any, path: str = "") -> Optional[tuple[str, str]]:
    """Where `value` (text, or mappings and lists of it; keys too) holds a lone surrogate, and which:
    ("data.alternate_greetings[1]", "\\ud800"), or None when all of it is valid Unicode."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            return path, value[e.start]
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            shown = for_terminal(str(key))  # the path goes into error messages
            where = f"{path}.{shown}" if path else shown
            found = lone_surrogate(key, where) or lone_surrogate(item, where)
            if found:
                return found
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            found = lone_surrogate(item, f"{path}[{i}]")
            if found:
                return found
    return None


def surrogate_problem(char: str) -> str:
    """Why such text is refused, for an error message (the character itself can't be printed)."""
    return f"holds a lone surrogate (U+{ord(char):04X}), which is not valid Unicode text"


def without_lone_surrogates(text: str) -> str:
    """`text` with each lone surrogate replaced by U+FFFD, for sources nobody can be asked to resend."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def for_terminal(text: str, *, lines: bool = False) -> str:
    """`text` safe to print: control characters (escape sequences included), bidi controls and lone
    surrogates written as Python escapes (\\x1b, \\u202e); tabs and line breaks kept when `lines`."""
    unsafe = _UNSAFE if lines else _UNSAFE_IN_LINE
    return unsafe.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)
