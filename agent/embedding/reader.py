"""The reader: what the chat LM learns so it reads the persona's soft vectors, on only while they are in the
input, so every other use of the LM (card mode, the teacher, the persona encoder) runs it unchanged.

Two kinds (fusion.reader): `lora`, below, and `prefix`, deep per-layer key/value prefixes made from the same
vectors (embedding/deep_prefix.py). Both are trained with the fusion adapter and saved in its file.

Input-only soft prompts are not read well by a frozen small LM (Lester et al. 2021, P-Tuning v2); gisting
trains the LM itself to read compressed prompts. `add_reader(model, rank=..., targets=...)` injects PEFT
LoRA layers (B zero-initialised: a harmless start) and leaves them switched off; `reading(model, on)` switches
them on around one forward: `CachedDecoder` and training's `logits_at` do so exactly when a soft prompt is in
their input. Its weights travel in the fusion adapter's file (`reader.*` tensors, `reader` metadata):
`reader_weights(model)` to save, `attach_reader(model, path)` to load.

Runs on the transformers backend only: llama.cpp would need the LoRA in GGUF form on a context of its own,
vLLM the LoRA as a served adapter beside prompt_embeds; neither has per-layer prefixes from outside.
"""
from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Optional

import torch

from .deep_prefix import add_prefix, get_prefix, prefixed, remove_prefix

KINDS = ("lora", "prefix")  # fusion.reader values other than none
ADAPTER_NAME = "reader"
PREFIX = "reader."  # the reader's tensors in the adapter file


@dataclass(frozen=True)
class ReaderConfig:
    rank: int = 8  # LoRA rank; prefix: rank of each layer's map of the soft vectors
    alpha: float = 16.0  # LoRA scale numerator (scale = alpha / rank)
    targets: tuple[str, ...] = ("q_proj", "v_proj")  # module names in the LM's layers that get a LoRA
    kind: str = "lora"  # lora | prefix (deep per-layer key/value prefixes, embedding/deep_prefix.py)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"reader kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.rank < 1:
            raise ValueError(f"reader rank must be >= 1, got {self.rank}")
        if self.kind == "lora" and not self.targets:
            raise ValueError("reader targets must name at least one module (e.g. q_proj, v_proj)")


LAYERS = "_personae_reader_layers"  # attribute add_reader sets on the model: its LoRA layers


def _layers(model: torch.nn.Module) -> list:
    return getattr(model, LAYERS, [])


def has_reader(model: torch.nn.Module) -> bool:
    return bool(_layers(model)) or get_prefix(model) is not None


def add_reader(model: torch.nn.Module, cfg: ReaderConfig) -> list[torch.nn.Parameter]:
    """Injects the reader into `model` (in place; switched off) and returns its trainable parameters."""
    if has_reader(model):
        raise ValueError("the LM already has a reader")
    if cfg.kind == "prefix":
        return [p.requires_grad_(True) for p in add_prefix(model, cfg.rank).parameters()]
    return _add_lora(model, cfg)


def _add_lora(model: torch.nn.Module, cfg: ReaderConfig) -> list[torch.nn.Parameter]:
    from peft import LoraConfig, inject_adapter_in_model

    lora = LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, target_modules=list(cfg.targets), lora_dropout=0.0,
                      bias="none")
    from peft.tuners.tuners_utils import BaseTunerLayer

    try:
        inject_adapter_in_model(lora, model, adapter_name=ADAPTER_NAME)
    except ValueError as e:  # PEFT: none of the target modules is in this model
        raise ValueError(f"fusion.reader_targets {','.join(cfg.targets)!r} names no module of this LM "
                         f"({str(e)[:200]})") from None
    object.__setattr__(model, LAYERS, [m for m in model.modules() if isinstance(m, BaseTunerLayer)])
    params = [p for n, p in model.named_parameters() if "lora_" in n]
    for p in params:
        p.requires_grad_(True)
    _switch(model, False)
    return params


def _switch(model: torch.nn.Module, on: bool) -> None:
    # PEFT's own enable_adapters() also flips requires_grad, which would freeze the reader between the
    # forwards that train it; the flag its forward reads is set directly (peft is pinned: 0.21.0).
    for layer in _layers(model):
        layer._disable_adapters = not on


def remove_reader(model: torch.nn.Module) -> None:
    """Takes the reader out of `model` again (its layers then run as the base layers)."""
    for layer in _layers(model):
        layer.delete_adapter(ADAPTER_NAME)
    object.__setattr__(model, LAYERS, [])
    remove_prefix(model)


@contextlib.contextmanager
def reading(model: torch.nn.Module, soft: Optional[torch.Tensor]) -> Iterator[None]:
    """The reader switched on for the block when soft vectors ((K, d) or (B, K, d)) are in this input."""
    on = soft is not None and bool(_layers(model))
    if on:
        _switch(model, True)
    try:
        with prefixed(model, soft):
            yield
    finally:
        if on:
            _switch(model, False)


def reader_weights(model: torch.nn.Module, cfg: ReaderConfig) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) to save beside the adapter's own: `reader.<parameter name>` -> weight."""
    if cfg.kind == "prefix":
        named = get_prefix(model).named_parameters()
    else:
        named = ((n, p) for n, p in model.named_parameters() if "lora_" in n)
    tensors = {PREFIX + n: p.detach().cpu().contiguous() for n, p in named}
    return tensors, {"reader": json.dumps(asdict(cfg))}


def attach_reader(model: torch.nn.Module, path: Path) -> Optional[ReaderConfig]:
    """Injects and loads the reader saved in the adapter file at `path` into `model`; None when it has none.

    ValueError naming the file when its reader does not fit this LM (other modules or shapes).
    """
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as file:
        metadata = file.metadata() or {}
        if "reader" not in metadata:
            return None
        stored = json.loads(metadata["reader"])
        cfg = ReaderConfig(**{**stored, "targets": tuple(stored["targets"])})  # files of run 9 have no kind: lora
        saved = {k[len(PREFIX):]: file.get_tensor(k) for k in file.keys() if k.startswith(PREFIX)}
    if not has_reader(model):
        add_reader(model, cfg)
    elif (get_prefix(model) is not None) != (cfg.kind == "prefix"):
        raise ValueError(f"{path}: its reader ({cfg.kind}) is not the kind this LM already carries")
    if cfg.kind == "prefix":
        own = dict(get_prefix(model).named_parameters())
    else:
        own = {n: p for n, p in model.named_parameters() if "lora_" in n}
    missing = sorted(set(own) - set(saved))
    if missing or any(n not in own or own[n].shape != t.shape for n, t in saved.items()):
        raise ValueError(f"{path}: its reader ({cfg.kind}) does not fit this LM (missing {missing[:3]}, or other shapes)")
    with torch.no_grad():
        for name, tensor in saved.items():
            own[name].copy_(tensor.to(own[name].dtype))
            own[name].requires_grad_(False)
    return cfg
