"""Command-line logging: one stderr handler however often it is set up, DEBUG only when asked for."""
from __future__ import annotations

import logging

import pytest

from agent.logs import DEBUG_ENV, setup_logging


@pytest.fixture
def package_logger():
    """The `agent` logger, with its handlers and level put back after the test."""
    logger = logging.getLogger("agent")
    handlers, level = list(logger.handlers), logger.level
    logger.handlers[:] = [h for h in handlers if type(h).__name__ != "_StderrHandler"]  # an earlier CLI run's
    yield logger
    logger.handlers[:] = handlers
    logger.setLevel(level)


def test_setup_logging_twice_adds_one_handler_and_progress_lines_show(package_logger, monkeypatch, capsys):
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    setup_logging()
    setup_logging()
    assert [type(h).__name__ for h in package_logger.handlers].count("_StderrHandler") == 1
    assert package_logger.getEffectiveLevel() == logging.INFO
    logging.getLogger("agent.models.lm").info("converting model.gguf (once)")
    logging.getLogger("agent.models.lm").debug("not shown")
    logging.getLogger("agent.chat.context").warning("memory recall is off: no embedder")
    err = capsys.readouterr().err
    assert "[personae] converting model.gguf (once)" in err and "not shown" not in err
    assert "[personae] warning: memory recall is off: no embedder" in err


def test_personae_debug_switches_debug_on(package_logger, monkeypatch, capsys):
    monkeypatch.setenv(DEBUG_ENV, "1")
    setup_logging()
    assert package_logger.getEffectiveLevel() == logging.DEBUG
    logging.getLogger("agent.models.lm").debug("every detail")
    assert "[personae] every detail" in capsys.readouterr().err


TOKEN = "MTAx.secret-token-value.xyz"


@pytest.fixture
def secret(monkeypatch):
    """The Discord token read as the bot reads it (registered as a secret), forgotten after the test."""
    from agent import logs
    from agent.discord_bot import read_token

    monkeypatch.setattr(logs, "_SECRETS", set())
    monkeypatch.setenv("DISCORD_TOKEN", TOKEN)
    return read_token()


def test_a_record_and_a_traceback_holding_the_token_come_out_redacted(package_logger, secret, monkeypatch, capsys):
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    setup_logging()
    log = logging.getLogger("agent.discord_bot.bot")
    log.warning("login with %s failed", secret)
    log.info("token=" + secret)
    try:
        raise RuntimeError(f"gateway refused Bot {secret}")
    except RuntimeError:
        log.exception("could not connect")
    err = capsys.readouterr().err
    assert "login with [REDACTED] failed" in err and "token=[REDACTED]" in err
    assert "RuntimeError: gateway refused Bot [REDACTED]" in err and "Traceback" in err
    assert secret not in err


def test_the_discord_handler_redacts_discord_pys_records_too(secret):
    """run_bot's handler for discord.py's own loggers carries the same filter."""
    import io

    from agent.logs import Redact

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(Redact())
    logger = logging.getLogger("discord.http.test")
    logger.addHandler(handler)
    try:
        try:
            raise ValueError(secret)
        except ValueError:
            logger.error("POST with Authorization: Bot %s", secret, exc_info=True)
    finally:
        logger.removeHandler(handler)
    assert secret not in stream.getvalue() and stream.getvalue().count("[REDACTED]") == 2
