"""Card text macros: {{char}}/{{user}} (and legacy <BOT>/<USER>) substitution, <START> example splitting.

The prompt builder hands card text through `substitute` before the model sees it.
"""
from __future__ import annotations

import re

_MACRO = re.compile(r"\{\{\s*(char|user)\s*\}\}|<(bot|char|user)>", re.IGNORECASE)
_START = re.compile(r"<start>", re.IGNORECASE)


def substitute(text: str, *, char: str, user: str) -> str:
    """Replaces {{char}}, {{user}}, <BOT>, <CHAR> and <USER> in any letter case.

    One pass, so a name that itself contains "{{user}}" is not expanded again.
    """
    def replace(match: re.Match) -> str:
        word = (match.group(1) or match.group(2)).lower()
        return user if word == "user" else char
    return _MACRO.sub(replace, text)


def split_examples(mes_example: str) -> list[str]:
    """Splits example dialogue on <START> lines into stripped, non-empty blocks.

    "<START>\\n{{user}}: hi\\n<START>\\n{{char}}: hey" -> ["{{user}}: hi", "{{char}}: hey"]
    """
    text = mes_example.replace("\r\n", "\n")
    return [block.strip() for block in _START.split(text) if block.strip()]
