"""Options of the persona embedding: which encoders feed it and the shape of the fusion adapter.

Frozen dataclasses with a comment per field, as in agent/config.py (YAML maps onto them one to one);
no torch here, so configs load without it. `FusionConfig.type` names an entry of `fusion.FUSIONS`.
"""
from __future__ import annotations

from dataclasses import dataclass

FUSION_TYPES = ("attention", "weighted", "select")  # the names in fusion.FUSIONS (a test keeps the two equal)


@dataclass(frozen=True)
class EncoderConfig:
    image_enabled: bool = True  # use the portrait (needs clip.enabled and CLIP weights); False masks it out
    audio_enabled: bool = True  # use the voice sample (Whisper encoder); False masks it out
    text_enabled: bool = True  # use the card text (the LM's hidden states); False masks it out
    audio_tokens: int = 8  # the voice sample's encoder frames are average-pooled over time to this many tokens
    audio_max_seconds: float = 300.0  # a longer voice sample is refused; it is encoded in 30 s windows
    text_model: str = ""  # "" reads the card with the chat LM itself; else an lm.name_or_path-style reference
    text_layer: float = 0.75  # hidden state read: a whole number indexes them (0 = embeddings, -1 = last), 0 < x < 1 a share of the depth
    max_text_tokens: int = 512  # the card text is cut to its first this-many tokens

    def __post_init__(self):
        if self.audio_tokens < 1:
            raise ValueError(f"encoder.audio_tokens must be >= 1, got {self.audio_tokens}")
        if self.audio_max_seconds <= 0:
            raise ValueError(f"encoder.audio_max_seconds must be > 0, got {self.audio_max_seconds}")
        if self.max_text_tokens < 1:
            raise ValueError(f"encoder.max_text_tokens must be >= 1, got {self.max_text_tokens}")
        layer = float(self.text_layer)
        if not layer.is_integer() and not 0 < layer < 1:
            raise ValueError(f"encoder.text_layer must be a whole number (a hidden-state index) or a fraction "
                             f"strictly between 0 and 1, got {self.text_layer}")


@dataclass(frozen=True)
class FusionConfig:
    type: str = "attention"  # attention (Perceiver resampler) | weighted (F = αI + βT + γA baseline) | select (K picks among the card's token embeddings; needs encoder.text_layer 0)
    k: int = 8  # soft-prompt vectors handed to the LM
    width: int = 256  # shared width every modality is projected to inside the adapter
    depth: int = 2  # attention: resampler layers, each cross-attention + MLP
    heads: int = 4  # attention: heads per cross-attention; must divide width
    ff_mult: int = 4  # attention: MLP hidden width = ff_mult * width
    dropout: float = 0.0  # dropout in the adapter's attention and MLPs while training
    image_weight: float = 1.0  # weighted: α, the portrait's share of F
    text_weight: float = 1.0  # weighted: β, the card's share of F
    audio_weight: float = 1.0  # weighted: γ, the voice's share of F
    learn_weights: bool = True  # weighted: train α, β, γ (kept positive) instead of fixing them
    select_scale: float = 33.0  # select: the learned inverse temperature of its picks at the start (cosine scores x this); high = sharp picks of single tokens
    harmless_start: str = "gates"  # attention: gates (zero tanh gates, as Flamingo) | outputs (gates open; each branch's output projection and a pooled-media path zero-initialised, as LoRA)
    reader: str = "none"  # none | lora: a LoRA on the LM | prefix: the soft vectors as gated key/value prefixes in every layer; trained with the adapter, on only while soft vectors are in the input (embedding/reader.py)
    reader_rank: int = 8  # reader: LoRA rank; prefix: rank of each layer's map of the soft vectors
    reader_alpha: float = 16.0  # reader: LoRA alpha (scale alpha / rank)
    reader_targets: str = "q_proj,v_proj"  # reader: comma-separated module names of the LM's layers that get a LoRA

    def __post_init__(self):
        if self.type not in FUSION_TYPES:
            raise ValueError(f"fusion.type {self.type!r} is not one of: {', '.join(FUSION_TYPES)}")
        for name in ("k", "width", "depth", "heads", "ff_mult"):
            if getattr(self, name) < 1:
                raise ValueError(f"fusion.{name} must be >= 1, got {getattr(self, name)}")
        if not self.select_scale > 0:
            raise ValueError(f"fusion.select_scale must be > 0, got {self.select_scale}")
        if self.reader not in ("none", "lora", "prefix"):
            raise ValueError(f"fusion.reader must be none, lora or prefix, got {self.reader!r}")
        if self.reader_rank < 1:
            raise ValueError(f"fusion.reader_rank must be >= 1, got {self.reader_rank}")
        if self.harmless_start not in ("gates", "outputs"):
            raise ValueError(f"fusion.harmless_start must be gates or outputs, got {self.harmless_start!r}")
        if self.width % self.heads:
            raise ValueError(f"fusion.heads ({self.heads}) must divide fusion.width ({self.width})")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"fusion.dropout must be in [0, 1), got {self.dropout}")
        weights = {"image_weight": self.image_weight, "text_weight": self.text_weight,
                   "audio_weight": self.audio_weight}
        for name, value in weights.items():
            if value < 0:
                raise ValueError(f"fusion.{name} must be >= 0, got {value}")
        if self.learn_weights and 0 in weights.values():
            zero = next(name for name, value in weights.items() if value == 0)
            raise ValueError(f"fusion.{zero} is 0 but fusion.learn_weights is true: a learned weight must start "
                             f"above 0 (it is trained in log space); set learn_weights: false to fix it at 0")
        if not any(weights.values()):
            raise ValueError("fusion.image_weight, text_weight and audio_weight are all 0; at least one must be > 0")
