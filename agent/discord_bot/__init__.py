"""`personae discord`: every persona as a Discord bot, with per-channel sessions in the same history database.

`run_bot(agent)` reads the token from DISCORD_TOKEN and runs `PersonaeBot` (bot.py) on a `DiscordBrain` (brain.py).
"""
from __future__ import annotations

import logging
import os

from ..logs import Redact, add_secret

TOKEN_ENV = "DISCORD_TOKEN"
PORTAL = "https://discord.com/developers/applications"


class BotError(RuntimeError):
    """The bot can't start: a missing or rejected token, or an intent not enabled. Never contains the token."""


def read_token() -> str:
    """The token from DISCORD_TOKEN, registered as a secret: no log record or error line of personae's shows it."""
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise BotError(f"{TOKEN_ENV} is not set: create a bot in {PORTAL} (Bot > Reset Token) "
                       f"and export {TOKEN_ENV}=<token>")
    add_secret(token)
    return token


def run_bot(agent, *, log_level: int = logging.INFO) -> None:
    """Runs the bot until Ctrl-C; raises BotError with a clear message for a missing or invalid token."""
    import discord

    from .bot import PersonaeBot
    from .brain import DiscordBrain

    token = read_token()
    handler = logging.StreamHandler()
    handler.addFilter(Redact())  # discord.py's records, and personae's that reach the root logger
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    bot = PersonaeBot(DiscordBrain(agent))
    try:
        bot.run(token, log_handler=handler, log_level=log_level, root_logger=True)
    except discord.LoginFailure:
        raise BotError(f"Discord rejected {TOKEN_ENV} (invalid or reset token): copy a fresh one from {PORTAL}") from None
    except discord.PrivilegedIntentsRequired:
        raise BotError("the Message Content intent is not enabled: turn it on in the Developer Portal "
                       "under Bot > Privileged Gateway Intents") from None
