"""Personas: Character Cards (V1/V2/V3, PNG/JSON/CHARX) read into folders that the chat stages use.

`PersonaStore.get(name)` hands a `Persona` (card, portrait, voice sample, settings) to the rest of personae.
"""
from agent.persona.card import CardError, CharacterCard
from agent.persona.store import Persona, PersonaStore, UnknownPersona

__all__ = ["CardError", "CharacterCard", "Persona", "PersonaStore", "UnknownPersona"]
