"""Assembles the persona embedding from a config: the frozen encoders and a trained adapter checked against them.

`load_persona_encoder(config, lm, ...)` hands a `PersonaEncoder` to the cache and the adapter;
`load_checked_adapter(config, lm, encoder)` the `Fusion` that turns its tokens into (K, d_lm) soft prompts.
Chat (agent.Agent), `personae train`, `tune` and `eval` all build them here.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

from ..config import Config, ConfigError
from ..models.lm import LoadedLM
from ..models.packages import MissingWeights
from ..paths import REPO_ROOT
from .encoders import PersonaEncoder
from .fusion import Fusion, load_adapter

log = logging.getLogger(__name__)


def adapter_path(ref: str) -> Path:
    """embedding.adapter as a file: as given when it exists or is absolute, else relative to the repo.

    MissingWeights naming the reference when there is no file.
    """
    path = Path(ref).expanduser()
    if not path.is_absolute() and not path.exists():
        path = REPO_ROOT / path
    if not ref or not path.is_file():
        raise MissingWeights(f"embedding.adapter {ref!r}: no file at {path}; train one with `personae train` "
                             f"or set embedding.conditioning=card")
    return path


def load_persona_encoder(config: Config, lm: LoadedLM, *, whisper_model=None, home=None) -> PersonaEncoder:
    """The encoders config.encoder and config.clip ask for, around the chat LM `lm` (or encoder.text_model).

    whisper_model: the speech recogniser's openai-whisper model, shared with it; None loads config.whisper
    (into home's cache) when the voice is encoded. Without CLIP weights the portrait is masked out, said once.
    """
    clip = None
    if config.clip.enabled and config.encoder.image_enabled:
        from ..models.clip import load_clip

        try:
            clip = load_clip(config.clip.model, config.clip.pretrained)
        except MissingWeights as e:
            log.warning("no CLIP weights, portraits are not used: %s", e)
    if config.encoder.audio_enabled and whisper_model is None:
        from ..models.whisper import load_whisper

        whisper_model = load_whisper(config.whisper.name_or_path, device=str(lm.device),
                                     cache_dir=home.cache_dir("whisper") if home is not None else None)
    text_lm = lm
    if config.encoder.text_model:
        from ..models.lm import load_lm

        text_lm = load_lm(config.encoder.text_model, dtype=config.lm.dtype, device=str(lm.device),
                          cache_dir=home.cache_dir("lm") if home is not None else None,
                          allow_download=config.lm.allow_download)
    return PersonaEncoder(config.encoder, text_lm, whisper_model=whisper_model if config.encoder.audio_enabled else None,
                          whisper_source=config.whisper.name_or_path, clip=clip,
                          clip_source=f"{config.clip.model} {config.clip.pretrained}")


def check_adapter(adapter: Fusion, encoder: PersonaEncoder, d_lm: int, *, ref: str, lm_source: str) -> Fusion:
    """`adapter` when it was trained for these encoders and an LM d_lm wide; else a ConfigError naming `ref`."""
    wrong = [f"{m}: adapter {adapter.dims[m]} vs encoder {d}" for m, d in encoder.dims.items()
             if m in adapter.dims and adapter.dims[m] != d]
    if adapter.d_lm != d_lm:
        wrong.insert(0, f"LM width: adapter {adapter.d_lm} vs {lm_source} {d_lm}")
    if wrong:
        raise ConfigError(f"embedding.adapter {ref!r} was trained for other models ({'; '.join(wrong)}); "
                          f"train one for this config with `personae train`, or set embedding.conditioning=card")
    return adapter


def load_checked_adapter(config: Config, lm: LoadedLM, encoder: PersonaEncoder,
                         ref: Optional[str] = None) -> Fusion:
    """The adapter file `ref` (default embedding.adapter), loaded and checked against `encoder` and `lm`."""
    from .reader import attach_reader

    ref = config.embedding.adapter if ref is None else ref
    d_lm = lm.model.get_input_embeddings().weight.shape[1]
    path = adapter_path(ref)
    adapter = check_adapter(load_adapter(path), encoder, d_lm, ref=ref, lm_source=lm.source)
    attach_reader(lm.model, path)  # its reader LoRA, if it has one, now reads soft prompts in this LM
    return adapter
