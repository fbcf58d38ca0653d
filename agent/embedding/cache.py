"""Keeps encoded modality tokens on disk, so an unchanged persona loads in milliseconds instead of re-encoding.

One safetensors file per modality, named by the sha256 of the encoder's identity and the bytes it reads
(card text, portrait, voice sample): a changed file or another encoder misses. Hands tokens to fusion.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Optional

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..atomic import write_atomically
from ..persona.store import Persona
from .encoders import MODALITIES, ModalityTokens, PersonaEncoder

log = logging.getLogger(__name__)


def cache_key(identity: str, source: bytes) -> str:
    """64 hex digits of sha256(encoder identity, the bytes it encodes)."""
    return hashlib.sha256(identity.encode("utf-8") + b"\0" + source).hexdigest()


class EmbeddingCache:
    """`<folder>/<modality>-<cache_key>.safetensors`, each holding one (n, d) float32 `tokens` tensor.

    Files are content-addressed, so personas with the same portrait share one and an edited card
    leaves the old file behind (a few KB to a few hundred KB each); deleting the folder is always safe.
    """

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.hits = 0  # modalities read from disk so far
        self.misses = 0  # modalities encoded (and written) so far

    def file(self, modality: str, key: str) -> Path:
        return self.folder / f"{modality}-{key}.safetensors"

    def encode(self, persona: Persona, encoder: PersonaEncoder) -> dict[str, ModalityTokens]:
        """encoder.encode(persona), reading each modality from disk when its identity and bytes are unchanged."""
        out = {}
        for modality in MODALITIES:
            identity, source = encoder.identity(modality), encoder.source(persona, modality)
            if identity is None or source is None:
                out[modality] = encoder.missing(modality)
                continue
            file = self.file(modality, cache_key(identity, source))
            tokens = self._read(file)
            if tokens is not None:
                self.hits += 1
                out[modality] = ModalityTokens(tokens, True)
                continue
            self.misses += 1
            out[modality] = encoded = encoder.encode_modality(persona, modality)
            self._write(file, encoded.tokens, {"identity": identity, "persona": persona.slug})
        return out

    def _read(self, file: Path) -> Optional[torch.Tensor]:
        if not file.is_file():
            return None
        try:
            return load_file(file)["tokens"]  # (n, d)
        except (OSError, SafetensorError, KeyError) as e:  # a damaged entry is recomputed, not fatal
            log.warning("persona embedding cache: ignoring unreadable %s (%s)", file, e)
            return None

    def _write(self, file: Path, tokens: torch.Tensor, metadata: dict[str, str]) -> None:
        """Written to a temp file beside `file`, then renamed, so a reader never sees half a file."""
        write_atomically(file, lambda tmp: save_file({"tokens": tokens.contiguous()}, tmp, metadata=metadata))
