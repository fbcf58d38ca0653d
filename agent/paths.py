"""Where personae keeps user data: one home for personas, the sessions database and caches.

`PERSONAE_HOME` (or `--home`) puts everything under one folder; otherwise the XDG data and cache dirs.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

REPO_ROOT = Path(__file__).resolve().parent.parent
SHIPPED_PERSONAS = REPO_ROOT / "personas"  # the examples that ship with personae, always available
CONFIGS = REPO_ROOT / "configs"


@dataclass(frozen=True)
class Home:
    data: Path  # personas/ and sessions.db
    cache: Path  # converted models, persona embeddings

    @property
    def personas(self) -> Path:
        return self.data / "personas"

    @property
    def lore(self) -> Path:
        """Imported standalone lorebooks (`personae lore import`)."""
        return self.data / "lore"

    @property
    def database(self) -> Path:
        return self.data / "sessions.db"

    def session_dir(self, session_id: int) -> Path:
        """Files that belong to one conversation (spoken replies as WAV)."""
        return self.data / "sessions" / str(session_id)

    def cache_dir(self, kind: str) -> Path:
        """A cache subfolder such as cache_dir("lm"); created on first use."""
        path = self.cache / kind
        path.mkdir(parents=True, exist_ok=True)
        return path


def resolve_home(home: "Optional[str | Path | Home]" = None) -> Home:
    """--home beats PERSONAE_HOME beats the XDG dirs; a `Home` is returned as it is."""
    if isinstance(home, Home):
        return home
    root = home or os.environ.get("PERSONAE_HOME")
    if root:
        root = Path(root).expanduser().resolve()
        return Home(data=root, cache=root / "cache")
    data = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "personae"
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "personae"
    return Home(data=data, cache=cache)
