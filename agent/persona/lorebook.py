"""Lorebooks (world info): V2 `character_book`, V3 `lorebook_v3` and SillyTavern world-info JSON as one `Lorebook`.

`parse_lorebook` / `load_lorebook` read them (errors name the file and field), `to_v3` writes them back.
Which entries fire for a chat is agent/persona/lore_activation.py's job.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

from agent.untrusted_text import lone_surrogate, surrogate_problem

from .card_io import read_bounded

if TYPE_CHECKING:
    from agent.persona.card import CharacterCard

SPEC_LOREBOOK_V3 = "lorebook_v3"
CARD_SPECS = ("chara_card_v2", "chara_card_v3")
POSITIONS = ("before_char", "after_char", "depth")
ROLES = ("system", "user", "assistant")  # SillyTavern's role codes 0, 1, 2
LOGICS = ("and_any", "not_all", "not_any", "and_all")  # SillyTavern's selectiveLogic codes 0, 1, 2, 3
DEFAULT_SCAN_DEPTH = 2  # SillyTavern's global default
DEFAULT_DEPTH = 4  # SillyTavern's default for entries placed at a depth
DEFAULT_ORDER = 100  # SillyTavern's default insertion order
# SillyTavern position codes: 0 before the card, 1 after it, 4 at a depth in the chat. The others have no
# place in personae's prompt (2/3 around the author's note, 5/6 around example messages, 7 an outlet
# macro) and go after the card; their code stays in `extensions` so an export back to SillyTavern keeps it.
ST_POSITIONS = {0: "before_char", 1: "after_char", 4: "depth"}
# extension keys (SillyTavern's names) that LoreEntry fields hold; every other extension is kept verbatim
MAPPED_EXTENSIONS = frozenset({
    "position", "depth", "role", "selectiveLogic", "match_whole_words", "case_sensitive", "scan_depth",
    "prevent_recursion", "exclude_recursion", "delay_until_recursion", "probability", "useProbability",
})
# SillyTavern world-info fields with no LoreEntry field, kept in `extensions` under the names its card export uses
ST_KEPT = {"displayIndex": "display_index", "group": "group", "groupOverride": "group_override",
           "groupWeight": "group_weight", "useGroupScoring": "use_group_scoring", "automationId": "automation_id",
           "vectorized": "vectorized", "sticky": "sticky", "cooldown": "cooldown", "delay": "delay"}
# where each setting lives: in a V2/V3 entry ("ext." = inside its extensions), in a SillyTavern world-info entry
PLACES = {
    "keys": ("keys", "key"), "secondary_keys": ("secondary_keys", "keysecondary"), "content": ("content", "content"),
    "constant": ("constant", "constant"), "selective": ("selective", "selective"),
    "selective_logic": ("ext.selectiveLogic", "selectiveLogic"),
    "case_sensitive": ("ext.case_sensitive", "caseSensitive"),
    "match_whole_words": ("ext.match_whole_words", "matchWholeWords"), "insertion_order": ("insertion_order", "order"),
    "position": ("ext.position", "position"), "depth": ("ext.depth", "depth"), "role": ("ext.role", "role"),
    "scan_depth": ("ext.scan_depth", "scanDepth"), "prevent_recursion": ("ext.prevent_recursion", "preventRecursion"),
    "exclude_recursion": ("ext.exclude_recursion", "excludeRecursion"),
    "delay_until_recursion": ("ext.delay_until_recursion", "delayUntilRecursion"),
    "probability": ("ext.probability", "probability"), "use_probability": ("ext.useProbability", "useProbability"),
}
_DECORATOR = re.compile(r"@@@?(\w+)(?:[ \t]+(.*))?")


class LoreError(ValueError):
    """A lorebook that can't be used; the message names the source and the field."""


def lore_error(source: str, where: str, problem: str) -> LoreError:
    """LoreError("world.json: entries[3].keys: expected a list of strings")."""
    return LoreError(f"{source}: {where}: {problem}" if where else f"{source}: {problem}")


