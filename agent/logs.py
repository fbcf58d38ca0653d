"""Logging for the command line: `setup_logging()` sends the `agent` package's records to stderr as short
`[personae] ...` lines (INFO and up; DEBUG too when PERSONAE_DEBUG is set). Library use stays quiet without it.

Secrets (the Discord token) registered with `add_secret` never leave in a record: the `Redact` filter on
personae's handlers cuts them from the message, its args and the exception's traceback, and `redacted(text)`
does the same for what the command line prints on its way out.
"""
from __future__ import annotations

import logging
import os
import sys

DEBUG_ENV = "PERSONAE_DEBUG"  # set (non-empty) for DEBUG records too, as for the CLI's tracebacks
PACKAGE = "agent"  # the logger every module's `logging.getLogger(__name__)` sits under
REDACTED = "[REDACTED]"
_SECRETS: set[str] = set()  # texts no log line or error message may show


def add_secret(secret: str) -> None:
    """From now on `secret` (a token) is replaced by [REDACTED] in every record personae's handlers write."""
    if secret.strip():
        _SECRETS.add(secret.strip())


def redacted(text: str) -> str:
    """`text` with every registered secret replaced."""
    for secret in _SECRETS:
        text = text.replace(secret, REDACTED)
    return text


class Redact(logging.Filter):
    """Cuts the registered secrets out of a record: its message (with args), traceback and stack text.

    The record is changed in place, so every handler after this one sees the cleaned record too.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if not _SECRETS:
            return True
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken logging call: the handler's emit reports it
            return True
        if redacted(message) != message:
            record.msg, record.args = redacted(message), None
        if record.exc_info and not record.exc_text:  # formatters reuse exc_text: fill it with the clean text
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redacted(record.exc_text)
        if record.stack_info:
            record.stack_info = redacted(record.stack_info)
        return True


class _Format(logging.Formatter):
    """`[personae] message` for progress lines; warnings and errors say their level."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if record.levelno >= logging.WARNING:
            return f"[personae] {record.levelname.lower()}: {text}"
        return f"[personae] {text}"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a record comes (tests and front-ends may swap it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value):
        pass


def setup_logging() -> logging.Logger:
    """Configures the `agent` logger for command-line use; calling it again changes only the level."""
    logger = logging.getLogger(PACKAGE)
    logger.setLevel(logging.DEBUG if os.environ.get(DEBUG_ENV) else logging.INFO)
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.addFilter(Redact())
        handler.setFormatter(_Format("%(message)s"))
        logger.addHandler(handler)
    return logger
