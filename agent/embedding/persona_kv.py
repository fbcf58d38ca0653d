"""embedding.conditioning=kv: every prompt's system turn replaced by the persona's KV cells.

    prompt ids (card mode):  [system turn (T)] [greeting, history, user turn ...]
    prompt ids (kv mode):    [kept ids (n) + tail] [greeting, history, user turn ...]   n + tail << T

The cells for a system turn are built once (`build(plan) -> handle`, the backend's: a DynamicCache for
transformers, a shared llama.cpp sequence) and kept in a small LRU keyed by the plan, so every session of a
persona shares them; a decoder starts from them with `adopt(prefix_ids, handle)`, and its later prompts extend
those ids, so they are never recomputed as text. A card edit or other lore gives another system turn, another
plan, other cells.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Iterable, Sequence

from ..chat.prompt import Prompt, build_messages, render
from .kv_cells import CellPlan, TfIdf, plan_cells, tokenizer_key

PACKAGED_IDF = Path(__file__).with_name("kv_idf.json")  # the embedded LM's, from the training personas' cards
log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class KVSettings:
    m: int = 52  # body cells kept by tf-idf (embedding.kv_cells)
    header: str = "name"  # name | main | none (embedding.kv_header)
    unique: bool = True  # one cell per token id (embedding.kv_unique); False: a repeated name may fill many


class PersonaKV:
    """tokenizer: the chat tokenizer; tfidf: token document frequencies of reference cards; build: CellPlan ->
    the backend's cells handle (what its decoders' `adopt` takes)."""

    def __init__(self, tokenizer, tfidf: TfIdf, build: Callable[[CellPlan], object], settings: KVSettings = KVSettings(),
                 max_items: int = 16):
        self.tokenizer, self.tfidf, self.build, self.settings = tokenizer, tfidf, build, settings
        self.max_items = max_items
        self._plans: OrderedDict = OrderedDict()  # (system ids, name) -> CellPlan
        self._cells: OrderedDict = OrderedDict()  # plan key -> handle
        self._lock = threading.Lock()
        self.built = 0  # cells built (each a pass over a system turn)

    def plan(self, system_ids: Sequence[int], name: str) -> CellPlan:
        key = (tuple(system_ids), name)
        with self._lock:
            found = self._plans.get(key)
            if found is not None:
                self._plans.move_to_end(key)
                return found
        plan = plan_cells(self.tokenizer, system_ids, name, self.tfidf, m=self.settings.m,
                          header=self.settings.header, unique=self.settings.unique)
        with self._lock:
            self._plans[key] = plan
            while len(self._plans) > 4 * self.max_items:
                self._plans.popitem(last=False)
        return plan

    def cells(self, plan: CellPlan):
        """The backend's cells for `plan`, built on first use (one pass over the system turn)."""
        key = plan.key()
        with self._lock:
            found = self._cells.get(key)
            if found is not None:
                self._cells.move_to_end(key)
                return found
        handle = self.build(plan)
        with self._lock:
            self.built += 1
            self._cells[key] = handle
            while len(self._cells) > self.max_items:
                self._cells.popitem(last=False)
        return handle

    def system_ids(self, prompt: Prompt) -> list[int]:
        """The ids of `prompt`'s system turn (its first message), which its ids must start with."""
        if not prompt.messages or prompt.messages[0]["role"] != "system":
            raise ValueError("kv conditioning needs a prompt that starts with the card's system turn")
        _, ids = render(self.tokenizer, prompt.messages[:1], 0, add_generation_prompt=False)
        if list(prompt.ids[:len(ids)]) != ids:
            raise ValueError("the rendered prompt does not start with its own system turn's tokens; "
                             "kv conditioning cannot replace it (an unusual chat template?)")
        return ids

    def apply(self, prompt: Prompt, name: str) -> tuple[Prompt, CellPlan]:
        """`prompt` with its system turn replaced by the plan's prefix ids, and the plan."""
        system = self.system_ids(prompt)
        plan = self.plan(system, name)
        kept = self.tokenizer.decode([t for t in plan.prefix_ids if t >= 0])  # gist slots (-1..-K) have no text
        text = f"[persona KV: {len(plan.prefix_ids)} of {len(system)} system-turn cells: {kept!r}]\n" + \
            prompt.text[len(self.tokenizer.decode(system)):]
        return dataclasses.replace(prompt, ids=plan.prefix_ids + list(prompt.ids[len(system):]), text=text), plan

    def saved_tokens(self, card, user: str) -> int:
        """Prompt tokens the cells save on `card`'s plain system turn (no lore): T - (n + tail)."""
        ids = system_turn_ids(self.tokenizer, card, user)
        return len(ids) - len(self.plan(ids, card.name).prefix_ids)

    def start(self, decoder, plan: CellPlan) -> None:
        """Makes `decoder` start from `plan`'s cells unless its cache already does."""
        prefix = plan.prefix_ids
        if list(decoder.ids[:len(prefix)]) == prefix:
            return
        handle = self.cells(plan)
        decoder.reset()
        decoder.adopt(prefix, handle)


def system_turn_ids(tokenizer, card, user: str) -> list[int]:
    """The ids of `card`'s plain system turn (no lore), as chat renders it."""
    return render(tokenizer, build_messages(card, [], user)[:1], 0, add_generation_prompt=False)[1]


def load_tfidf(path: str, tokenizer, cards: Iterable, user: str = "User") -> TfIdf:
    """embedding.kv_idf's counts: `path`, or ("") the packaged file when it counts this tokenizer's tokens, else
    counts over `cards` (the installed personas') system turns, with a warning that they are few."""
    key = tokenizer_key(tokenizer)
    if path:
        if not Path(path).is_file():
            raise ValueError(f"embedding.kv_idf {path} does not exist; build one with scripts/make_kv_idf.py")
        return TfIdf.load(Path(path), tokenizer_key=key)
    if PACKAGED_IDF.is_file():
        try:
            return TfIdf.load(PACKAGED_IDF, tokenizer_key=key)
        except ValueError:
            pass  # another LM's tokenizer: count below
    cards = list(cards)
    if not cards:
        raise ValueError("embedding.conditioning=kv: no token counts for this LM's tokenizer (the packaged file is "
                         "the embedded LM's) and no personas to count; build one with scripts/make_kv_idf.py and "
                         "set embedding.kv_idf")
    log.warning("embedding.kv_idf: counting token frequencies over the %d installed personas (the packaged counts "
                "are for another tokenizer); scripts/make_kv_idf.py builds better ones from many cards", len(cards))
    return TfIdf.from_ids(system_turn_ids(tokenizer, card, user) for card in cards)


def load_persona_kv(embedding, backend, cards: Iterable = (), user: str = "User") -> PersonaKV:
    """The PersonaKV chat and evaluation use for embedding.conditioning=kv on `backend` (one with `persona_cells`:
    transformers or llama.cpp). embedding: EmbeddingConfig; cards: the installed personas' (df fallback)."""
    from ..config import ConfigError

    if not hasattr(backend, "persona_cells"):
        raise ConfigError(f"embedding.conditioning=kv keeps the persona as cells of the LM's own KV cache, which "
                          f"lm.backend={backend.name} (an LM in another process) cannot take; use "
                          f"embedding.conditioning=summary to save context with it, or card")
    tfidf = load_tfidf(embedding.kv_idf, backend.tokenizer, cards, user)
    return PersonaKV(backend.tokenizer, tfidf, backend.persona_cells,
                     KVSettings(m=embedding.kv_cells, header=embedding.kv_header))
