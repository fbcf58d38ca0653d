"""Splices the persona's soft-prompt vectors into the LM's input embeddings: the one place they enter the LM.

Hands the LM `inputs_embeds` with the K vectors inserted, and the attention mask and labels grown to match.
"""
from __future__ import annotations

from typing import Optional

import torch

IGNORE_INDEX = -100  # label value the LM's loss skips


def insert_soft_prompt(inputs_embeds: torch.Tensor, soft: torch.Tensor, attention_mask: torch.Tensor,
                       labels: Optional[torch.Tensor] = None, position: int = 0):
    """Inserts `soft` before token `position` of every row. Pure: the inputs are not changed.

    inputs_embeds: (B, T, d); soft: (K, d) or (B, K, d), cast to inputs_embeds' dtype and device;
    attention_mask: (B, T); labels: (B, T) or None; position: 0 <= position <= T (0 = before everything).
    Returns (embeds (B, T+K, d), attention_mask (B, T+K) with ones at the soft slots,
    labels (B, T+K) with -100 at the soft slots, or None). One position serves the whole batch, so pad
    batches on the right, or the soft slots land at different places relative to each row's text.
    """
    B, T, d = inputs_embeds.shape
    if soft.dim() == 2:
        soft = soft[None]  # (1, K, d)
    if soft.dim() != 3 or soft.shape[-1] != d or soft.shape[0] not in (1, B):
        raise ValueError(f"soft prompt of shape {tuple(soft.shape)} does not fit embeddings of shape {(B, T, d)}; "
                         f"expected (K, {d}) or ({B}, K, {d})")
    if attention_mask.shape != (B, T) or (labels is not None and labels.shape != (B, T)):
        raise ValueError(f"attention_mask {tuple(attention_mask.shape)} and labels must have shape {(B, T)}")
    if not 0 <= position <= T:
        raise ValueError(f"soft prompt position {position} is outside 0..{T}")
    K = soft.shape[1]
    soft = soft.to(dtype=inputs_embeds.dtype, device=inputs_embeds.device).expand(B, K, d)  # (B, K, d)

    def splice(x: torch.Tensor, middle: torch.Tensor) -> torch.Tensor:
        return torch.cat([x[:, :position], middle, x[:, position:]], dim=1)

    embeds = splice(inputs_embeds, soft)  # (B, T+K, d)
    mask = splice(attention_mask, attention_mask.new_ones(B, K))  # (B, T+K)
    if labels is not None:
        labels = splice(labels, labels.new_full((B, K), IGNORE_INDEX))  # (B, T+K)
    return embeds, mask, labels
