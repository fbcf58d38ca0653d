"""Logging for the command line: `setup_logging()` sends the `agent` package's records to stderr as short
`[personae] ...` lines (INFO and up; DEBUG too when PERSONAE_DEBUG is set). Library use stays quiet without it.
"""
from __future__ import annotations

import logging
import os
import sys

DEBUG_ENV = "PERSONAE_DEBUG"  # set (non-empty) for DEBUG records too, as for the CLI's tracebacks
PACKAGE = "agent"  # the logger every module's `logging.getLogger(__name__)` sits under


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
        handler.setFormatter(_Format("%(message)s"))
        logger.addHandler(handler)
    return logger
