"""The persona draft the LM fills: one JSON document whose every leaf is a scalar with its own schema and budget.

`LAYOUT` is the document's shape; `leaves()` walks it into (text before, Leaf) parts in writing order, so the
document is written left to right one constrained call per leaf; `draft_schema()` is the whole document's JSON
Schema, which `validate_draft` checks the assembled result against before anything becomes a card.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterator, Union

from .eras import KINDS as ERAS

TEMPERAMENTS = ("calm", "cheerful", "gloomy", "fierce", "nervous", "stern", "dreamy", "sly", "warm")
VOICE_PITCHES = ("deep", "medium", "high")
LORE_KINDS = ("place", "person", "thing")
AGES = tuple(range(6, 101))  # an enum: llama.cpp's schema converter ignores minimum/maximum
GENRES = ("fantasy", "sci-fi", "historical", "modern", "horror", "mystery", "romance", "comedy", "adventure", "drama",
          "slice of life", "cozy", "dark", "supernatural", "western", "steampunk", "cyberpunk", "post-apocalyptic",
          "mythology", "military", "sea", "crime", "school", "family", "magic", "nature", "music", "science")
NAME_WORD = "[A-Z][a-z]{1,10}"
NAME_PATTERN = f"^{NAME_WORD}( {NAME_WORD}){{0,3}}$"  # a character: 1 to 4 capitalised words
PLACE_PATTERN = f"^{NAME_WORD}( (of |the |of the )?{NAME_WORD}){{0,3}}$"  # a lore entry: also "Isle of Mist"
TAG_PATTERN = "^[a-z][a-z-]{1,11}( [a-z][a-z-]{1,11})?$"  # one or two lowercase words
# Prose: starts with a capital or an *action* (a scenario also with {{user}}); braces only as {{user}} or {{char}};
# no double quote, backslash or control character, so every backend's grammar (llama.cpp's converter passes
# pattern characters unescaped) writes a valid JSON string.
PROSE_BODY = r'([^"\\{}\x00-\x1f]|\{\{(user|char)\}\})*$'


@dataclass(frozen=True)
class Leaf:
    """One value the LM writes in a single constrained call."""
    schema: dict  # JSON Schema of the value (a string, enum or integer; never a container)
    budget: int  # tokens it may take before it is closed
    lead: tuple = ()  # path of an earlier leaf (a name) this prose must start with: a small model then writes about it

    def schema_after(self, values: dict) -> dict:
        """The schema it is written under once the earlier leaves are known (the lead made a literal prefix)."""
        if not self.lead:
            return self.schema
        return {**self.schema, "pattern": "^" + lookup(values, self.lead) + PROSE_BODY}


def _prose(budget: int, start: str = "[A-Z*]", lead: tuple = ()) -> Leaf:
    return Leaf({"type": "string", "pattern": f"^{start}" + PROSE_BODY}, budget, lead)


def _enum(values) -> Leaf:
    return Leaf({"enum": list(values)}, 8)


def _pattern(pattern: str, budget: int) -> Leaf:
    return Leaf({"type": "string", "pattern": pattern}, budget)


Node = Union[Leaf, dict, list]

# The document, in writing order: what comes first is in the prompt of what follows. Budgets are tokens for
# the embedded 135M model; `creation.budget_scale` multiplies them for bigger models.
LAYOUT: dict[str, Node] = {
    "name": _pattern(NAME_PATTERN, 12),
    "age": Leaf({"type": "integer", "enum": list(AGES)}, 4),
    "era": _enum(ERAS),
    "temperament": _enum(TEMPERAMENTS),
    "voice": _enum(VOICE_PITCHES),
    "description": _prose(110, lead=("name",)),
    "personality": _prose(40),
    "scenario": _prose(60, start=r"([A-Z*]|\{\{user\}\})"),
    "first_mes": _prose(80),
    "alternate_greetings": [_prose(50), _prose(50)],
    "examples": [{"user": _prose(24), "char": _prose(56)}, {"user": _prose(24), "char": _prose(56)}],
    "tags": [_enum(GENRES), _enum(GENRES), _pattern(TAG_PATTERN, 8), _pattern(TAG_PATTERN, 8)],
    "lore": [{"name": _pattern(PLACE_PATTERN, 10), "kind": _enum(LORE_KINDS), "content": _prose(50)}
             for _ in range(2)],
}


def node_schema(node: Node) -> dict:
    """JSON Schema (2020-12) of a layout node: objects and fixed-length arrays of their children."""
    if isinstance(node, Leaf):
        return dict(node.schema)
    if isinstance(node, dict):
        return {"type": "object", "properties": {k: node_schema(v) for k, v in node.items()},
                "required": list(node), "additionalProperties": False}
    return {"type": "array", "prefixItems": [node_schema(v) for v in node], "items": False,
            "minItems": len(node), "maxItems": len(node)}


def draft_schema(layout: dict = LAYOUT) -> dict:
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "personae persona draft",
            **node_schema(layout)}


Part = Union[str, tuple[tuple, Leaf]]  # literal text, or (path, leaf)


def _walk(node: Node, path: tuple, depth: int) -> Iterator[Part]:
    if isinstance(node, Leaf):
        yield (path, node)
    elif isinstance(node, dict):
        top = depth == 0  # top-level keys one a line, so each field starts where the model expects one
        yield "{"
        for i, (key, child) in enumerate(node.items()):
            yield ("," if i else "") + ("\n " if top else (" " if i else "")) + json.dumps(key) + ": "
            yield from _walk(child, path + (key,), depth + 1)
        yield "\n}" if top else "}"
    else:
        yield "["
        for i, child in enumerate(node):
            if i:
                yield ", "
            yield from _walk(child, path + (i,), depth + 1)
        yield "]"


def leaves(layout: dict = LAYOUT) -> list[tuple[str, tuple, Leaf]]:
    """The document as [(literal text before the leaf, leaf path, leaf)] plus a closing ("tail", (), None)."""
    out, text = [], ""
    for part in _walk(layout, (), 0):
        if isinstance(part, str):
            text += part
        else:
            out.append((text, *part))
            text = ""
    out.append((text, (), None))
    return out


def render(values: dict, layout: dict = LAYOUT) -> str:
    """A complete draft document in the layout's own formatting (the prompt's worked example uses this)."""
    text = ""
    for before, path, leaf in leaves(layout):
        text += before
        if leaf is not None:
            text += json.dumps(lookup(values, path), ensure_ascii=False)
    return text


def lookup(values: Any, path: tuple) -> Any:
    for step in path:
        values = values[step]
    return values


class DraftError(ValueError):
    """A draft that does not validate; names the field."""


def validate_draft(draft: Any, layout: dict = LAYOUT) -> dict:
    """Checks a parsed draft against `draft_schema`; raises DraftError naming the first bad field."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(draft_schema(layout))
    for error in sorted(validator.iter_errors(draft), key=lambda e: list(e.path)):
        where = ".".join(str(p) for p in error.path) or "(document)"
        raise DraftError(f"persona draft field {where!r}: {error.message}")
    return draft
