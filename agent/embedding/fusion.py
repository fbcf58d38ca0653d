"""Fusion adapters: a persona's modality tokens -> K soft-prompt vectors of the LM's width, at its embedding norm.

`build_fusion` picks the adapter named by fusion.type from FUSIONS; `save_adapter` / `load_adapter` keep one
in a single safetensors file that rebuilds it alone. The K vectors enter the LM through `soft_prompt.pieces`.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from ..atomic import write_atomically
from .config import FusionConfig
from .encoders import MODALITIES, ModalityTokens
from .soft_prompt import at_norm

ADAPTER_FORMAT = "personae-fusion-adapter"  # safetensors metadata "format" of a saved adapter
ADAPTER_VERSION = "1"


def embedding_norm(lm_model: nn.Module) -> float:
    """Mean L2 norm of the LM's input-embedding rows: the length soft-prompt vectors are scaled to."""
    return lm_model.get_input_embeddings().weight.detach().float().norm(dim=-1).mean().item()


def collate(batch: Sequence[dict[str, ModalityTokens]], dims: dict[str, int]):
    """Personas' modality tokens -> (media, mask), padded per modality to its longest sequence in the batch.

    media[m]: (B, n_m, d_m) float; mask[m]: (B, n_m) bool, True at real tokens. A modality that is
    missing from a persona's dict or not present is all padding, so the adapters mask it out.
    """
    media, mask = {}, {}
    for modality, d in dims.items():
        rows = []
        for item in batch:
            found = item.get(modality)
            tokens = found.tokens if found is not None and found.present else torch.zeros(0, d)
            if tokens.dim() != 2 or tokens.shape[1] != d:
                raise ValueError(f"{modality} tokens have shape {tuple(tokens.shape)}, but the adapter was built "
                                 f"for width {d}: it was trained with another {modality} encoder")
            rows.append(tokens)
        n = max(len(tokens) for tokens in rows)
        media[modality] = torch.zeros(len(batch), n, d)  # (B, n_m, d_m)
        mask[modality] = torch.zeros(len(batch), n, dtype=torch.bool)  # (B, n_m)
        for i, tokens in enumerate(rows):
            media[modality][i, :len(tokens)] = tokens
            mask[modality][i, :len(tokens)] = True
    return media, mask


class Fusion(nn.Module):
    """What both adapters share: per-modality input projections and the output norm match.

    dims: {modality: d_m} for the modalities the adapter reads; d_lm: the LM's hidden size;
    target_norm: the length of every output vector (see `embedding_norm`), kept as a buffer.
    """

    def __init__(self, *, config: FusionConfig, dims: dict[str, int], d_lm: int, target_norm: float):
        super().__init__()
        self.config, self.d_lm = config, d_lm
        self.dims = {m: int(dims[m]) for m in MODALITIES if m in dims}  # fixed order: the modality index
        self.register_buffer("target_norm", torch.tensor(float(target_norm)))
        # intermediate LM layers carry a few huge activations, so each token is normalised before projecting
        self.inputs = nn.ModuleDict({
            m: nn.Sequential(nn.LayerNorm(d), nn.Linear(d, config.width)) for m, d in self.dims.items()})

    def rescale(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, K, d_lm) -> the same directions, each vector `target_norm` long."""
        return at_norm(x, self.target_norm)

    def soft_prompts(self, batch: Sequence[dict[str, ModalityTokens]]) -> torch.Tensor:
        """Personas' modality tokens -> their soft prompts, shape (B, K, d_lm), on the adapter's device and dtype."""
        media, mask = collate(batch, self.dims)
        param = self.target_norm
        return self({m: x.to(param.device, param.dtype) for m, x in media.items()},
                    {m: x.to(param.device) for m, x in mask.items()})

    def soft_prompt(self, modalities: dict[str, ModalityTokens]) -> torch.Tensor:
        """One persona's modality tokens -> its soft prompt, shape (K, d_lm)."""
        return self.soft_prompts([modalities])[0]


