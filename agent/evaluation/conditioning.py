"""A conditioning mode (agent/conditioning.py) applied to evaluation personas: their cards, soft prompts, prompts.

A `Conditioning` gives, for each persona, the card its prompt is built from (`shown_card`: with the card text,
or only the one-line default system prompt) and its (K, d_lm) soft prompt; the metrics render prompts
through the chat path's own `fit_prompt`, so what is scored is what a chat would see.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Sequence

import torch

from ..chat.prompt import Message, Prompt, build_messages, fit_prompt, render
from ..conditioning import MODES, Mode, shown_card
from ..embedding.encoders import MODALITIES, ModalityTokens, PersonaEncoder
from ..persona.card import CharacterCard
from ..persona.store import Persona

PROBE_TURN = "Hello."  # the user turn that prices the post-history instructions in `prompt_tokens`
__all__ = ["MODES", "Mode", "Conditioning", "PersonaModalities", "SoftPrompts"]  # the registry is agent/conditioning.py



class PersonaModalities:
    """persona -> its modality tokens, through a persona encoder and the on-disk embedding cache; memoised.

    encoder: builds the `PersonaEncoder` (and with it Whisper, and CLIP when enabled) on first use;
    cache_dir: the embedding cache's folder.
    """

    def __init__(self, encoder: Callable[[], PersonaEncoder], cache_dir):
        self._build, self.cache_dir = encoder, cache_dir
        self._encoder = None
        self._cache = None
        self._tokens: dict[str, dict[str, ModalityTokens]] = {}

    def __call__(self, persona: Persona) -> dict[str, ModalityTokens]:
        if persona.slug not in self._tokens:
            if self._encoder is None:
                from ..embedding.cache import EmbeddingCache

                self._encoder = self._build()
                self._cache = EmbeddingCache(self.cache_dir)
            self._tokens[persona.slug] = self._cache.encode(persona, self._encoder)
        return self._tokens[persona.slug]


class SoftPrompts:
    """Soft prompts from one adapter: persona (and modalities to mask out) -> (K, d_lm) on the LM's device and dtype.

    adapter: a loaded `Fusion`; modalities: persona -> {modality: ModalityTokens}. Memoised, so a persona's
    prompt is one tensor object for the whole run (the metrics use that to skip identical inputs).
    """

    def __init__(self, adapter: torch.nn.Module, modalities: Callable[[Persona], dict[str, ModalityTokens]], *,
                 device: torch.device, dtype: torch.dtype):
        self.adapter = adapter
        self.modalities = modalities
        self.device, self.dtype = device, dtype
        self._soft: dict[tuple[str, tuple[str, ...]], torch.Tensor] = {}

    def __call__(self, persona: Persona, drop: Sequence[str] = ()) -> torch.Tensor:
        key = (persona.slug, tuple(sorted(drop)))
        if key not in self._soft:
            unknown = [m for m in drop if m not in MODALITIES]
            if unknown:
                raise ValueError(f"unknown modality {unknown[0]!r} to drop; choose from: {', '.join(MODALITIES)}")
            tokens = dict(self.modalities(persona))
            for modality in drop:
                tokens[modality] = ModalityTokens.missing(tokens[modality].tokens.shape[-1])
            with torch.inference_mode():
                soft = self.adapter.soft_prompt(tokens)  # (K, d_lm)
            self._soft[key] = soft.to(self.device, self.dtype)
        return self._soft[key]


class Conditioning:
    """One mode applied to personas. `drop` masks modalities out of the soft prompt (the ablation)."""

    def __init__(self, name: str, mode: Mode, soft_prompts: Optional[SoftPrompts] = None, drop: Sequence[str] = (),
                 summarise: Optional[Callable[[CharacterCard], CharacterCard]] = None, kv=None):
        if mode.soft and soft_prompts is None:
            raise ValueError(f"mode {name!r} needs soft prompts from a {mode.adapter} adapter")
        if mode.summary and summarise is None:
            raise ValueError(f"mode {name!r} needs the card summary (summarise=)")
        if mode.kv and kv is None:
            raise ValueError(f"mode {name!r} needs the persona KV cells (kv=PersonaKV)")
        if drop and not mode.soft:
            raise ValueError(f"mode {name!r} has no soft prompt to drop modalities from")
        self.name, self.mode, self.drop = name, mode, tuple(drop)
        self.soft_prompts = soft_prompts if mode.soft else None
        self.summarise = summarise if mode.summary else None
        self.kv = kv if mode.kv else None  # PersonaKV (agent/embedding/persona_kv.py): the system turn as cells

    @property
    def with_card(self) -> bool:
        return self.mode.card_text

    def card(self, persona: Persona) -> CharacterCard:
        """The card the prompt is built from: the persona's own, its summary, or one with no text beyond the name."""
        return shown_card(persona.card, self.mode, self.summarise)

    def persona(self, persona: Persona) -> Persona:
        """`persona` as this mode shows it to a `ChatSession`."""
        return dataclasses.replace(persona, card=self.card(persona))

    def soft(self, persona: Persona) -> Optional[torch.Tensor]:
        """(K, d_lm) soft prompt, or None for modes without one."""
        return None if self.soft_prompts is None else self.soft_prompts(persona, self.drop)

    def soft_tokens(self, persona: Persona) -> int:
        soft = self.soft(persona)
        return 0 if soft is None else soft.shape[0]

    def prompt(self, tokenizer, persona: Persona, history: Sequence[Message], user: str, *, budget: int,
               kept_from: int = 1) -> Prompt:
        """fit_prompt for this mode: soft placeholders -1..-K when there is a soft prompt; in kv mode the system
        turn's ids replaced by the cells' (`start(decoder, prompt)` gives a decoder those cells)."""
        card = self.card(persona)
        if self.kv is not None:
            budget += self.kv.saved_tokens(card, user)
        prompt = fit_prompt(tokenizer, card, history, user, budget=budget, kept_from=kept_from,
                            soft_tokens=self.soft_tokens(persona), with_card=self.with_card)
        return prompt if self.kv is None else self.kv.apply(prompt, card.name)[0]

    def start(self, decoder, tokenizer, persona: Persona, user: str) -> None:
        """kv mode: makes `decoder` start from `persona`'s cells (other modes: nothing to do)."""
        if self.kv is not None:
            card = self.card(persona)
            _, ids = render(tokenizer, build_messages(card, [], user, with_card=self.with_card)[:1], 0,
                            add_generation_prompt=False)
            self.kv.start(decoder, self.kv.plan(ids, card.name))

    def prompt_tokens(self, tokenizer, persona: Persona, user: str) -> int:
        """Context tokens this conditioning costs: the whole system turn (K soft slots included, chat-template
        markers too) plus the post-history instructions that follow one user turn."""
        card, k = self.card(persona), self.soft_tokens(persona)
        system = build_messages(card, [], user, with_card=self.with_card)
        _, system_ids = render(tokenizer, system, k, add_generation_prompt=False)
        if self.kv is not None:  # the cells and the tail stand for the system turn
            system_ids = self.kv.plan(system_ids, card.name).prefix_ids
        turn = [Message("user", PROBE_TURN)]
        _, with_phi = render(tokenizer, build_messages(card, turn, user, with_card=self.with_card), k)
        bare = dataclasses.replace(card, post_history_instructions="")
        _, without_phi = render(tokenizer, build_messages(bare, turn, user, with_card=self.with_card), k)
        return len(system_ids) + len(with_phi) - len(without_phi)
