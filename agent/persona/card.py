"""Character Card V1/V2/V3 as one frozen `CharacterCard`, forgiving of the messy cards found in the wild.

`card_io` reads files into `CharacterCard.from_dict`; `store` keeps `to_fields()` in persona.yaml;
exports go back out through `to_v2()` / `to_v3()`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any, Callable, Optional

from agent.untrusted_text import lone_surrogate, surrogate_problem

SPEC_V2 = "chara_card_v2"
SPEC_V3 = "chara_card_v3"

# The V1-style copy SillyTavern writes next to `data`, plus its own bookkeeping. It is regenerated on
# export, so on import these top-level keys are neither card data nor unknown fields.
MIRROR_KEYS = frozenset({
    "name", "description", "personality", "scenario", "first_mes", "mes_example", "creatorcomment",
    "avatar", "chat", "create_date", "talkativeness", "fav", "creator", "tags",
})
# SillyTavern bookkeeping in flat V1 cards: the avatar file, the chat log name, a local date.
V1_LOCAL_KEYS = frozenset({"avatar", "chat", "create_date"})
# Pygmalion/Ooba field names, used only when the TavernAI name is absent.
PYGMALION_NAMES = {"name": "char_name", "personality": "char_persona", "scenario": "world_scenario",
                   "first_mes": "char_greeting", "mes_example": "example_dialogue"}
_ODD_SPACES = re.compile("[\u00a0\u2007\u202f\u3000]")  # no-break and ideographic spaces -> " "
_LINE_END_SPACES = re.compile(r"[ \t]+\n")


class CardError(ValueError):
    """A card that can't be used; the message names the source file and the field or problem."""


def card_error(source: str, where: str, problem: str) -> CardError:
    """CardError("card.png: field 'data.tags': expected ...")."""
    return CardError(f"{source}: field {where!r}: {problem}")


# --- field readers: (value, where, source) -> normalised value, raising CardError on a wrong type ---

def _text(value: Any, where: str, source: str) -> str:
    if value is None:
        return ""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)  # e.g. character_version: 1.2
    if not isinstance(value, str):
        raise card_error(source, where, f"expected text, got {type(value).__name__}")
    text = value.replace("\r\n", "\n").replace("\r", "\n")
    # spaces before a line break are invisible, and they keep persona.yaml from using `|` blocks
    return _LINE_END_SPACES.sub("\n", _ODD_SPACES.sub(" ", text)).strip()


def _name(value: Any, where: str, source: str) -> str:
    return " ".join(_text(value, where, source).split())


def _texts(value: Any, where: str, source: str, *, commas: bool = False) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        items = value.split(",") if commas else [value]
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        raise card_error(source, where, f"expected a list of text, got {type(value).__name__}")
    read = _name if commas else _text
    out = (read(item, f"{where}[{i}]", source) for i, item in enumerate(items))
    return tuple(item for item in out if item)


def _tags(value: Any, where: str, source: str) -> tuple[str, ...]:
    return _texts(value, where, source, commas=True)


