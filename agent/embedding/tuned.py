"""The tuned soft prompt of one persona on disk: `<home>/personas/<slug>/soft_prompt.safetensors`.

`personae tune` writes it (`save_tuned`); chat reads it with `load_tuned` and uses its (K, d_lm) vectors
instead of the adapter's, but only for the LM and the card it was fitted to (`card_fingerprint`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from ..atomic import write_atomically
from ..persona.card import CharacterCard

TUNED_FORMAT = "personae-tuned-soft-prompt"  # safetensors metadata "format" of a tuned soft prompt
TUNED_VERSION = "1"
TUNED_FILE = "soft_prompt.safetensors"  # its name inside the persona's folder under the personae home


@dataclass(frozen=True)
class TunedPrompt:
    soft: torch.Tensor  # (K, d_lm) float32, what replaces the adapter's output for this persona
    persona: str  # the persona slug it was tuned for
    lm: str  # the LM source it was tuned against; another LM must not use it
    metadata: dict  # everything else saved with it (adapter, card fingerprint, steps, losses)

    def fits(self, lm_source: str, card: CharacterCard) -> bool:
        """Whether chat may use it: tuned against this LM, for this very card."""
        return self.lm == lm_source and self.metadata.get("card") == card_fingerprint(card)


def tuned_path(home, slug: str) -> Path:
    """Where `personae tune` keeps a persona's tuned soft prompt: <home>/personas/<slug>/soft_prompt.safetensors."""
    return home.personas / slug / TUNED_FILE


def card_fingerprint(card: CharacterCard) -> str:
    """sha256 of every card field: a tuned soft prompt is only used with the card it was fitted to."""
    fields = json.dumps(dataclasses.asdict(card), sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(fields.encode("utf-8")).hexdigest()


def save_tuned(path: Path, soft: torch.Tensor, metadata: dict[str, str]) -> Path:
    """soft: (K, d_lm); metadata: strings, with at least "persona", "lm" and "card" (its `card_fingerprint`)."""
    tensors = {"soft_prompt": soft.detach().float().cpu().contiguous()}
    meta = {"format": TUNED_FORMAT, "version": TUNED_VERSION, **metadata}
    return write_atomically(Path(path), lambda tmp: save_file(tensors, str(tmp), metadata=meta))


def load_tuned(path: str | Path) -> TunedPrompt:
    """A tuned soft prompt written by `save_tuned`; ValueError naming the file when it is not one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"tuned soft prompt {path} does not exist; make one with `personae tune`")
    try:
        with safe_open(str(path), framework="pt") as file:
            metadata = dict(file.metadata() or {})
        if metadata.get("format") != TUNED_FORMAT or metadata.get("version") != TUNED_VERSION:
            raise ValueError(f"format {metadata.get('format')!r} v{metadata.get('version')}, "
                             f"not {TUNED_FORMAT!r} v{TUNED_VERSION}")
        soft = load_file(path)["soft_prompt"]
        if soft.dim() != 2:
            raise ValueError(f"soft_prompt has shape {tuple(soft.shape)}, expected (K, d)")
    except (SafetensorError, KeyError, ValueError) as e:
        raise ValueError(f"{path}: not a usable tuned soft prompt ({e})") from None
    return TunedPrompt(soft, metadata.pop("persona", ""), metadata.pop("lm", ""), metadata)
