"""Writes a whole persona draft leaf by leaf: each leaf one constrained call, the earlier ones in its prompt.

`write_draft(writer, chat_text, options)` returns a `Draft`: the parsed document, validated against
`schema.draft_schema`, and what it cost. The document text is the assistant's answer growing field by field,
so the model always sees the card so far, and each field has its own token budget.
"""
from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any, Optional

from ..chat.sampling import SamplingOptions
from .schema import LAYOUT, Leaf, leaves, lookup, validate_draft

log = logging.getLogger(__name__)
_PARTIAL_ESCAPE = re.compile(r'\\(u[0-9a-fA-F]{0,3})?$')


@dataclass
class Draft:
    values: dict  # the validated document (schema.LAYOUT's shape)
    text: str  # the document as written (canonical JSON per leaf)
    seconds: float = 0.0
    leaves: int = 0  # constrained calls made
    cut: list[str] = field(default_factory=list)  # leaf paths whose token budget (or the deadline) ended them
    repaired: list[str] = field(default_factory=list)  # leaf paths whose text had to be closed or replaced


def _set(values: dict, path: tuple, value: Any) -> None:
    node: Any = values
    for step, nxt in zip(path, path[1:]):
        if isinstance(node, dict):
            node = node.setdefault(step, [] if isinstance(nxt, int) else {})
        else:
            while len(node) <= step:
                node.append([] if isinstance(nxt, int) else {})
            node = node[step]
    last = path[-1]
    if isinstance(node, list):
        while len(node) <= last:
            node.append(None)
    node[last] = value


def _valid(value: Any, schema: dict) -> bool:
    import jsonschema

    return jsonschema.Draft202012Validator(schema).is_valid(value)


def parse_leaf(text: str, leaf: Leaf, schema: Optional[dict] = None, values: Optional[dict] = None) -> tuple[Any, bool]:
    """(value, repaired): the leaf's JSON text parsed; a string cut off by the budget is closed, and anything
    that still fails its schema (`schema`, default the leaf's) becomes the leaf's fallback (first enum value, a
    placeholder)."""
    for attempt, candidate in enumerate((text, _closed(text))):
        try:
            value = json.loads(candidate, strict=False)
        except ValueError:
            continue
        if _valid(value, schema or leaf.schema):
            return value, attempt > 0
    return fallback(leaf, values or {}, schema), True


def _closed(text: str) -> str:
    """A JSON string the budget cut off, closed: a partial escape dropped, the quote added."""
    body = text.strip()
    if not body.startswith('"'):
        return body
    return _PARTIAL_ESCAPE.sub("", body) + '"'


def fallback(leaf: Leaf, values: dict, schema: Optional[dict] = None) -> Any:
    """A value that satisfies the leaf's schema (or the narrower `schema` it was written under), for an LM that
    did not write one (values: the earlier leaves)."""
    schema = schema or leaf.schema
    if leaf.lead:
        return lookup(values, leaf.lead) + "."
    if "enum" in schema:
        return schema["enum"][0]
    pattern = schema.get("pattern", "")
    if pattern.startswith("^[A-Z]"):
        return "Nameless"
    if pattern.startswith("^[a-z]"):
        return "original"
    return "*...*"


def write_draft(writer, chat_text: str, options: SamplingOptions, *, budget_scale: float = 1.0,
                fixed: Optional[dict] = None, narrowed: Optional[dict] = None, deadline: Optional[float] = None,
                layout: dict = LAYOUT) -> Draft:
    """Fills `layout` after `chat_text` (the rendered chat, ending where the assistant's answer starts).

    fixed: leaf path -> value written as given instead of generated (`--name`); narrowed: leaf path -> a
    stricter schema it is written under (what the idea states, check.stated); deadline: time.monotonic()
    after which every remaining leaf is closed as soon as its grammar allows (the result still validates).
    """
    start = time.perf_counter()
    fixed = fixed or {}
    values: dict = {}
    document = ""
    repaired, cut, calls = [], [], 0
    for i, (before, path, leaf) in enumerate(leaves(layout)):
        document += before
        if leaf is None:
            break
        if path in fixed:
            value = fixed[path]
        else:
            seeded = options if options.seed is None else _reseed(options, i)
            schema = (narrowed or {}).get(path) or leaf.schema_after(values)
            text, over = writer.write(chat_text + document, schema, max(1, round(leaf.budget * budget_scale)), seeded,
                                      deadline)
            calls += 1
            if over:
                cut.append(".".join(map(str, path)))
            value, fixed_up = parse_leaf(text, leaf, schema, values)
            if fixed_up:
                repaired.append(".".join(map(str, path)))
                log.debug("persona draft leaf %s: %r closed as %r", path, text, value)
        _set(values, path, value)
        document += json.dumps(value, ensure_ascii=False)
    validate_draft(values, layout)
    return Draft(values=values, text=document, seconds=time.perf_counter() - start, leaves=calls, cut=cut,
                 repaired=repaired)


def _reseed(options: SamplingOptions, index: int) -> SamplingOptions:
    import dataclasses

    return dataclasses.replace(options, seed=options.seed * 1000 + index)
