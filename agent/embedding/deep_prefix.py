"""Deep prefixes: the persona's K soft vectors also become a key/value prefix in every attention layer of the LM,
read through a zero-initialised gate per layer and head (LLaMA-Adapter), so the LM starts exactly as it was.

Prefix-tuning and P-Tuning v2 show that per-layer prefixes steer small frozen LMs where input-only prompts do
not. Layer l's prefix is soft + soft @ A_l @ B_l (B_l zero at the start), normed by the layer's own input norm
and projected by its own frozen k/v projections (no rotary: a prefix has no position). Its attention is a
separate softmax over the K prefix slots, added to the layer's attention output as tanh(gate) x that, so a
zero gate adds exactly 0 and still gets a gradient. `add_prefix(model, rank)` installs the hooks (off);
`prefixed(model, soft)` turns them on for one forward with soft (K, d) or (B, K, d).

Works on any transformers LM whose decoder layers have `input_layernorm` and `self_attn` with q/k/v/o
projections and rotary position embeddings (Llama, Qwen2, Mistral). Neither llama.cpp nor vLLM has per-layer
prefixes from outside the model: there the deep-prefix reader cannot run (see docs/persona_embedding.md).
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Optional

import torch
import torch.nn.functional as F
from torch import nn

ATTRIBUTE = "_personae_deep_prefix"  # the DeepPrefix module add_prefix hangs on the model (not a submodule)


def _layers(model: nn.Module) -> list[nn.Module]:
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else model
    layers = getattr(decoder, "layers", None)
    if layers is None or not all(hasattr(l, "input_layernorm") and hasattr(l, "self_attn") for l in layers):
        raise ValueError(f"fusion.reader=prefix needs decoder layers with input_layernorm and self_attn; "
                         f"{type(model).__name__} has none")
    return list(layers)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding as Llama applies it: x (B, H, T, hd), cos/sin (B, T, hd)."""
    cos, sin = cos[:, None], sin[:, None]
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


class DeepPrefix(nn.Module):
    """Per-layer maps of the K soft vectors and the gates that let each layer read them.

    layers: the LM's decoder layer count L; d: its hidden size; heads: its attention heads H; rank: of each map.
    """

    def __init__(self, *, layers: int, d: int, heads: int, rank: int):
        super().__init__()
        self.down = nn.Parameter(torch.randn(layers, d, rank) / d ** 0.5)  # (L, d, r)
        self.up = nn.Parameter(torch.zeros(layers, rank, d))  # (L, r, d): zero, so every layer starts with soft itself
        self.attn_gate = nn.Parameter(torch.zeros(layers, heads))  # (L, H): tanh(0) = 0 adds nothing at first
        self.soft: Optional[torch.Tensor] = None  # (B, K, d) while `prefixed` is on

    def hidden(self, layer: int, soft: torch.Tensor) -> torch.Tensor:
        """soft (B, K, d) -> layer's prefix vectors (B, K, d), before its input norm."""
        down, up = self.down[layer].to(soft.dtype), self.up[layer].to(soft.dtype)
        return soft + soft @ down @ up

    def attend(self, index: int, layer: nn.Module, hidden_states: torch.Tensor, position_embeddings) -> torch.Tensor:
        """What layer `index`'s attention adds for the prefix: hidden_states (B, T, d) -> (B, T, d)."""
        attn = layer.self_attn
        B, T, _ = hidden_states.shape
        hd = attn.head_dim
        soft = self.soft.to(hidden_states.dtype)
        if soft.shape[0] != B:
            soft = soft.expand(B, -1, -1)
        prefix = layer.input_layernorm(self.hidden(index, soft))  # (B, K, d)
        K = prefix.shape[1]
        q = attn.q_proj(hidden_states).view(B, T, -1, hd).transpose(1, 2)  # (B, H, T, hd)
        q = _rotate(q, *position_embeddings)
        k = attn.k_proj(prefix).view(B, K, -1, hd).transpose(1, 2)  # (B, H_kv, K, hd)
        v = attn.v_proj(prefix).view(B, K, -1, hd).transpose(1, 2)
        repeat = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1)  # (B, H, K, hd)
        out = F.scaled_dot_product_attention(q, k, v, scale=attn.scaling)  # (B, H, T, hd): every token sees all K
        out = out * self.attn_gate[index].tanh().to(out.dtype)[None, :, None, None]
        return F.linear(out.transpose(1, 2).reshape(B, T, -1), attn.o_proj.weight)  # (B, T, d), no bias twice


def _hook(prefix: DeepPrefix, index: int, layer: nn.Module):
    def hook(module, args, kwargs, output):
        if prefix.soft is None:
            return output
        hidden_states = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        added = prefix.attend(index, layer, hidden_states, kwargs["position_embeddings"])
        return (output[0] + added, *output[1:])
    return hook


def get_prefix(model: nn.Module) -> Optional[DeepPrefix]:
    return getattr(model, ATTRIBUTE, None)


def add_prefix(model: nn.Module, rank: int) -> DeepPrefix:
    """Installs a fresh DeepPrefix on `model` (hooks on every layer's attention, off until `prefixed`)."""
    if get_prefix(model) is not None:
        raise ValueError("the LM already has a deep prefix")
    layers = _layers(model)
    config = model.config
    prefix = DeepPrefix(layers=len(layers), d=config.hidden_size, heads=config.num_attention_heads, rank=rank)
    param = next(model.parameters())
    prefix.to(param.device)
    handles = [layer.self_attn.register_forward_hook(_hook(prefix, i, layer), with_kwargs=True)
               for i, layer in enumerate(layers)]
    object.__setattr__(prefix, "_handles", handles)
    object.__setattr__(model, ATTRIBUTE, prefix)
    return prefix


def remove_prefix(model: nn.Module) -> None:
    prefix = get_prefix(model)
    if prefix is not None:
        for handle in prefix._handles:
            handle.remove()
        object.__delattr__(model, ATTRIBUTE)


@contextlib.contextmanager
def prefixed(model: nn.Module, soft: Optional[torch.Tensor]) -> Iterator[None]:
    """The model's deep prefix on for the block, from soft (K, d) or (B, K, d); nothing when either is absent."""
    prefix = get_prefix(model)
    if prefix is None or soft is None:
        yield
        return
    prefix.soft = soft if soft.dim() == 3 else soft[None]
    try:
        yield
    finally:
        prefix.soft = None
