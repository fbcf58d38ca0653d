"""The reader: a LoRA on the chat LM that learns to read the persona's soft vectors, on only while they are in
the input, so every other use of the LM (card mode, the teacher, the persona encoder) runs it unchanged.

Input-only soft prompts are not read well by a frozen small LM (Lester et al. 2021, P-Tuning v2); gisting
trains the LM itself to read compressed prompts. `add_reader(model, rank=..., targets=...)` injects PEFT
LoRA layers (B zero-initialised: a harmless start) and leaves them switched off; `reading(model, on)` switches
them on around one forward: `CachedDecoder` and training's `logits_at` do so exactly when a soft prompt is in
their input. Its weights travel in the fusion adapter's file (`reader.*` tensors, `reader` metadata):
`reader_weights(model)` to save, `attach_reader(model, path)` to load.

Runs on the transformers backend only so far: llama.cpp would need the LoRA in GGUF form on a context of its
own, vLLM the LoRA as a served adapter beside prompt_embeds.
"""
from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Optional

import torch

ADAPTER_NAME = "reader"
PREFIX = "reader."  # the reader's tensors in the adapter file


@dataclass(frozen=True)
class ReaderConfig:
    rank: int = 8  # LoRA rank
    alpha: float = 16.0  # LoRA scale numerator (scale = alpha / rank)
    targets: tuple[str, ...] = ("q_proj", "v_proj")  # module names in the LM's layers that get a LoRA

    def __post_init__(self):
        if self.rank < 1:
            raise ValueError(f"reader rank must be >= 1, got {self.rank}")
        if not self.targets:
            raise ValueError("reader targets must name at least one module (e.g. q_proj, v_proj)")


LAYERS = "_personae_reader_layers"  # attribute add_reader sets on the model: its LoRA layers


def _layers(model: torch.nn.Module) -> list:
    return getattr(model, LAYERS, [])


def has_reader(model: torch.nn.Module) -> bool:
    return bool(_layers(model))


def add_reader(model: torch.nn.Module, cfg: ReaderConfig) -> list[torch.nn.Parameter]:
    """Injects the reader's LoRA layers into `model` (in place; switched off) and returns its trainable parameters."""
    from peft import LoraConfig, inject_adapter_in_model

    if has_reader(model):
        raise ValueError("the LM already has a reader")
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
    """Takes the reader's LoRA weights out of `model` again (its layers then run as the base layers)."""
    for layer in _layers(model):
        layer.delete_adapter(ADAPTER_NAME)
    object.__setattr__(model, LAYERS, [])


@contextlib.contextmanager
def reading(model: torch.nn.Module, on: bool = True) -> Iterator[None]:
    """The reader switched on (when `on` and the model has one) for the block; off again afterwards."""
    on = on and has_reader(model)
    if on:
        _switch(model, True)
    try:
        yield
    finally:
        if on:
            _switch(model, False)


def reader_weights(model: torch.nn.Module, cfg: ReaderConfig) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) to save beside the adapter's own: `reader.<parameter name>` -> weight."""
    tensors = {PREFIX + n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if "lora_" in n}
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
        cfg = ReaderConfig(**{**json.loads(metadata["reader"]),
                              "targets": tuple(json.loads(metadata["reader"])["targets"])})
        saved = {k[len(PREFIX):]: file.get_tensor(k) for k in file.keys() if k.startswith(PREFIX)}
    if not has_reader(model):
        add_reader(model, cfg)
    own = dict(model.named_parameters())
    missing = sorted(set(own) & {n for n in own if "lora_" in n} - set(saved))
    if missing or any(n not in own or own[n].shape != t.shape for n, t in saved.items()):
        raise ValueError(f"{path}: its reader LoRA does not fit this LM (missing {missing[:3]}, or other shapes)")
    with torch.no_grad():
        for name, tensor in saved.items():
            own[name].copy_(tensor.to(own[name].dtype))
            own[name].requires_grad_(False)
    return cfg
