"""Learned gist cells: K more KV cells after a persona's kept cells, written by the LM from the fusion adapter's vectors.

    system turn ids (T,) --LM, one pass--> kept cells (L, n_kv, n, hd) + text features (T, d) (hidden states)
    text features --fusion adapter--> gist vectors (K, d)
    gist vectors --LM with the LoRA reader ON, as inputs_embeds at positions n..n+K-1 over the kept cells-->
                 K gist cells; their values x tanh(gate[layer, kv head]) (gate 0 at the start)
    the turn's tail and every chat token then run the base LM (LoRA off) over the n + K cells

The reader (embedding/reader.py) is on for the gist forward only (a conditional LoRA), so the kept cells, the
chat tokens and every other use of the LM run it unchanged. The gate starts at 0, so the gist values start at
0; the gist keys still take some attention mass at the start (the other values' weights shrink a little), so
a fresh GistCells is close to, not exactly, the kept cells alone: `kvgist` in benchmarks/validation_
identification.py measures it. The card's features come from the same pass that makes the cells (the hidden
states at encoder.text_layer over the system turn), so one pass per card gives both.

`GistCells` holds the adapter and the gate (the LoRA lives in the LM); `save_gist` / `load_gist` keep all three
in one safetensors file; `GistKV` is the PersonaKV whose cells end with the gist cells. Transformers only.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from ..atomic import write_atomically
from .config import FusionConfig
from .encoders import ModalityTokens, resolve_layer
from .fusion import Fusion, build_fusion
from .kv_cells import CellPlan, _layers, gather_cells
from .persona_kv import KVSettings, PersonaKV
from .reader import ReaderConfig, attach_reader, reader_weights, reading
from .soft_prompt import soft_placeholders

GIST_FORMAT = "personae-gist-cells"  # safetensors metadata "format" of a saved GistCells
GIST_VERSION = "1"


@dataclass(frozen=True)
class CardRead:
    cells: object  # DynamicCache: the kept cells at positions 0..n-1 (no tail), per layer (1, n_kv, n, hd)
    features: torch.Tensor  # (T, d) float32: the hidden states at the encoder's layer over the system turn
    full: object  # DynamicCache over all T ids of the system turn (what card mode reads), or None


def read_card(model: nn.Module, ids: Sequence[int], kept: Sequence[int], text_layer: float, *,
              keep_full: bool = False) -> CardRead:
    """One pass of the LM over a system turn's `ids` -> its kept cells (positions `kept`, moved to 0..n-1), its
    text features at `text_layer` (encoder.text_layer: an index or a share of the depth) and, keep_full, the
    whole turn's cache. No gradients."""
    from transformers import DynamicCache

    from ..chat.decoding import cache_kwarg

    device = next(model.parameters()).device
    full = DynamicCache(config=model.config)
    with torch.inference_mode():
        out = model(input_ids=torch.tensor([list(ids)], device=device), use_cache=True, logits_to_keep=1,
                    output_hidden_states=True, **{cache_kwarg(model): full})
        layer = resolve_layer(text_layer, len(out.hidden_states) - 1)
        features = out.hidden_states[layer][0].float().clone()  # (T, d)
        cells = gather_cells(model, full, kept)
    return CardRead(cells, features, full if keep_full else None)


def copy_cache(model: nn.Module, cache, batch: int = 1):
    """A new DynamicCache holding `cache`'s tensors (shared, not copied), expanded to `batch` rows; updating it
    leaves `cache` as it was. Inference tensors are cloned, so the copy can take part in autograd."""
    from transformers import DynamicCache

    out = DynamicCache(config=model.config)
    for layer, (keys, values) in enumerate(_layers(cache)):
        if keys.is_inference() and not torch.is_inference_mode_enabled():
            keys, values = keys.clone(), values.clone()
        out.update(keys.expand(batch, -1, -1, -1), values.expand(batch, -1, -1, -1), layer)
    return out


def add_gist(model: nn.Module, cells, vectors: torch.Tensor, gate: torch.Tensor):
    """cells (DynamicCache, n positions) + vectors (K, d) -> a new DynamicCache of n + K positions: the LM, its
    reader on for this forward only, reads the vectors as inputs_embeds at positions n..n+K-1; the K new values
    of layer l, KV head h are scaled by tanh(gate[l, h]). gate: (n_layers, n_kv). `cells` is left as it was.
    Gradients flow to `vectors`, the reader and `gate` when enabled."""
    from transformers import DynamicCache

    from ..chat.decoding import cache_kwarg

    n = _layers(cells)[0][0].shape[2]
    work = copy_cache(model, cells)
    embeds = vectors[None].to(model.get_input_embeddings().weight.dtype)  # (1, K, d)
    with reading(model, vectors):
        model(inputs_embeds=embeds, use_cache=True, logits_to_keep=1, **{cache_kwarg(model): work})
    out = DynamicCache(config=model.config)
    for layer, (keys, values) in enumerate(_layers(work)):
        scale = gate[layer].tanh().to(values.dtype)[None, :, None, None]  # (1, n_kv, 1, 1)
        out.update(keys, torch.cat([values[:, :, :n], values[:, :, n:] * scale], dim=2), layer)
    return out


