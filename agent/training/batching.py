"""Packing scored sequences for the frozen LM: what distillation, the identification term and tuning all run.

`pack` right-pads (prompt, continuation) id pairs and says which positions predict the continuation;
`logits_at` runs the LM on them with each row's soft prompt spliced in and returns logits at those positions.
"""
from __future__ import annotations

from typing import Sequence

import torch

from ..embedding.soft_prompt import inputs_embeds


def pack(sequences: Sequence[tuple[list[int], list[int]]], pad: int):
    """(prompt, continuation) id lists -> right-padded ids (S, T), attention mask (S, T), and the row and column
    of every position that predicts a continuation token, (N,) each: token j after a P-token prompt is
    predicted at column P+j-1. Continuation tokens come out in sequence order, matching rows and cols."""
    T = max(len(p) + len(c) for p, c in sequences)
    ids = torch.full((len(sequences), T), pad, dtype=torch.long)  # (S, T)
    mask = torch.zeros(len(sequences), T, dtype=torch.long)  # (S, T)
    rows, cols = [], []
    for i, (prompt, cont) in enumerate(sequences):
        P, R = len(prompt), len(cont)
        ids[i, :P + R] = torch.tensor(list(prompt) + list(cont))
        mask[i, :P + R] = 1
        rows.append(torch.full((R,), i))
        cols.append(torch.arange(P - 1, P + R - 1))
    return ids, mask, torch.cat(rows), torch.cat(cols)


def logits_at(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, rows: torch.Tensor,
              cols: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
    """The frozen LM on ids (S, T), row i with soft prompt soft[i] (soft: (S, K, d)); (N, V) float32 logits at
    (rows, cols). Only those positions go through the vocabulary projection (the LM body runs on every token).
    """
    from ..embedding.reader import reading

    device = soft.device
    ids = ids.to(device)
    embeds = inputs_embeds(model.get_input_embeddings(), ids, soft)  # (S, T, d)
    with reading(model, soft):  # the reader, if the LM has one: soft vectors are in this input
        hidden = model.base_model(inputs_embeds=embeds, attention_mask=mask.to(device)).last_hidden_state
    picked = hidden[rows.to(device), cols.to(device)]  # (N, d)
    return model.get_output_embeddings()(picked).float()  # (N, V)


def pad_id(tokenizer) -> int:
    """Any real id does for padding: padded positions are masked out and never scored."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
