"""Where a persona's soft-prompt vectors enter the LM: the one splice every backend and the training loop use.

A prompt marks K soft slots with placeholder ids -1..-K (`soft_placeholders`; id -k stands for soft[k - 1]).
`pieces(ids, soft)` cuts such a prompt into token runs and runs of soft vectors, in order: llama.cpp decodes
them as token and embedding batches, `inputs_embeds` joins them into the transformers LM's input embeddings
(chat decoding and training), and the engine backend sends them as vLLM prompt_embeds. `at_norm` keeps soft
vectors at the length of real token embeddings. torch is imported only where tensors are made.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional, Sequence

if TYPE_CHECKING:
    import torch


def soft_placeholders(k: int) -> list[int]:
    """Placeholder ids for K soft vectors: -1 is vector 0, -2 vector 1, ..."""
    return [-(i + 1) for i in range(k)]


def pieces(ids: Sequence[int], soft: Optional[Any]) -> list[tuple[bool, Any]]:
    """ids with soft slots -> [(is_soft, piece)] in order: a list of token ids, or soft's rows for a run of slots.

    soft: (K, d) torch tensor or numpy array (rows are taken by indexing, so autograd flows through them);
    ValueError when the ids hold slots and soft is None, or a slot beyond K.
    """
    out, start = [], 0
    for i in range(1, len(ids) + 1):
        if i < len(ids) and (ids[i] < 0) == (ids[start] < 0):
            continue
        run = list(ids[start:i])
        if run[0] < 0:
            if soft is None:
                raise ValueError("the prompt has soft-prompt slots but no soft prompt was given")
            rows = [-t - 1 for t in run]
            if max(rows) >= len(soft):
                raise ValueError(f"soft slot {-max(rows) - 1} is beyond the {len(soft)} soft vectors given")
            out.append((True, soft[rows]))  # (n, d)
        else:
            out.append((False, run))
        start = i
    return out


def inputs_embeds(table: "torch.nn.Module", ids: "torch.Tensor", soft: Optional["torch.Tensor"]) -> "torch.Tensor":
    """The LM's input embeddings for ids (T,) or (B, T), soft slots filled from soft (K, d) or per row (B, K, d).

    table: the LM's input embedding (`model.get_input_embeddings()`). Returns (T, d) or (B, T, d) in its dtype.
    """
    import torch

    if ids.dim() == 2:
        rows = [soft[i] if soft is not None and soft.dim() == 3 else soft for i in range(ids.shape[0])]
        return torch.stack([inputs_embeds(table, row, s) for row, s in zip(ids, rows)])  # (B, T, d)
    weight = table.weight
    parts = [piece.to(weight.device, weight.dtype) if is_soft else table(torch.tensor(piece, device=weight.device))
             for is_soft, piece in pieces(ids.tolist(), soft)]  # (n_i, d) each
    return torch.cat(parts)  # (T, d)


def at_norm(vectors: "torch.Tensor", norm) -> "torch.Tensor":
    """(..., d) vectors rescaled to L2 length `norm` each, directions kept (soft prompts live at the embeddings' norm)."""
    return vectors * (norm / vectors.norm(dim=-1, keepdim=True).clamp_min(1e-6))
