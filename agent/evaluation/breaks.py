"""The break detector the evaluation scores with: the chat's own (agent/chat/breaks.py), so `personae eval` counts
exactly what the chat's guard checks."""
from ..chat.breaks import NAME_LIKENESS, NOT_NAMES, PROMPT_PHRASES, PROMPT_RUN_WORDS, RULES, Rule, detect_break

__all__ = ["NAME_LIKENESS", "NOT_NAMES", "PROMPT_PHRASES", "PROMPT_RUN_WORDS", "RULES", "Rule", "detect_break"]
