"""Persona folders: `<slug>/persona.yaml` (card fields + a `personae:` settings mapping), portrait, voice.

`PersonaStore` finds personas in the user's home and in the shipped examples, imports card files into
new folders atomically and exports them again; it hands a `Persona` to the chat and embedding stages.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import yaml

from agent.atomic import staging_folder
from agent.config import CardLimits
from agent.paths import SHIPPED_PERSONAS, Home
from agent.persona.card import CardError, CharacterCard, card_error
from agent.persona.card_io import as_png, read_card, write_card
from agent.untrusted_text import lone_surrogate, surrogate_problem

PERSONA_FILE = "persona.yaml"
SETTINGS_KEY = "personae"  # reserved top-level key in persona.yaml: personae's own settings
PORTRAIT_FILE = "portrait.png"
VOICE_FILE = "voice.wav"

log = logging.getLogger(__name__)


class UnknownPersona(LookupError):
    """No persona by that name; the message lists the ones that exist."""


@dataclass(frozen=True)
class Persona:
    slug: str  # folder name, also the short name on the command line
    folder: Path  # holds persona.yaml
    card: CharacterCard  # the character itself
    portrait: Optional[Path]  # image file inside `folder`, or None
    voice_sample: Optional[Path]  # reference audio for voice cloning, or None
    settings: dict  # the `personae:` mapping: portrait, voice_sample, tts, ...

    @property
    def name(self) -> str:
        return self.card.name


def slugify(name: str) -> str:
    """'Flux the Cat' -> 'flux-the-cat'. Only [a-z0-9-], never empty, so it is always a safe folder name."""
    ascii_text = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")[:48].strip("-")
    return slug or "persona-" + hashlib.sha256(name.encode("utf-8")).hexdigest()[:8]


def _attached(folder: Path, where: str, settings: dict, key: str, default: str) -> Optional[Path]:
    """The file named by settings[key] (it must exist inside `folder`), else `default` if present."""
    named = settings.get(key)
    if named is None:
        path = folder / default
        return path if path.is_file() else None
    if not isinstance(named, str) or not named.strip():
        raise card_error(where, f"{SETTINGS_KEY}.{key}", "expected a file name")
    path = folder / named
    if not path.resolve().is_relative_to(folder.resolve()):
        raise card_error(where, f"{SETTINGS_KEY}.{key}", f"{named!r} is outside the persona folder")
    if not path.is_file():
        raise card_error(where, f"{SETTINGS_KEY}.{key}", f"file {named!r} not found in {folder}")
    return path


def load_persona(folder: str | Path) -> Persona:
    """Reads a persona folder; a CardError names persona.yaml and the field when something is wrong."""
    folder = Path(folder)
    file = folder / PERSONA_FILE
    where = str(file)
    try:
        tree = yaml.safe_load(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CardError(f"{where}: not found; a persona folder needs a {PERSONA_FILE}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise CardError(f"{where}: can't read it: {e}") from None
    except yaml.YAMLError as e:
        raise CardError(f"{where}: not valid YAML: {e}") from None
    if not isinstance(tree, dict):
        raise CardError(f"{where}: the top level must be a mapping of card fields (name, description, ...)")
    settings = tree.pop(SETTINGS_KEY, None) or {}
    if not isinstance(settings, dict):
        raise card_error(where, SETTINGS_KEY, f"expected a mapping, got {type(settings).__name__}")
    found = lone_surrogate(settings, SETTINGS_KEY)  # the card part is checked by CharacterCard
    if found:
        raise card_error(where, found[0], surrogate_problem(found[1]))
    card = CharacterCard.from_fields(tree, where)
    return Persona(slug=folder.name, folder=folder, card=card,
                   portrait=_attached(folder, where, settings, "portrait", PORTRAIT_FILE),
                   voice_sample=_attached(folder, where, settings, "voice_sample", VOICE_FILE),
                   settings=settings)


class _BlockDumper(yaml.SafeDumper):
    """Writes multi-line strings as `|` blocks so persona.yaml reads like the card text."""


def _represent_text(dumper: yaml.SafeDumper, text: str) -> yaml.Node:
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_BlockDumper.add_representer(str, _represent_text)


def save_persona(card: CharacterCard, folder: str | Path, portrait: Optional[bytes] = None,
                 settings: Optional[dict] = None) -> Persona:
    """Writes persona.yaml (and portrait.png when `portrait` bytes are given) into `folder`."""
    folder = Path(folder)
    where = str(folder / PERSONA_FILE)
    if SETTINGS_KEY in card.extra:  # a card must not be able to set personae's own settings
        raise card_error(where, SETTINGS_KEY, "is reserved for personae's settings; rename the card's field")
    settings = dict(settings or {})
    folder.mkdir(parents=True, exist_ok=True)
    if portrait is not None:
        (folder / PORTRAIT_FILE).write_bytes(as_png(portrait, str(folder / PORTRAIT_FILE)))
        settings["portrait"] = PORTRAIT_FILE
    tree = {**card.to_fields(), SETTINGS_KEY: settings}
    text = yaml.dump(tree, Dumper=_BlockDumper, allow_unicode=True, sort_keys=False, width=1 << 20)  # no folding
    (folder / PERSONA_FILE).write_text(text, encoding="utf-8")
    return load_persona(folder)


def _same_name(a: str, b: str) -> bool:
    return " ".join(a.split()).casefold() == " ".join(b.split()).casefold()


class PersonaStore:
    """User personas in `home.personas`, then the shipped examples; a user folder shadows a shipped one."""

    def __init__(self, home: Home, limits: CardLimits, shipped: Path = SHIPPED_PERSONAS):
        self.home = home
        self.limits = limits
        self.shipped = Path(shipped)

    def _folders(self) -> dict[str, Path]:
        """slug -> folder, user folders first; hidden (in-progress import) folders are skipped."""
        found: dict[str, Path] = {}
        for root in (self.home.personas, self.shipped):
            if root.is_dir():
                for folder in sorted(root.iterdir()):
                    if not folder.name.startswith(".") and (folder / PERSONA_FILE).is_file():
                        found.setdefault(folder.name, folder)
        return found

    def _loaded(self) -> list[Persona]:
        personas = []
        for folder in self._folders().values():
            try:
                personas.append(load_persona(folder))
            except CardError as e:  # one broken folder must not hide the others
                log.warning("skipping persona %s: %s", folder, e)
        return personas

    def list(self) -> list[Persona]:
        """Every usable persona, sorted by slug; broken folders are logged and skipped."""
        return sorted(self._loaded(), key=lambda p: p.slug)

    def get(self, name_or_path: str | Path) -> Persona:
        """A persona by folder path, slug or card name (case-insensitive); user personas win."""
        text = str(name_or_path).strip()
        if isinstance(name_or_path, Path) or "/" in text or os.sep in text or text.startswith(("~", ".")):
            folder = Path(text).expanduser()
            if not (folder / PERSONA_FILE).is_file():
                raise UnknownPersona(f"{folder}: no {PERSONA_FILE} in that folder")
            return load_persona(folder)
        folders = self._folders()
        for slug, folder in folders.items():
            if slug.casefold() == text.casefold():
                return load_persona(folder)
        personas = self._loaded()
        for persona in personas:
            if _same_name(persona.name, text) or persona.card.nickname and _same_name(persona.card.nickname, text):
                return persona
        available = ", ".join(sorted(folders)) or "none yet"
        raise UnknownPersona(f"no persona named {text!r}; available: {available} "
                             f"(or give a folder with a {PERSONA_FILE}, or import a card)")

    def import_file(self, path: str | Path, *, name: Optional[str] = None, replace: bool = False) -> Persona:
        """Imports a PNG/JSON/CHARX card as a new persona folder (see `add`), named after the card (or `name`)."""
        card, portrait = read_card(path, self.limits)
        return self.add(card, portrait, name=name, replace=replace, where=str(path))

    def add(self, card: CharacterCard, portrait: Optional[bytes] = None, settings: Optional[dict] = None, *,
            name: Optional[str] = None, replace: bool = False, where: str = "new persona") -> Persona:
        """Saves `card` as a new persona folder named after the card (or `name`); `where` names it in errors.

        The folder is built under a hidden temporary name and renamed into place, so a failure leaves
        personas/ as it was. An existing persona with the same slug is an error unless `replace`.
        """
        slug = slugify(name or card.name)
        root = self.home.personas
        target = root / slug
        if target.exists() and not replace:
            raise CardError(f"{where}: a persona {slug!r} already exists at {target}; "
                            "use replace=True (--replace) to overwrite it, or pick another name")
        created_root = not root.exists()
        try:
            with staging_folder(target) as staging:
                save_persona(card, staging, portrait, settings or {})
        except BaseException:
            if created_root and root.is_dir() and not any(root.iterdir()):
                root.rmdir()
            raise
        return load_persona(target)

    def export(self, name: str, fmt: str, out_path: str | Path) -> Path:
        """Writes persona `name` as a "png", "json" or "charx" card; a folder `out_path` gets <slug>.<fmt>."""
        persona = self.get(name)
        out = Path(out_path)
        if out.is_dir():
            out = out / f"{persona.slug}.{fmt}"
        portrait = persona.portrait.read_bytes() if persona.portrait else None
        return write_card(persona.card, portrait, out, fmt)
