"""A whole persona from a one-line idea (or a variant of a card): draft under a schema, card, lorebook, voice.

`create_persona(store, backend, idea, ...)` renders the prompt, has the backend's constrained writer fill the
draft (draft.py), assembles the card (assemble.py) and saves the persona folder through the store, so it opens
in chat and exports like any other. The `Agent` calls it; so do the CLI, the server and the Discord bot.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from ..chat.sampling import SamplingOptions
from ..config import CreationConfig
from ..persona.card import CardError, CharacterCard
from ..persona.card_io import as_png
from ..persona.store import Persona, PersonaStore
from .assemble import assemble
from .check import stated
from .draft import Draft, write_draft
from .prompts import messages
from .schema import NAME_PATTERN
from .writers import load_writer

log = logging.getLogger(__name__)
MAX_IDEA_CHARS = 400  # an idea is one line; longer text would crowd the worked example out of small contexts


@dataclass(frozen=True)
class Created:
    persona: Persona
    draft: Draft


def check_idea(idea: str) -> str:
    text = " ".join(idea.split())
    if not text:
        raise CardError("persona create: the idea is empty; describe the character in a line")
    if len(text) > MAX_IDEA_CHARS:
        raise CardError(f"persona create: the idea is {len(text)} characters; keep it under {MAX_IDEA_CHARS}")
    return text


def check_name(name: str) -> str:
    import re

    text = " ".join(name.split())
    if not re.fullmatch(NAME_PATTERN, text):
        raise CardError(f"persona create: --name {name!r} must be 1 to 4 capitalised words of letters "
                        f"(the draft's name schema, {NAME_PATTERN})")
    return text


def _free_name(store: PersonaStore, name: str) -> str:
    """`name`, or "name 2", "name 3"... whose folder is free: a name the LM invented never replaces a persona."""
    from ..persona.store import slugify

    candidate, n = name, 1
    while (store.home.personas / slugify(candidate)).exists():
        n += 1
        candidate = f"{name} {n}"
    return candidate


def sampling(config: CreationConfig, seed: Optional[int]) -> SamplingOptions:
    return SamplingOptions(temperature=config.temperature, top_p=config.top_p, top_k=config.top_k,
                           repetition_penalty=config.repetition_penalty, seed=seed)


def write_persona_draft(backend, idea: str, config: CreationConfig, *, seed: Optional[int] = None,
                        name: Optional[str] = None, portrait: Sequence[str] = (),
                        source: Optional[CharacterCard] = None, time_limit: Optional[float] = None) -> Draft:
    """The validated draft for `idea` on a chat backend (agent/chat/backends.py), under its grammar."""
    chat = messages(idea, portrait=portrait, source=source.to_fields() if source else None)
    chat_text = backend.tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    limit = config.time_limit if time_limit is None else min(time_limit, config.time_limit)
    writer = load_writer(backend)
    try:
        return write_draft(writer, chat_text, sampling(config, seed), budget_scale=config.budget_scale,
                           fixed={("name",): name} if name else None, narrowed=stated(idea),
                           deadline=time.monotonic() + limit)
    finally:
        writer.close()


def create_persona(store: PersonaStore, backend, idea: str, *, config: CreationConfig, model: str,
                   seed: Optional[int] = None, name: Optional[str] = None, portrait: Optional[Path] = None,
                   portrait_phrases: Sequence[str] = (), source: Optional[CharacterCard] = None,
                   source_label: Optional[str] = None, replace: bool = False,
                   time_limit: Optional[float] = None) -> Created:
    """Writes and saves a new persona; `source` makes it a variant of that card with `idea` as the change.

    portrait: an image file copied in as the persona's portrait (never generated); portrait_phrases: what CLIP
    saw in it, for the prompt. An invented name that is taken gets a folder "<slug>-2"...; a `name` given that
    is taken is an error unless `replace`.
    """
    idea = check_idea(idea)
    name = check_name(name) if name else None
    image = None
    if portrait is not None:
        try:
            image = Path(portrait).read_bytes()
        except OSError as e:
            raise CardError(f"{portrait}: can't read the portrait: {e}") from None
        image = as_png(image, str(portrait))  # an unreadable image fails here, before any writing, naming its file
    draft = write_persona_draft(backend, idea, config, seed=seed, name=name, portrait=portrait_phrases,
                                source=source, time_limit=time_limit)
    card, settings = assemble(draft.values, idea=idea, model=model, seed=seed,
                              source=source_label or (source.name if source else None))
    folder_name = card.name if name or replace else _free_name(store, card.name)
    persona = store.add(card, image, settings, name=folder_name, replace=replace,
                        where=f"persona create {card.name!r}")
    log.info("created %s (%s) in %.1f s, %d fields, %d ended by their budget%s", persona.slug, card.name,
             draft.seconds, draft.leaves, len(draft.cut),
             f", closed afterwards: {', '.join(draft.repaired)}" if draft.repaired else "")
    return Created(persona, draft)
