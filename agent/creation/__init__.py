"""Persona creation: a whole character (card, lorebook, voice) from a one-line idea, written under a JSON schema.

`create_persona` (create.py) is the entry point; schema.py is the draft's shape, writers.py picks the
constrained decoding of the chat backend (llama.cpp grammars, xgrammar, an engine's grammar field).
"""