class CrossAttention(nn.Module):
    """Pre-norm multi-head attention of the latents over (media ++ latents), as in Flamingo's resampler."""

    def __init__(self, *, width: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.norm_media = nn.LayerNorm(width)
        self.norm_latents = nn.LayerNorm(width)
        self.to_q = nn.Linear(width, width, bias=False)
        self.to_kv = nn.Linear(width, 2 * width, bias=False)
        self.to_out = nn.Linear(width, width, bias=False)

    def forward(self, media: torch.Tensor, latents: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """media: (B, N, w), latents: (B, K, w), keep: (B, N) bool, True at real tokens -> (B, K, w)."""
        B, K, w = latents.shape
        media, latents = self.norm_media(media), self.norm_latents(latents)
        q = self.to_q(latents)  # (B, K, w)
        k, v = self.to_kv(torch.cat([media, latents], dim=1)).chunk(2, dim=-1)  # (B, N+K, w) each
        q, k, v = (t.view(B, t.shape[1], self.heads, w // self.heads).transpose(1, 2)
                   for t in (q, k, v))  # (B, h, K or N+K, w/h)
        # the latents always take part, so a persona with no media at all still has something to attend to
        keep = torch.cat([keep, keep.new_ones(B, K)], dim=1)[:, None, None, :]  # (B, 1, 1, N+K)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep,
                                             dropout_p=self.dropout if self.training else 0.0)  # (B, h, K, w/h)
        return self.to_out(out.transpose(1, 2).reshape(B, K, w))  # (B, K, w)


class ResamplerLayer(nn.Module):
    """latents += tanh(attn_gate) * cross-attention; latents += tanh(ff_gate) * MLP.

    harmless_start "gates": both gates start at 0 (Flamingo). "outputs": the gates start at 1 and the last
    projection of each branch at 0 (LoRA): the layer adds 0 as well, but the projections get a gradient from
    the first step, where a zero gate passes none to its branch and gets only the random branch's noise.
    """

    def __init__(self, *, width: int, heads: int, ff_mult: int, dropout: float, harmless_start: str = "gates"):
        super().__init__()
        self.attn = CrossAttention(width=width, heads=heads, dropout=dropout)
        self.ff = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, ff_mult * width), nn.GELU(),
                                nn.Dropout(dropout), nn.Linear(ff_mult * width, width))
        start = 0.0 if harmless_start == "gates" else 1.0
        self.attn_gate = nn.Parameter(torch.full((1,), start))
        self.ff_gate = nn.Parameter(torch.full((1,), start))
        if harmless_start == "outputs":
            nn.init.zeros_(self.attn.to_out.weight)
            nn.init.zeros_(self.ff[-1].weight)
            nn.init.zeros_(self.ff[-1].bias)

    def forward(self, media: torch.Tensor, latents: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """media: (B, N, w), latents: (B, K, w), keep: (B, N) -> latents (B, K, w)."""
        latents = latents + self.attn_gate.tanh() * self.attn(media, latents, keep)
        return latents + self.ff_gate.tanh() * self.ff(latents)


class AttentionFusion(Fusion):
    """Perceiver-resampler adapter: K learned latents cross-attend over every modality's tokens.

    Each modality is normalised, projected to `width` and tagged with a learned modality embedding;
    `depth` gated layers update the latents; the K results are projected to d_lm and rescaled.

    Zero gates (the fresh state) make the adapter media-blind: every layer adds exactly 0, so the output
    is the fixed vector set rescale(to_lm(norm_out(latents))), the same for every portrait, voice and card
    and for none. Training opens the gates, so the randomly initialised media path can't disturb the LM
    before it has learned anything. (Inserting K vectors still changes the LM's input, as any soft prompt
    does; the norm match keeps them the size of real token embeddings.)
    """

    def __init__(self, *, config: FusionConfig, dims: dict[str, int], d_lm: int, target_norm: float):
        super().__init__(config=config, dims=dims, d_lm=d_lm, target_norm=target_norm)
        w = config.width
        self.modality_embedding = nn.Parameter(0.02 * torch.randn(len(self.dims), w))  # (M, w), in dims order
        self.latents = nn.Parameter(torch.randn(config.k, w))  # (K, w)
        self.layers = nn.ModuleList(
            ResamplerLayer(width=w, heads=config.heads, ff_mult=config.ff_mult, dropout=config.dropout,
                           harmless_start=config.harmless_start)
            for _ in range(config.depth))
        # harmless_start "outputs": the pooled media also shift the latents directly (zero at the start), the
        # path that makes the weighted baseline persona-aware
        self.media_to_latents = None
        if config.harmless_start == "outputs":
            self.media_to_latents = nn.Linear(w, config.k * w)
            nn.init.zeros_(self.media_to_latents.weight)
            nn.init.zeros_(self.media_to_latents.bias)
        self.norm_out = nn.LayerNorm(w)
        self.to_lm = nn.Linear(w, d_lm)

    def forward(self, media: dict[str, torch.Tensor], mask: dict[str, torch.Tensor]) -> torch.Tensor:
        """media[m]: (B, n_m, d_m), mask[m]: (B, n_m) bool for every m in dims (see `collate`) -> (B, K, d_lm)."""
        tokens = [self.inputs[m](media[m]) + self.modality_embedding[i] for i, m in enumerate(self.dims)]
        x = torch.cat(tokens, dim=1)  # (B, N, w), N = sum of n_m
        keep = torch.cat([mask[m] for m in self.dims], dim=1)  # (B, N)
        latents = self.latents.expand(x.shape[0], -1, -1)  # (B, K, w)
        if self.media_to_latents is not None:
            weight = keep[..., None].to(x.dtype)  # (B, N, 1)
            pooled = (x * weight).sum(1) / weight.sum(1).clamp_min(1)  # (B, w); 0 for a persona with no media
            latents = latents + self.media_to_latents(pooled).view(latents.shape)  # (B, K, w)
        for layer in self.layers:
            latents = layer(x, latents, keep)
        return self.rescale(self.to_lm(self.norm_out(latents)))  # (B, K, d_lm)


class WeightedFusion(Fusion):
    """The baseline: F = αI + βT + γA over pooled, projected modality vectors, then an MLP to K vectors.

    Each modality's tokens are normalised, projected to `width` and mean-pooled over its real tokens.
    The weights of missing modalities are dropped and the rest renormalised to sum to 1, so a persona
    without a voice gets F = (αI + βT) / (α + β). Learned weights are kept positive (trained as logs).
    """

    def __init__(self, *, config: FusionConfig, dims: dict[str, int], d_lm: int, target_norm: float):
        super().__init__(config=config, dims=dims, d_lm=d_lm, target_norm=target_norm)
        w = config.width
        start = {"image": config.image_weight, "text": config.text_weight, "audio": config.audio_weight}
        weights = torch.tensor([start[m] for m in self.dims], dtype=torch.float32)  # (M,)
        if config.learn_weights:
            self.log_weights = nn.Parameter(weights.log())
        else:
            self.register_buffer("fixed_weights", weights)
        self.to_lm = nn.Sequential(nn.Linear(w, w), nn.GELU(), nn.Dropout(config.dropout),
                                   nn.Linear(w, config.k * d_lm))

    def weights(self) -> torch.Tensor:
        """(α, β, γ) for the modalities in dims, in dims order, shape (M,)."""
        return self.log_weights.exp() if self.config.learn_weights else self.fixed_weights

    def forward(self, media: dict[str, torch.Tensor], mask: dict[str, torch.Tensor]) -> torch.Tensor:
        """media[m]: (B, n_m, d_m), mask[m]: (B, n_m) bool for every m in dims (see `collate`) -> (B, K, d_lm)."""
        pooled, present = [], []
        for m in self.dims:
            keep = mask[m][..., None].to(media[m].dtype)  # (B, n_m, 1)
            pooled.append((self.inputs[m](media[m]) * keep).sum(1) / keep.sum(1).clamp_min(1))  # (B, w)
            present.append(mask[m].any(dim=1))  # (B,)
        pooled, present = torch.stack(pooled, 1), torch.stack(present, 1)  # (B, M, w), (B, M)
        weights = self.weights().to(pooled.dtype) * present  # (B, M)
        fused = (weights[..., None] * pooled).sum(1) / weights.sum(1, keepdim=True).clamp_min(1e-6)  # (B, w)
        return self.rescale(self.to_lm(fused).view(-1, self.config.k, self.d_lm))  # (B, K, d_lm)


class SelectFusion(Fusion):
    """K learned queries each pick, by softmax attention, a mixture of the card's own token vectors.

    Reads the text modality only, and returns the selected text tokens themselves (no output projection):
    with encoder.text_layer 0 they are the LM's input embeddings of card tokens, so a sharp selection is a
    K-token keyword prompt the frozen LM reads as words. Keys are the projected tokens; scores are scaled
    by a learned inverse temperature (fusion.select_scale at the start). A persona without card text gets
    the learned fallback vectors.
    """

    def __init__(self, *, config: FusionConfig, dims: dict[str, int], d_lm: int, target_norm: float):
        super().__init__(config=config, dims=dims, d_lm=d_lm, target_norm=target_norm)
        if dims.get("text") != d_lm:
            raise ValueError(f"fusion.type select returns card-token vectors as soft prompts, so the text tokens must "
                             f"be {d_lm} wide (the LM's hidden size; encoder.text_layer 0), got {dims.get('text')}")
        self.inputs = nn.ModuleDict({"text": self.inputs["text"]})  # the voice and portrait are not read
        w = config.width
        self.queries = nn.Parameter(torch.randn(config.k, w) / w ** 0.5)  # (K, w)
        self.log_scale = nn.Parameter(torch.tensor(config.select_scale).log())  # learned inverse temperature
        self.fallback = nn.Parameter(torch.randn(config.k, d_lm))  # (K, d_lm), for a persona with no text

    def forward(self, media: dict[str, torch.Tensor], mask: dict[str, torch.Tensor]) -> torch.Tensor:
        """media["text"]: (B, n, d_lm), mask["text"]: (B, n) -> (B, K, d_lm)."""
        x, keep = media["text"], mask["text"]
        keys = self.inputs["text"](x)  # (B, n, w)
        keys = keys / keys.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        queries = self.queries / self.queries.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        scores = torch.einsum("kw,bnw->bkn", queries, keys) * self.log_scale.exp()  # (B, K, n)
        scores = scores.masked_fill(~keep[:, None, :], float("-inf"))
        has_text = keep.any(dim=1)  # (B,)
        weights = torch.softmax(scores.masked_fill(~has_text[:, None, None], 0.0), dim=-1)  # (B, K, n)
        picked = torch.einsum("bkn,bnd->bkd", weights, x)  # (B, K, d_lm)
        picked = torch.where(has_text[:, None, None], picked, self.fallback.expand_as(picked))
        return self.rescale(picked)


FUSIONS = {"attention": AttentionFusion, "weighted": WeightedFusion, "select": SelectFusion}  # fusion.type -> adapter


def build_fusion(config: FusionConfig, dims: dict[str, int], d_lm: int, target_norm: float) -> Fusion:
    """A freshly initialised adapter of type config.type reading `dims` ({modality: d}) and writing (K, d_lm)."""
    if config.type not in FUSIONS:
        raise ValueError(f"fusion.type {config.type!r} is not one of: {', '.join(FUSIONS)}")
    unknown = sorted(set(dims) - set(MODALITIES))
    if unknown:
        raise ValueError(f"unknown modality {unknown[0]!r} in dims; choose from: {', '.join(MODALITIES)}")
    if not dims:
        raise ValueError("the adapter needs at least one modality, but dims is empty (all encoders are off)")
    if d_lm < 1 or target_norm <= 0 or min(dims.values()) < 1:
        raise ValueError(f"bad adapter sizes: dims={dims}, d_lm={d_lm}, target_norm={target_norm}")
    return FUSIONS[config.type](config=config, dims=dims, d_lm=d_lm, target_norm=target_norm)


def save_adapter(path: Path, fusion: Fusion, reader: Optional[tuple[dict, dict]] = None) -> Path:
    """Weights as safetensors, with the FusionConfig, dims and d_lm in its metadata so the file alone rebuilds it.

    reader: (tensors, metadata) of the LM's reader LoRA (embedding/reader.py `reader_weights`), stored beside.
    """
    path = Path(path)
    metadata = {"format": ADAPTER_FORMAT, "version": ADAPTER_VERSION, "d_lm": str(fusion.d_lm),
                "config": json.dumps(dataclasses.asdict(fusion.config)), "dims": json.dumps(fusion.dims)}
    weights = {name: tensor.detach().cpu().contiguous() for name, tensor in fusion.state_dict().items()}
    if reader is not None:
        weights.update(reader[0])
        metadata.update(reader[1])
    write_atomically(path, lambda tmp: save_file(weights, str(tmp), metadata=metadata))
    return path


def load_adapter(path: Path, *, device: str = "cpu") -> Fusion:
    """A saved adapter rebuilt from its file alone: eval mode, no gradients."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"fusion adapter {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as file:
            metadata = file.metadata() or {}
        if metadata.get("format") != ADAPTER_FORMAT:
            raise ValueError(f"metadata format is {metadata.get('format')!r}, not {ADAPTER_FORMAT!r}")
        if metadata.get("version") != ADAPTER_VERSION:
            raise ValueError(f"adapter version {metadata.get('version')!r}; this personae reads {ADAPTER_VERSION}")
        config = FusionConfig(**json.loads(metadata["config"]))
        fusion = build_fusion(config, json.loads(metadata["dims"]), int(metadata["d_lm"]), target_norm=1.0)
        own = {k: v for k, v in load_file(path).items() if not k.startswith("reader.")}  # the reader: reader.py
        fusion.load_state_dict(own)  # target_norm comes back from the file too
    except (SafetensorError, KeyError, TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"{path}: not a usable personae fusion adapter ({type(e).__name__}: {e})") from None
    return fusion.to(device).eval().requires_grad_(False)