def _mapping(value: Any, where: str, source: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise card_error(source, where, f"expected a mapping, got {type(value).__name__}")
    return dict(value)


def _newlines(value: Any) -> Any:
    """CRLF -> LF in every string of a nested structure (lorebook entries)."""
    if isinstance(value, str):
        return value.replace("\r\n", "\n")
    if isinstance(value, dict):
        return {k: _newlines(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_newlines(v) for v in value]
    return value


def _book(value: Any, where: str, source: str) -> Optional[dict]:
    if value is None:
        return None
    return _newlines(_mapping(value, where, source))


def _multilingual(value: Any, where: str, source: str) -> dict:
    return {str(k): _text(v, f"{where}.{k}", source) for k, v in _mapping(value, where, source).items()}


def _date(value: Any, where: str, source: str) -> Optional[int]:
    """Unix seconds; numeric strings and ISO dates are accepted because some editors write them."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, date) and not isinstance(value, datetime):  # YAML reads 2024-01-31 as a date
        value = datetime(value.year, value.month, value.day, tzinfo=timezone.utc)
    if isinstance(value, datetime):
        return int(value.timestamp())
    if isinstance(value, str):
        try:
            return int(float(value))
        except ValueError:
            pass
        try:
            return int(datetime.fromisoformat(value.strip().replace("Z", "+00:00")).timestamp())
        except ValueError:
            pass
    raise card_error(source, where, f"expected a Unix timestamp, got {value!r}")


def _assets(value: Any, where: str, source: str) -> tuple[dict, ...]:
    if value is None:
        return ()
    if not isinstance(value, (list, tuple)):
        raise card_error(source, where, f"expected a list of assets, got {type(value).__name__}")
    return tuple(_mapping(item, f"{where}[{i}]", source) for i, item in enumerate(value))


# field name -> reader, in V2 then V3 spec order; every field defaults to what its reader makes of None
READERS: dict[str, Callable[[Any, str, str], Any]] = {
    "name": _name, "description": _text, "personality": _text, "scenario": _text, "first_mes": _text,
    "mes_example": _text, "creator_notes": _text, "system_prompt": _text, "post_history_instructions": _text,
    "alternate_greetings": _texts, "character_book": _book, "tags": _tags, "creator": _text,
    "character_version": _text, "extensions": _mapping,
    "nickname": _name, "creator_notes_multilingual": _multilingual, "source": _texts,
    "group_only_greetings": _texts, "creation_date": _date, "modification_date": _date, "assets": _assets,
}
V2_FIELDS = tuple(READERS)[:15]
V3_OPTIONAL = ("nickname", "creator_notes_multilingual", "source", "creation_date", "modification_date", "assets")


@dataclass(frozen=True)
class CharacterCard:
    name: str  # {{char}}; never empty
    description: str = ""  # who the character is; the main prompt text
    personality: str = ""  # short personality summary
    scenario: str = ""  # the situation the chat starts in
    first_mes: str = ""  # the greeting that opens a chat
    mes_example: str = ""  # example dialogue, blocks separated by <START>
    creator_notes: str = ""  # for humans; never sent to the model
    system_prompt: str = ""  # replaces the app's system prompt when set ({{original}} keeps it)
    post_history_instructions: str = ""  # jailbreak/UJB text: personae puts it just before each user turn (agent/chat/prompt.py)
    alternate_greetings: tuple[str, ...] = ()  # other openings to choose from
    character_book: Optional[dict] = None  # lorebook, kept as the spec's mapping
    tags: tuple[str, ...] = ()
    creator: str = ""
    character_version: str = ""
    extensions: dict = field(default_factory=dict)  # app-specific data, kept verbatim
    nickname: str = ""  # V3: used for {{char}} instead of name when set
    creator_notes_multilingual: dict = field(default_factory=dict)  # V3: language code -> notes
    source: tuple[str, ...] = ()  # V3: where the card came from (URLs, ids)
    group_only_greetings: tuple[str, ...] = ()  # V3: greetings used only in group chats
    creation_date: Optional[int] = None  # V3: Unix seconds
    modification_date: Optional[int] = None  # V3: Unix seconds
    assets: tuple[dict, ...] = ()  # V3: {type, uri, name, ext} entries
    extra: dict = field(default_factory=dict)  # unknown fields, written back out so they survive

    @classmethod
    def from_dict(cls, obj: Any, source: str) -> "CharacterCard":
        """Reads a decoded V1 (flat), V2 or V3 card; `source` (usually the file) goes into errors."""
        if not isinstance(obj, dict):
            raise CardError(f"{source}: a card must be a JSON object, got {type(obj).__name__}")
        _refuse_lone_surrogates(obj, source)
        if isinstance(obj.get("data"), dict):
            return cls._from_spec(obj, source)
        if obj.get("spec") in (SPEC_V2, SPEC_V3):
            raise card_error(source, "data", f"{obj['spec']} card without a 'data' object")
        return cls.from_fields(obj, source)

    @classmethod
    def from_fields(cls, fields: dict, source: str) -> "CharacterCard":
        """Reads a flat mapping: a V1 card, or the card part of persona.yaml."""
        _refuse_lone_surrogates(fields, source)
        fields = dict(fields)
        for ours, theirs in PYGMALION_NAMES.items():  # a copy that says the same thing is dropped
            if fields.get(ours) is None or _same_text(fields.get(theirs), fields[ours]):
                if theirs in fields:
                    fields[ours] = fields.pop(theirs)
        if fields.get("creator_notes") is None and "creatorcomment" in fields:
            fields["creator_notes"] = fields.pop("creatorcomment")
        extensions = _mapping(fields.pop("extensions", None), "extensions", source)
        for key in ("talkativeness", "fav"):  # V1 keeps these at the top; V2 moved them into extensions
            if key in fields:
                extensions.setdefault(key, fields.pop(key))
        fields["extensions"] = extensions
        known, unknown = _read_known(fields, "", source)
        extra = {k: v for k, v in unknown.items() if k not in V1_LOCAL_KEYS and k != "creatorcomment"}
        return cls._build(known, extra, source, "")

    @classmethod
    def _from_spec(cls, obj: dict, source: str) -> "CharacterCard":
        """V2/V3: `data` wins; the top-level mirror only fills fields that `data` lacks."""
        known, extra = _read_known(obj["data"], "data.", source)
        for key in MIRROR_KEYS & set(READERS):
            if known.get(key) in (None, "", ()) and obj.get(key) not in (None, ""):
                known[key] = READERS[key](obj[key], key, source)
        if not known.get("creator_notes") and obj.get("creatorcomment"):
            known["creator_notes"] = _text(obj["creatorcomment"], "creatorcomment", source)
        for key, value in obj.items():
            if key not in MIRROR_KEYS and key not in ("spec", "spec_version", "data"):
                extra.setdefault(key, value)
        return cls._build(known, extra, source, "data.")

    @classmethod
    def _build(cls, known: dict, extra: dict, source: str, prefix: str) -> "CharacterCard":
        if not known.get("name"):
            raise card_error(source, f"{prefix}name", "missing or empty; a card needs a name")
        return cls(**known, extra=extra)

    def to_fields(self, required: tuple[str, ...] = V2_FIELDS) -> dict:
        """Flat mapping of the `required` fields, every other set one, then `extra`; lists, not tuples.

        This is persona.yaml's card part and the `data` of spec documents.
        """
        out = {}
        for key in READERS:
            value = getattr(self, key)
            if key in required and key != "character_book" or value not in (None, "", (), {}):
                out[key] = list(value) if isinstance(value, tuple) else value
        out.update((k, v) for k, v in self.extra.items() if k not in out)
        return out

    def to_v2(self) -> dict:
        """A chara_card_v2 document; V3 fields that are set ride along in `data` as SillyTavern does."""
        return self._document(SPEC_V2, "2.0", required=V2_FIELDS)

    def to_v3(self) -> dict:
        """A chara_card_v3 document, with the V1 mirror at the top level for older readers."""
        return self._document(SPEC_V3, "3.0", required=V2_FIELDS + ("group_only_greetings",))

    def _document(self, spec: str, version: str, required: tuple[str, ...]) -> dict:
        doc = {"name": self.name, "description": self.description, "personality": self.personality,
               "scenario": self.scenario, "first_mes": self.first_mes, "mes_example": self.mes_example,
               "creatorcomment": self.creator_notes, "avatar": "none", "tags": list(self.tags)}
        doc.update((k, self.extensions[k]) for k in ("talkativeness", "fav") if k in self.extensions)
        doc.update(spec=spec, spec_version=version, data=self.to_fields(required))
        return doc


def _refuse_lone_surrogates(fields: dict, source: str) -> None:
    """JSON (and YAML) can spell text that is not Unicode ("\\ud800"): refused before the card is kept,
    since nothing could tokenize, store or export it."""
    found = lone_surrogate(fields)
    if found:
        raise CardError(f"{source}: field '{found[0]}': {surrogate_problem(found[1])}")  # the path is escaped already


def _same_text(a: Any, b: Any) -> bool:
    return isinstance(a, str) and isinstance(b, str) and _text(a, "", "") == _text(b, "", "")


def _read_known(fields: dict, prefix: str, source: str) -> tuple[dict, dict]:
    """Splits a mapping into read known fields (None values dropped) and unknown ones (kept verbatim)."""
    known, unknown = {}, {}
    for key, value in fields.items():
        if key in READERS:
            if value is not None:
                known[key] = READERS[key](value, f"{prefix}{key}", source)
        else:
            unknown[key] = value
    return known, unknown
