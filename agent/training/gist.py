"""Training gist cells (embedding/gist.py) on the scaled personas, teacher-forced: nothing is generated.

Per persona, one card pass (`prepare`) gives its kept cells (embedding.conditioning=kv's selection), its text
features, and the teacher: the base LM reading the whole shown card, its top-k log-probs at every token of the
persona's held-back lines, as replies to their user lines. Kept in RAM (and on disk with --cache), so steps
never read a card again.

A step (`step_loss`) takes B personas and one line of each. Every persona's gist cells are written from its
cells (adapter + the LoRA reader, with gradients); every line is scored as the reply to its user line under
every persona's cells + gist cells (each candidate's own chat prompt after them, as `personae eval` and the
validation identification score it). Loss: kl_weight x KL(teacher top-k || student) + ce_weight x CE on the
own persona's scores of the line's tokens, + id_weight x the cross-entropy of the own persona among the B
candidates (line log-likelihoods as logits). Stats: the in-batch identification accuracy and the persona
dependence, log p(line | own cells + gist) - mean log p(line | another's), in nats per line.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from ..chat.prompt import Message, build_messages, render
from ..embedding.gist import CardRead, GistCells, copy_cache, read_card
from ..embedding.kv_cells import TfIdf, plan_cells
from ..embedding.persona_kv import KVSettings
from ..persona.card import CharacterCard
from ..persona.macros import substitute
from .batching import pack
from .data import ScaledPersona


@dataclass(frozen=True)
class Target:
    to: str  # the user line it answers
    ids: list[int]  # (R,) the line's tokens
    topk_ids: torch.Tensor  # (R, k) the teacher's k likeliest tokens at each of them
    topk_logprobs: torch.Tensor  # (R, k) their log-probs (full softmax), float32


@dataclass
class TrainPersona:
    slug: str
    card: CharacterCard  # the card shown (held-back fields emptied)
    system_len: int  # tokens of its system turn
    tail: list[int]  # the system turn's last ids, decoded after the gist cells
    read: CardRead  # kept cells and text features (the full cache is dropped after the teacher)
    targets: list[Target]


def line_texts(card: CharacterCard, lines, user: str, n: int) -> list[tuple[str, str]]:
    """Up to `n` (user line, line) pairs, filtered as the validation's lines are: macros resolved, `*action*`
    spans cut, longer than 20 characters, none naming the persona (every candidate's prompt has its own name)."""
    names = [w.lower().strip(",.") for w in card.name.split() if len(w) > 2]
    out = []
    for line in lines:
        text = re.sub(r"\*[^*]*\*", "", substitute(line.text, char=card.name, user=user)).strip()
        if len(text) > 20 and not any(name in text.lower() for name in names):
            out.append((substitute(line.to, char=card.name, user=user), text))
    return out[:n]


def chat_rest(tokenizer, card: CharacterCard, to: str, user: str, system_len: int) -> list[int]:
    """The chat prompt after the system turn for one user line: post-history instructions, the user turn, the
    assistant's header (as card and kv modes render it)."""
    return render(tokenizer, build_messages(card, [Message("user", to)], user))[1][system_len:]


def token_logits(model: torch.nn.Module, cache, seqs: Sequence[tuple[list[int], list[int]]], pad: int):
    """Every (prompt, continuation) of `seqs` run after `cache` (batch 1, shared): ((N, V) float32 logits at the
    positions that predict continuation tokens, (N,) their row, (N,) the tokens).

    The prompts' common start (a candidate's tail and post-history instructions) runs once, on one row."""
    from ..chat.decoding import cache_kwarg
    from ..chat.stream import common_prefix_length

    device = next(model.parameters()).device
    kwarg = cache_kwarg(model.base_model)
    shared = min(len(p) for p, _ in seqs) - 1  # the last prompt token runs per row: it predicts the first one
    for prompt, _ in seqs[1:]:
        shared = min(shared, common_prefix_length(seqs[0][0], prompt))
    work = copy_cache(model, cache)
    if shared > 0:
        model.base_model(input_ids=torch.tensor([seqs[0][0][:shared]], device=device), use_cache=True,
                         **{kwarg: work})
    ids, _, rows, cols = pack([(p[shared:], c) for p, c in seqs], pad)  # right-padded: padding follows, no mask
    hidden = model.base_model(input_ids=ids.to(device), use_cache=True,
                              **{kwarg: copy_cache(model, work, len(seqs))}).last_hidden_state
    picked = hidden[rows.to(device), cols.to(device)]  # (N, d)
    targets = torch.tensor([t for _, cont in seqs for t in cont], device=device)
    return model.get_output_embeddings()(picked).float(), rows.to(device), targets


def prepare(model, tokenizer, scaled: ScaledPersona, tfidf: TfIdf, settings: KVSettings, *, user: str,
            text_layer: float, lines: int, line_tokens: int, top_k: int, pad: int) -> TrainPersona:
    """One card pass for `scaled`: its cells, features and the teacher's top-k on its target lines."""
    from ..embedding.persona_kv import system_turn_ids

    card = scaled.card
    system = system_turn_ids(tokenizer, card, user)
    plan = plan_cells(tokenizer, system, card.name, tfidf, m=settings.m, header=settings.header,
                      unique=settings.unique)
    read = read_card(model, plan.ids, plan.kept, text_layer, keep_full=True)
    pairs = line_texts(card, scaled.lines, user, lines)
    seqs = [(chat_rest(tokenizer, card, to, user, len(system)),
             tokenizer(text, add_special_tokens=False)["input_ids"][:line_tokens]) for to, text in pairs]
    targets = []
    if seqs:
        with torch.inference_mode():
            logits, rows, _ = token_logits(model, read.full, seqs, pad)
            best = torch.topk(torch.log_softmax(logits, -1), top_k, dim=-1)
        for i, ((to, _), (_, ids)) in enumerate(zip(pairs, seqs)):
            at = rows == i
            targets.append(Target(to, ids, best.indices[at].cpu(), best.values[at].float().cpu()))
    read = CardRead(read.cells, read.features, None)
    return TrainPersona(scaled.slug, card, len(system), system[len(system) - plan.tail:], read, targets)


@dataclass(frozen=True)
class LossWeights:
    kl: float = 1.0  # KL(teacher top-k renormalised || student) on the own persona's line tokens
    ce: float = 1.0  # cross-entropy of the line's tokens under the own persona
    ident: float = 1.0  # in-batch identification: CE of the own persona among the batch's candidates


class Rests:
    """(persona, user line) -> its chat prompt after the cells: the tail, then chat_rest; memoised."""

    def __init__(self, tokenizer, user: str):
        self.tokenizer, self.user, self._memo = tokenizer, user, {}

    def __call__(self, persona: TrainPersona, to: str) -> list[int]:
        key = (persona.slug, to)
        if key not in self._memo:
            self._memo[key] = persona.tail + chat_rest(self.tokenizer, persona.card, to, self.user, persona.system_len)
        return self._memo[key]


def step_loss(model, gist: GistCells, batch: Sequence[TrainPersona], chosen: Sequence[Target], rests: Rests,
              weights: LossWeights, pad: int) -> tuple[torch.Tensor, dict]:
    """The loss of one step: line i of `chosen` is batch[i]'s; every line is scored under every batch persona."""
    caches = [gist.extend(model, persona.read) for persona in batch]  # (n_c + K cells each), with gradients
    columns, own_logits = [], []
    for c, (persona, cache) in enumerate(zip(batch, caches)):
        seqs = [(rests(persona, t.to), t.ids) for t in chosen]
        logits, rows, targets = token_logits(model, cache, seqs, pad)  # (N, V), (N,), (N,)
        token_logp = torch.log_softmax(logits, -1).gather(-1, targets[:, None])[:, 0]  # (N,)
        columns.append(torch.zeros(len(seqs), device=logits.device).index_add(0, rows, token_logp))  # (L,)
        own_logits.append(logits[rows == c])  # (R_c, V): line c under its own persona
    scores = torch.stack(columns, dim=1)  # (L, C), line i's own persona is column i
    own = torch.arange(len(batch), device=scores.device)
    ident = F.cross_entropy(scores, own)
    logits = torch.cat(own_logits)  # (R, V)
    tokens = torch.tensor([t for target in chosen for t in target.ids], device=logits.device)
    teacher = torch.log_softmax(torch.cat([t.topk_logprobs for t in chosen]).to(logits.device), -1)  # (R, k)
    student = torch.log_softmax(logits, -1).gather(-1, torch.cat([t.topk_ids for t in chosen]).to(logits.device))
    kl = (teacher.exp() * (teacher - student)).sum(-1).mean()
    ce = F.cross_entropy(logits, tokens)
    loss = weights.kl * kl + weights.ce * ce + weights.ident * ident
    others = (scores.sum(1) - scores.diagonal()) / max(1, len(batch) - 1)
    stats = {"loss": loss.item(), "kl": kl.item(), "ce": ce.item(), "id": ident.item(),
             "acc": (scores.argmax(1) == own).float().mean().item(),
             "dependence": (scores.diagonal() - others).mean().item()}
    return loss, stats
