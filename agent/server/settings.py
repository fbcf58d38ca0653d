"""The server's settings, read from the environment (PERSONAE_*) by pydantic-settings.

`ServerSettings` holds the bind address, the API key and every cap the routes and the job runners enforce;
`check_bind` refuses to expose the server beyond this machine without a key.
"""
from __future__ import annotations

import ipaddress
from typing import Optional

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from ..config import ConfigError


class ServerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PERSONAE_", extra="ignore", frozen=True)

    host: str = "127.0.0.1"  # bind address; anything but loopback needs api_key
    port: int = Field(8000, ge=0, le=65535)  # 0 picks a free port
    api_key: Optional[SecretStr] = None  # PERSONAE_API_KEY: every route but /health then needs `Bearer <key>`
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024)  # JSON request bodies larger than this get 413
    max_upload_bytes: int = Field(25 * 1024 * 1024, ge=1024)  # multipart uploads (audio, cards) larger than this get 413
    max_tokens: int = Field(1024, ge=1)  # the largest max_tokens a request may ask for
    max_messages: int = Field(2048, ge=1)  # messages in one chat request
    max_speech_chars: int = Field(4096, ge=1)  # input of one /v1/audio/speech request
    max_generate_seconds: float = Field(120.0, gt=0)  # POST /v1/personas/generate: past this its remaining fields close early
    max_streams: int = Field(8, ge=1, le=64)  # chat jobs running at once (their decoding batched on llama.cpp; an engine gets as many requests)
    queue_size: int = Field(8, ge=1)  # chat jobs waiting for one of the max_streams places; more get 429 with Retry-After at once
    speech_threads: int = Field(1, ge=1, le=8)  # transcription and speech synthesis jobs running at once, beside the chat jobs
    max_sessions: int = Field(32, ge=1)  # sessions whose KV cache stays in memory (least recently used dropped)
    max_cached_tokens: int = Field(65536, ge=1)  # KV-cached tokens over all sessions kept in memory
    card_guard: bool = True  # add no persona card when the client's system text already holds it (card_guard.py)


def is_loopback(host: str) -> bool:
    """True for localhost and 127.0.0.0/8 or ::1; hostnames other than localhost count as exposed."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(settings: ServerSettings) -> None:
    """Raises ConfigError when the server would listen beyond this machine without an API key."""
    if not is_loopback(settings.host) and not (settings.api_key and settings.api_key.get_secret_value()):
        raise ConfigError(f"refusing to listen on {settings.host} without an API key: set PERSONAE_API_KEY, "
                          f"or bind to 127.0.0.1")
