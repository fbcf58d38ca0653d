"""Standalone lorebooks in the personae home, and which personas they are attached to.

`<home>/lore/<name>.json` holds each imported book as a `lorebook_v3` document (whatever format it came
in: SillyTavern world info, lorebook_v3, a V2 character_book); `<home>/lore/attached.yaml` maps persona
slugs to book names. Sessions attach books in the history database (HistoryStore.attach_lore).
A session's books are: the card's own character_book, the persona's attached books, the session's.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Optional, Sequence

import yaml

from ..atomic import write_text_atomically
from .lorebook import LoreError, Lorebook, card_lorebook, load_lorebook, to_v3
from .store import Persona, slugify

ATTACHED_FILE = "attached.yaml"

log = logging.getLogger(__name__)


class LoreLibrary:
    def __init__(self, folder: Path):
        self.folder = Path(folder)

    @staticmethod
    def slug(name: str) -> str:
        return slugify(name)

    def names(self) -> list[str]:
        if not self.folder.is_dir():
            return []
        return sorted(p.stem for p in self.folder.glob("*.json") if not p.name.startswith("."))  # not a half-written one

    def import_file(self, path: str | Path, *, name: Optional[str] = None, replace: bool = False) -> tuple[str, Lorebook]:
        """Reads a lorebook file (errors name the file and field) and stores it as <name>.json."""
        book = load_lorebook(path)
        if name:
            book = dataclasses.replace(book, name=name)
        slug = slugify(name or book.name or Path(path).stem)
        target = self.folder / f"{slug}.json"
        if target.exists() and not replace:
            raise LoreError(f"{path}: a lorebook {slug!r} already exists at {target}; use --replace or --name")
        write_text_atomically(target, json.dumps(to_v3(book), ensure_ascii=False, indent=1))
        return slug, self.get(slug)

    def get(self, name: str) -> Lorebook:
        path = self.folder / f"{slugify(name)}.json"
        if not path.is_file():
            available = ", ".join(self.names()) or "none yet"
            raise LoreError(f"no lorebook named {name!r} in {self.folder}; available: {available} "
                            f"(import one with `personae lore import FILE`)")
        return load_lorebook(path)

    def remove(self, name: str) -> None:
        path = self.folder / f"{slugify(name)}.json"
        if not path.is_file():
            raise LoreError(f"no lorebook named {name!r} in {self.folder}")
        path.unlink()
        attached = self.attachments()
        changed = {p: [b for b in books if b != path.stem] for p, books in attached.items()}
        self._save_attachments({p: b for p, b in changed.items() if b})

    # --- persona attachments ----------------------------------------------------------------------
    def attachments(self) -> dict[str, list[str]]:
        path = self.folder / ATTACHED_FILE
        if not path.is_file():
            return {}
        try:
            tree = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise LoreError(f"{path}: not valid YAML: {e}") from None
        if not isinstance(tree, dict) or not all(isinstance(v, list) for v in tree.values()):
            raise LoreError(f"{path}: expected a mapping of persona name -> list of lorebook names")
        return {str(k): [str(b) for b in v] for k, v in tree.items()}

    def _save_attachments(self, tree: dict[str, list[str]]) -> None:
        write_text_atomically(self.folder / ATTACHED_FILE, yaml.safe_dump(tree, sort_keys=True))

    def attach(self, persona: str, name: str) -> None:
        self.get(name)  # exists?
        tree = self.attachments()
        books = tree.setdefault(persona, [])
        if slugify(name) not in books:
            books.append(slugify(name))
        self._save_attachments(tree)

    def detach(self, persona: str, name: str) -> None:
        tree = self.attachments()
        if slugify(name) not in tree.get(persona, []):
            raise LoreError(f"lorebook {name!r} is not attached to persona {persona!r}")
        tree[persona].remove(slugify(name))
        self._save_attachments({p: b for p, b in tree.items() if b})

    def books_for(self, persona: Persona, session_books: Sequence[str] = ()) -> list[Lorebook]:
        """The card's own book, then the persona's attached books, then the session's (each once)."""
        books = []
        if persona.card.character_book:
            try:
                books.append(card_lorebook(persona.card))
            except LoreError as e:  # the card was imported and chats fine without its book: say so, go on
                log.warning("the card's lorebook is not used: %s", e)
        seen = set()
        for name in [*self.attachments().get(persona.slug, []), *session_books]:
            if name not in seen:
                seen.add(name)
                books.append(self.get(name))
        return books