class GistCells(nn.Module):
    """The fusion adapter (card features -> K gist vectors) and the gist value gate (n_layers, n_kv), 0 at the
    start. The reader LoRA it is trained with lives in the LM (embedding/reader.py)."""

    def __init__(self, adapter: Fusion, *, n_layers: int, n_kv: int):
        super().__init__()
        if "text" not in adapter.dims:
            raise ValueError("gist cells read the card's text features: the adapter must read the text modality")
        self.adapter = adapter
        self.gate = nn.Parameter(torch.zeros(n_layers, n_kv))

    @property
    def k(self) -> int:
        return self.adapter.config.k

    def vectors(self, features: torch.Tensor) -> torch.Tensor:
        """features (T, d_text) -> gist vectors (K, d_lm); the adapter's other modalities are masked out."""
        tokens = {m: ModalityTokens.missing(d) for m, d in self.adapter.dims.items()}
        tokens["text"] = ModalityTokens(features, True)
        return self.adapter.soft_prompt(tokens)

    def extend(self, model: nn.Module, read: CardRead):
        """The card's kept cells followed by its K gist cells (DynamicCache, n + K positions)."""
        return add_gist(model, read.cells, self.vectors(read.features), self.gate)


def new_gist(config: FusionConfig, model: nn.Module, target_norm: float) -> GistCells:
    """A fresh GistCells for `model` (a text-only adapter of type config.type, the gate at 0)."""
    d = model.config.hidden_size
    adapter = build_fusion(config, {"text": d}, d, target_norm)
    return GistCells(adapter, n_layers=model.config.num_hidden_layers, n_kv=model.config.num_key_value_heads)


def save_gist(path: Path, gist: GistCells, model: nn.Module, reader: ReaderConfig, text_layer: float,
              extra: dict[str, str] | None = None) -> Path:
    """The adapter, the gate and the LM's reader LoRA in one safetensors file that rebuilds them alone."""
    adapter = gist.adapter
    tensors = {"adapter." + k: v.detach().cpu().contiguous() for k, v in adapter.state_dict().items()}
    tensors["gist.gate"] = gist.gate.detach().cpu().contiguous()
    lora, lora_meta = reader_weights(model, reader)
    tensors.update(lora)
    metadata = {"format": GIST_FORMAT, "version": GIST_VERSION, "d_lm": str(adapter.d_lm),
                "config": json.dumps(dataclasses.asdict(adapter.config)), "dims": json.dumps(adapter.dims),
                "text_layer": repr(float(text_layer)), **lora_meta, **(extra or {})}
    write_atomically(Path(path), lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
    return Path(path)


def load_gist(path: Path, model: nn.Module) -> tuple[GistCells, float]:
    """(GistCells, encoder text layer) from `path`; its reader is attached to `model` (switched off). Eval mode,
    no gradients."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"gist cells file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as file:
            metadata = file.metadata() or {}
        if metadata.get("format") != GIST_FORMAT or metadata.get("version") != GIST_VERSION:
            raise ValueError(f"format {metadata.get('format')!r} v{metadata.get('version')}, not {GIST_FORMAT} "
                             f"v{GIST_VERSION}")
        weights = load_file(str(path))
        config = FusionConfig(**json.loads(metadata["config"]))
        adapter = build_fusion(config, json.loads(metadata["dims"]), int(metadata["d_lm"]), target_norm=1.0)
        adapter.load_state_dict({k[8:]: v for k, v in weights.items() if k.startswith("adapter.")})
        gate = weights["gist.gate"]
        gist = GistCells(adapter, n_layers=gate.shape[0], n_kv=gate.shape[1])
        gist.gate.data.copy_(gate)
        text_layer = float(metadata["text_layer"])
    except (SafetensorError, KeyError, TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"{path}: not a usable personae gist cells file ({type(e).__name__}: {e})") from None
    if gate.shape != (model.config.num_hidden_layers, model.config.num_key_value_heads):
        raise ValueError(f"{path}: its gate {tuple(gate.shape)} is for another LM")
    if attach_reader(model, path) is None:
        raise ValueError(f"{path}: has no reader LoRA")
    return gist.to(next(model.parameters()).device).eval().requires_grad_(False), text_layer


@dataclass(frozen=True)
class GistPlan(CellPlan):
    """A CellPlan whose prefix is the kept ids, K gist slots (placeholder ids -1..-K), then the tail."""
    k: int = 8

    @property
    def prefix_ids(self) -> list[int]:
        return [self.ids[i] for i in self.kept] + soft_placeholders(self.k) + list(self.ids[len(self.ids) - self.tail:])

    def key(self) -> str:
        return super().key() + f"+gist{self.k}"


def gist_cells(model: nn.Module, gist: GistCells, text_layer: float, plan: GistPlan):
    """`plan`'s cells on a transformers LM: kept cells, gist cells, then the tail run by the base LM."""
    from ..chat.decoding import cache_kwarg

    read = read_card(model, plan.ids, plan.kept, text_layer)
    with torch.inference_mode():
        cells = gist.extend(model, read)
        if plan.tail:
            tail = torch.tensor([list(plan.ids[len(plan.ids) - plan.tail:])], device=gist.gate.device)
            model(input_ids=tail, use_cache=True, logits_to_keep=1, **{cache_kwarg(model): cells})
    return cells


class GistKV(PersonaKV):
    """A PersonaKV whose plans are GistPlans and whose cells end with the gist cells (transformers)."""

    def __init__(self, tokenizer, tfidf, model: nn.Module, gist: GistCells, text_layer: float,
                 settings: KVSettings = KVSettings()):
        super().__init__(tokenizer, tfidf, lambda plan: gist_cells(model, gist, text_layer, plan), settings)
        self.k = gist.k

    def plan(self, system_ids: Sequence[int], name: str) -> GistPlan:
        found = super().plan(system_ids, name)
        return GistPlan(found.ids, found.kept, found.tail, k=self.k)
