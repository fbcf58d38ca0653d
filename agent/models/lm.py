"""Loads the causal LM and its tokenizer from an HF id, a local folder, a GGUF file or a tiny random config.

`load_lm` hands a frozen, eval-mode `LoadedLM` to what needs the transformers model: the transformers chat
backend (GPUs), training, tuning, evaluation and the persona encoder of soft modes. A GGUF file is
dequantised once (about 18 s for SmolLM2-135M) and cached as a plain transformers folder that reloads in
well under a second. The llama.cpp backend chats on the GGUF itself and never calls this.
"""
from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from ..atomic import staging_folder
from .gguf import gguf_key, read_gguf
from .packages import MissingWeights, hub_offline, is_package_ref, resolve_package_ref

RANDOM_SCHEME = "random:"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedLM:
    model: torch.nn.Module  # transformers causal LM, eval mode, no gradients
    tokenizer: object  # transformers tokenizer with a chat template
    source: str  # what was loaded, as given (for messages and cache keys)

    @property
    def context_length(self) -> int:
        return int(getattr(self.model.config, "max_position_embeddings", 2048))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def _freeze(model: torch.nn.Module, dtype: torch.dtype, device: str) -> torch.nn.Module:
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


def _pick_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"lm.device is {device!r} but torch sees no CUDA device; use lm.device=cpu")
    return device


def _looks_like_path(ref: str) -> bool:
    """HF ids are `name` or `org/name`; anything else that is not on disk was meant as a path."""
    return ref.startswith((".", "/", "~")) or ref.endswith(".gguf") or ref.count("/") > 1


def gguf_cache_folder(gguf: Path, cache_dir: Path) -> Path:
    """Where the dequantised copy of `gguf` lives; keyed by path, size and mtime so a changed file converts anew."""
    return cache_dir / f"{gguf.stem}-{gguf_key(gguf)}"


def _convert_gguf(gguf: Path, target: Path) -> None:
    """Dequantises a GGUF into a transformers folder at `target` (written to a temp folder, then renamed)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to a transformers model (once; cached in %s)", gguf.name, target.parent)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # A GGUF-loaded model carries quantizer marks that make save_pretrained refuse; the weights are plain fp32.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False
    with staging_folder(target) as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)


def _load_folder(folder: Path, dtype: torch.dtype, device: str) -> LoadedLM:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (folder / "config.json").is_file():
        ggufs = sorted(folder.glob("*.gguf"))
        hint = f"; it holds {ggufs[0].name}: pass that file instead" if ggufs else ""
        raise MissingWeights(f"LM folder {folder} has no config.json{hint}")
    from transformers.utils import logging as hf_logging

    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    hf_logging.disable_progress_bar()  # a local load takes a second; its bar is noise at every chat start
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, local_files_only=True)
    finally:
        hf_logging.enable_progress_bar()
    return LoadedLM(_freeze(model, dtype, device), tokenizer, str(folder))


def _load_hub_id(ref: str, dtype: torch.dtype, device: str, allow_download: bool) -> LoadedLM:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        with hub_offline() if not allow_download else contextlib.nullcontext():
            tokenizer = AutoTokenizer.from_pretrained(ref, local_files_only=not allow_download)
            model = AutoModelForCausalLM.from_pretrained(ref, dtype=dtype, local_files_only=not allow_download)
    except (OSError, ValueError) as e:
        how = ("download it on a machine with internet (`hf download " + ref + "`) and pass its folder, "
               "or set lm.allow_download=true")
        raise MissingWeights(
            f"LM {ref!r} is not a local file or folder and is not in the Hugging Face cache "
            f"({os.environ.get('HF_HOME', '~/.cache/huggingface')}); {how}. ({type(e).__name__}: {str(e)[:200]})"
        ) from None
    return LoadedLM(_freeze(model, dtype, device), tokenizer, ref)


def load_lm(name_or_path: str, *, dtype: str = "float32", device: str = "cpu",
            cache_dir: Optional[Path] = None, allow_download: bool = False) -> LoadedLM:
    """Loads a causal LM for chat.

    name_or_path: `random:llama|qwen` (tiny random, for tests), `pkg:module/file` (weights inside an
    installed package), a `.gguf` file, a transformers folder, or a Hugging Face id (from the local
    cache only unless `allow_download`). Missing weights raise `MissingWeights` at once.
    """
    if dtype not in DTYPES:
        raise ValueError(f"lm.dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    torch_dtype, device = DTYPES[dtype], _pick_device(device)
    if name_or_path.startswith(RANDOM_SCHEME):
        from .tiny import tiny_lm

        model, tokenizer = tiny_lm(name_or_path[len(RANDOM_SCHEME):])
        return LoadedLM(_freeze(model, torch_dtype, device), tokenizer, name_or_path)
    path = resolve_package_ref(name_or_path) if is_package_ref(name_or_path) else Path(name_or_path).expanduser()
    if path.is_file():
        if path.suffix != ".gguf":
            raise MissingWeights(f"LM file {path} is not a .gguf file; pass a GGUF file or a transformers folder")
        read_gguf(path)  # GGUFError naming the file when it is not GGUF or is cut short
        cache_dir = cache_dir or Path(tempfile.gettempdir()) / "personae-lm"
        folder = gguf_cache_folder(path, cache_dir)
        if not (folder / "config.json").is_file():
            _convert_gguf(path, folder)
        loaded = _load_folder(folder, torch_dtype, device)
        return LoadedLM(loaded.model, loaded.tokenizer, name_or_path)
    if path.is_dir():
        return _load_folder(path, torch_dtype, device)
    if _looks_like_path(name_or_path):
        raise MissingWeights(f"LM path {path} does not exist; pass an existing .gguf file, a transformers "
                             f"folder, or a Hugging Face id")
    return _load_hub_id(name_or_path, torch_dtype, device, allow_download)