@dataclass(frozen=True)
class LoreEntry:
    uid: str  # the entry's id (V2/V3 `id`, SillyTavern `uid`), else its index in the book
    keys: tuple[str, ...] = ()  # any one of these in the scanned text fires the entry
    content: str = ""  # the text that enters the prompt; {{char}}/{{user}} are left for the caller
    name: str = ""  # the entry's comment/name, for humans
    secondary_keys: tuple[str, ...] = ()  # checked with selective_logic when selective
    enabled: bool = True  # disabled entries never fire
    constant: bool = False  # fires whatever the chat says
    selective: bool = False  # secondary_keys must satisfy selective_logic too
    selective_logic: str = "and_any"  # and_any | and_all | not_any | not_all, over secondary_keys
    case_sensitive: Optional[bool] = None  # None = the default, case-insensitive
    match_whole_words: Optional[bool] = None  # None = the default, substrings match ("cat" in "concatenate")
    use_regex: bool = False  # keys are regular expressions (a key written /pattern/flags always is)
    insertion_order: int = DEFAULT_ORDER  # lower = earlier in the prompt; higher survives the budget first
    priority: int = 0  # over the token budget, lower priority is dropped first
    position: str = "before_char"  # before_char | after_char | depth
    depth: int = DEFAULT_DEPTH  # position depth: messages from the end of the chat where the text goes
    role: str = "system"  # position depth: system | user | assistant
    scan_depth: Optional[int] = None  # messages scanned for this entry; None = the book's or caller's
    prevent_recursion: bool = False  # its content does not fire other entries
    exclude_recursion: bool = False  # fired only by the chat, never by other entries' content
    delay_until_recursion: bool = False  # fired only in recursion passes
    probability: int = 100  # percent chance that it fires once matched
    extensions: dict = field(default_factory=dict)  # other app data, kept for export

    @property
    def label(self) -> str:
        return self.name or f"#{self.uid}"


@dataclass(frozen=True)
class Lorebook:
    name: str = ""
    description: str = ""
    scan_depth: int = DEFAULT_SCAN_DEPTH  # newest messages scanned for keys
    token_budget: Optional[int] = None  # most tokens of fired entries; None = no limit of its own
    recursive_scanning: bool = False  # fired entries' content can fire further entries
    entries: tuple[LoreEntry, ...] = ()
    extensions: dict = field(default_factory=dict)  # other app data, kept for export
    source: str = field(default="", compare=False)  # where it was read from, for messages


# --- field readers: (value, where, source) -> normalised value, raising LoreError on a wrong type ---

def _text(value: Any, where: str, source: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise lore_error(source, where, f"expected text, got {type(value).__name__}")
    return value.replace("\r\n", "\n").replace("\r", "\n").strip()


def _strings(value: Any, where: str, source: str) -> tuple[str, ...]:
    """A list of keys; a single string is split on commas, numbers become text."""
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) \
            or any(isinstance(v, bool) or not isinstance(v, (str, int, float)) for v in items):
        raise lore_error(source, where, "expected a list of strings")
    return tuple(s for s in (str(v).strip() for v in items) if s)


def _flag(value: Any, where: str, source: str) -> Optional[bool]:
    if value is None or isinstance(value, bool):
        return value
    if value in (0, 1) and not isinstance(value, float):
        return bool(value)
    raise lore_error(source, where, f"expected true or false, got {value!r}")


def _number(value: Any, where: str, source: str) -> Optional[int]:
    """Whole numbers; integral floats and numeric strings are accepted because editors write them."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value == value:
        return int(round(value))
    raise lore_error(source, where, f"expected a number, got {value!r}")


def _mapping(value: Any, where: str, source: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise lore_error(source, where, f"expected an object, got {type(value).__name__}")
    return dict(value)


def _choice(value: Any, codes: Sequence[str], where: str, source: str, default: str) -> str:
    """A name from `codes`, given as the name or as its index (SillyTavern's numeric codes)."""
    if value is None:
        return default
    if isinstance(value, str) and value in codes:
        return value
    code = _number(value, where, source) if not isinstance(value, str) or value.strip().isdigit() else None
    if code is None or not 0 <= code < len(codes):
        raise lore_error(source, where, f"expected one of {', '.join(codes)} (or 0-{len(codes) - 1}), got {value!r}")
    return codes[code]


# --- reading ---

def parse_lorebook(obj: Any, source: str) -> Lorebook:
    """Reads a decoded V2 `character_book`, a `lorebook_v3` document, SillyTavern world-info JSON or a V2/V3
    card (its `data.character_book`); `source` (the file, or "card X") goes into errors."""
    if not isinstance(obj, dict):
        raise LoreError(f"{source}: a lorebook must be a JSON object, got {type(obj).__name__}")
    found = lone_surrogate(obj)  # JSON's "\ud800": text nothing could match, prompt or store
    if found:
        raise lore_error(source, found[0], surrogate_problem(found[1]))
    book, prefix = obj, ""
    if obj.get("spec") == SPEC_LOREBOOK_V3 or obj.get("spec") in CARD_SPECS:
        if not isinstance(obj.get("data"), dict):
            raise lore_error(source, "data", f"{obj['spec']} document without a 'data' object")
        book, prefix = obj["data"], "data."
        if obj["spec"] in CARD_SPECS:
            if book.get("character_book") is None:
                raise lore_error(source, "data.character_book", "the card has no lorebook")
            book, prefix = _mapping(book["character_book"], "data.character_book", source), "data.character_book."
    return _read_book(book, prefix, source)


def _read_book(book: dict, prefix: str, source: str) -> Lorebook:
    raw = book.get("entries")
    if isinstance(raw, dict):  # SillyTavern keys its entries by uid
        items = [(str(k), f"{prefix}entries.{k}", v) for k, v in raw.items()]
    elif isinstance(raw, list) or raw is None:
        items = [(str(i), f"{prefix}entries[{i}]", v) for i, v in enumerate(raw or ())]
    else:
        raise lore_error(source, f"{prefix}entries", f"expected a list of entries, got {type(raw).__name__}")
    scan_depth = _number(book.get("scan_depth"), f"{prefix}scan_depth", source)
    budget = _number(book.get("token_budget"), f"{prefix}token_budget", source)
    return Lorebook(
        name=_text(book.get("name"), f"{prefix}name", source),
        description=_text(book.get("description"), f"{prefix}description", source),
        scan_depth=DEFAULT_SCAN_DEPTH if scan_depth is None else max(scan_depth, 0),
        token_budget=budget if budget is None or budget > 0 else None,
        recursive_scanning=bool(_flag(book.get("recursive_scanning"), f"{prefix}recursive_scanning", source)),
        entries=tuple(_read_entry(entry, index, where, source) for index, where, entry in items),
        extensions=_mapping(book.get("extensions"), f"{prefix}extensions", source),
        source=source)


def _read_entry(raw: Any, index: str, where: str, source: str) -> LoreEntry:
    if not isinstance(raw, dict):
        raise lore_error(source, where, f"expected an object, got {type(raw).__name__}")
    st = "keys" not in raw and ("key" in raw or "uid" in raw)  # SillyTavern's world-info layout
    ext = {} if st else _mapping(raw.get("extensions"), f"{where}.extensions", source)

    def get(name: str, read: Callable) -> Any:
        place = PLACES[name][1 if st else 0]
        if place.startswith("ext."):
            return read(ext.get(place[4:]), f"{where}.extensions.{place[4:]}", source)
        return read(raw.get(place), f"{where}.{place}", source)

    uid = raw.get("uid" if st else "id")
    if st:
        enabled = not _flag(raw.get("disable"), f"{where}.disable", source)
        name = _text(raw.get("comment"), f"{where}.comment", source)
        kept = {ours: raw[theirs] for theirs, ours in ST_KEPT.items() if theirs in raw}
    else:
        enabled = _flag(raw.get("enabled"), f"{where}.enabled", source) is not False
        name = _text(raw.get("comment"), f"{where}.comment", source) or _text(raw.get("name"), f"{where}.name", source)
        kept = {k: v for k, v in ext.items() if k not in MAPPED_EXTENSIONS}
    position, code = _position(raw, ext, st, where, source)
    if code is not None:
        kept["position"] = code
    case = get("case_sensitive", _flag)
    if case is None and not st:
        case = _flag(raw.get("case_sensitive"), f"{where}.case_sensitive", source)
    probability = get("probability", _number)
    use_probability = get("use_probability", _flag)
    # SillyTavern writes use_regex: true on every entry it exports while matching keys as plain text
    # (regex only as /pattern/); display_index marks its export
    use_regex = bool(not st and _flag(raw.get("use_regex"), f"{where}.use_regex", source)) \
        and "display_index" not in ext
    entry = LoreEntry(
        uid=index if uid is None or isinstance(uid, (dict, list)) else str(uid),
        keys=get("keys", _strings), content=get("content", _text), name=name,
        secondary_keys=get("secondary_keys", _strings), enabled=enabled,
        constant=bool(get("constant", _flag)), selective=bool(get("selective", _flag)),
        selective_logic=get("selective_logic", lambda v, w, s: _choice(v, LOGICS, w, s, "and_any")),
        case_sensitive=case, match_whole_words=get("match_whole_words", _flag), use_regex=use_regex,
        insertion_order=_or(get("insertion_order", _number), DEFAULT_ORDER),
        priority=0 if st else _or(_number(raw.get("priority"), f"{where}.priority", source), 0),
        position=position, depth=max(_or(get("depth", _number), DEFAULT_DEPTH), 0),
        role=get("role", lambda v, w, s: _choice(v, ROLES, w, s, "system")),
        scan_depth=get("scan_depth", _number),
        prevent_recursion=bool(get("prevent_recursion", _flag)),
        exclude_recursion=bool(get("exclude_recursion", _flag)),
        delay_until_recursion=bool(get("delay_until_recursion", _flag)),
        probability=100 if use_probability is False or probability is None else min(max(probability, 0), 100),
        extensions=kept)
    return _decorate(entry)


def _or(value: Optional[int], default: int) -> int:
    return default if value is None else value


def _position(raw: dict, ext: dict, st: bool, where: str, source: str) -> tuple[str, Optional[int]]:
    """(position, SillyTavern code to keep when personae has no such place)."""
    place = "position" if st else "extensions.position"
    code = _number(raw.get("position") if st else ext.get("position"), f"{where}.{place}", source)
    if code is not None:
        return ST_POSITIONS.get(code, "after_char"), None if code in ST_POSITIONS else code
    if st:
        return "before_char", None  # SillyTavern's default for a new entry
    text = raw.get("position")
    if text is not None and not isinstance(text, str):
        raise lore_error(source, f"{where}.position", f"expected before_char or after_char, got {text!r}")
    # as SillyTavern imports V2 books: anything but before_char goes after the card
    return ("before_char" if text == "before_char" else "after_char"), None


def _decorate(entry: LoreEntry) -> LoreEntry:
    """Applies the V3 decorators (`@@name value` lines opening the content) and strips them all.

    Understood: @@depth N, @@role R, @@scan_depth N, @@activate, @@dont_activate, @@position
    before_desc|after_desc, @@additional_keys a,b. Others, and ones with unusable values, are ignored.
    """
    lines = entry.content.split("\n")
    n = 0
    while n < len(lines) and lines[n].startswith("@@"):
        n += 1
    if not n:
        return entry
    changes: dict[str, Any] = {"content": "\n".join(lines[n:]).strip()}
    for line in lines[:n]:
        match = _DECORATOR.fullmatch(line.strip())
        name, arg = (match[1], (match[2] or "").strip()) if match else ("", "")
        number = int(arg) if arg.isdigit() else None
        if name == "depth" and number is not None:
            changes.update(position="depth", depth=number)
        elif name == "role" and arg in ROLES:
            changes["role"] = arg
        elif name == "scan_depth" and number is not None:
            changes["scan_depth"] = number
        elif name == "activate":
            changes["constant"] = True
        elif name == "dont_activate":
            changes["enabled"] = False
        elif name == "position" and arg in ("before_desc", "after_desc"):
            changes["position"] = "before_char" if arg == "before_desc" else "after_char"
        elif name == "additional_keys":
            changes["keys"] = changes.get("keys", entry.keys) + tuple(k.strip() for k in arg.split(",") if k.strip())
    return replace(entry, **changes)


def load_lorebook(path: str | Path, max_bytes: int = 2 * 1024 * 1024) -> Lorebook:
    """Reads a lorebook JSON file (any format `parse_lorebook` takes, cards included); a book without a
    name is named after the file."""
    path = Path(path)
    data = read_bounded(path, max_bytes, what="lorebook", error=LoreError)
    try:
        obj = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise LoreError(f"{path}: not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise LoreError(f"{path}: not JSON: {e}") from None
    book = parse_lorebook(obj, str(path))
    return book if book.name else replace(book, name=path.stem)


def card_lorebook(card: "CharacterCard") -> Optional[Lorebook]:
    """The card's own lorebook (named after the card when it has no name), or None."""
    if card.character_book is None:
        return None
    book = _read_book(card.character_book, "character_book.", f"card {card.name}")
    return book if book.name else replace(book, name=card.name)


# --- writing ---

def to_v3(book: Lorebook) -> dict:
    """A `lorebook_v3` document; SillyTavern's settings ride in each entry's extensions as its exports do."""
    data: dict[str, Any] = {"name": book.name, "description": book.description, "scan_depth": book.scan_depth}
    if book.token_budget is not None:
        data["token_budget"] = book.token_budget
    data.update(recursive_scanning=book.recursive_scanning, extensions=dict(book.extensions),
                entries=[_entry_v3(e) for e in book.entries])
    return {"spec": SPEC_LOREBOOK_V3, "data": data}


def _entry_v3(e: LoreEntry) -> dict:
    uid: Any = int(e.uid) if e.uid.isdigit() and str(int(e.uid)) == e.uid else e.uid
    codes = {v: k for k, v in ST_POSITIONS.items()}
    out = {"id": uid, "keys": list(e.keys), "secondary_keys": list(e.secondary_keys), "comment": e.name,
           "name": e.name, "content": e.content, "constant": e.constant, "selective": e.selective,
           "insertion_order": e.insertion_order, "enabled": e.enabled, "priority": e.priority,
           "position": "before_char" if e.position == "before_char" else "after_char", "use_regex": e.use_regex}
    if e.case_sensitive is not None:
        out["case_sensitive"] = e.case_sensitive
    settings = {"position": codes[e.position], "depth": e.depth, "role": ROLES.index(e.role),
                "selectiveLogic": LOGICS.index(e.selective_logic), "match_whole_words": e.match_whole_words,
                "case_sensitive": e.case_sensitive, "scan_depth": e.scan_depth,
                "prevent_recursion": e.prevent_recursion, "exclude_recursion": e.exclude_recursion,
                "delay_until_recursion": e.delay_until_recursion, "probability": e.probability,
                "useProbability": True}
    out["extensions"] = {**settings, **e.extensions}
    return out
