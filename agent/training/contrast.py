"""The identification term: a persona's own lines must be likelier under its soft prompt than under others'.

Distillation alone teaches the average role-play voice first (most teacher tokens are generic), so the
adapter can lower the KL without telling personas apart. This term scores each of a training persona's
own example lines (its greeting and the `{{char}}` replies of its example dialogue, macros resolved) as
the reply to its user line under its own soft prompt and under `negatives` other training personas' soft
prompts, and takes the cross-entropy of the true persona among those candidates, as `personae eval`'s
identification does. Every candidate reads the line's own prompt (its persona's name, no card text: what
`conditioning: soft` shows the LM); only the soft prompt differs. The lines often name their speaker
("*Kalani sits ...*"), so with each candidate's own name the name would do the telling apart and the
soft prompt would learn little.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from ..chat.prompt import Message, fit_prompt
from ..conditioning import MODES, shown_card
from ..persona.card import CharacterCard
from ..persona.macros import split_examples, substitute
from ..persona.store import Persona
from .batching import logits_at, pack

GREETING_TURN = "Hello."  # the user line a greeting is scored as the answer to


@dataclass(frozen=True)
class CardLine:
    persona: str  # train persona slug
    to: str  # the user line it answers
    ids: list[int]  # the persona's line, tokenized (cut to TrainConfig.contrast_tokens)


def card_lines(card: CharacterCard, user: str) -> list[tuple[str, str]]:
    """(user line, character line) pairs from the card: the greeting, then each example-dialogue reply.

    Example blocks are `{{user}}: ...` / `{{char}}: ...` lines (a line without a speaker continues the
    previous one); a reply with no user line before it answers GREETING_TURN.
    """
    def resolve(text: str) -> str:
        return substitute(text, char=card.name, user=user).strip()

    pairs = [(GREETING_TURN, resolve(card.first_mes))] if card.first_mes.strip() else []
    for block in split_examples(card.mes_example):
        said: list[list[str]] = []  # [speaker, text]
        for line in block.splitlines():
            head, sep, rest = line.partition(":")
            speaker = head.strip().lower()
            if sep and speaker in ("{{user}}", "{{char}}", user.lower(), card.name.lower()):
                said.append(["user" if speaker in ("{{user}}", user.lower()) else "char", rest.strip()])
            elif said:
                said[-1][1] += "\n" + line.strip()
        last_user = GREETING_TURN
        for speaker, text in said:
            if speaker == "user":
                last_user = resolve(text)
            elif text.strip():
                pairs.append((last_user, resolve(text)))
    return [(to, text) for to, text in pairs if text]


def contrast_lines(tokenizer, personas: dict[str, Persona], user: str, max_tokens: int) -> list[CardLine]:
    """Every train persona's card lines, tokenized; personas in dict order, lines in card order."""
    out = []
    for slug, persona in personas.items():
        for to, text in card_lines(persona.card, user):
            ids = tokenizer(text, add_special_tokens=False)["input_ids"][:max_tokens]
            if ids:
                out.append(CardLine(slug, to, list(ids)))
    return out


def draw_negatives(slugs: Sequence[str], own: str, n: int, generator: torch.Generator) -> list[str]:
    """`n` distinct train personas other than `own`, drawn with `generator` (fewer when there are fewer)."""
    others = [s for s in slugs if s != own]
    order = torch.randperm(len(others), generator=generator).tolist()
    return [others[j] for j in order[:n]]


class Contrast:
    """Builds and scores the identification term; prompts are memoised per (candidate, user line)."""

    def __init__(self, tokenizer, personas: dict[str, Persona], lines: list[CardLine], *, user: str, k: int,
                 budget: int, negatives: int, pad: int):
        self.tokenizer, self.user, self.k, self.budget = tokenizer, user, k, budget
        self.cards = {slug: shown_card(p.card, MODES["soft"]) for slug, p in personas.items()}
        self.lines, self.negatives, self.pad = lines, negatives, pad
        self._prompts: dict[tuple[str, str], list[int]] = {}

    def prompt(self, slug: str, to: str) -> list[int]:
        """The soft-mode prompt of candidate `slug` answering `to`, with K soft slots (ids -1..-K)."""
        key = (slug, to)
        if key not in self._prompts:
            self._prompts[key] = fit_prompt(self.tokenizer, self.cards[slug], [Message("user", to)], self.user,
                                            budget=self.budget, soft_tokens=self.k, with_card=False).ids
        return self._prompts[key]

    def candidates(self, chosen: Sequence[CardLine], generator: torch.Generator) -> list[list[str]]:
        """Per line: its own persona first, then the drawn negatives."""
        slugs = list(self.cards)
        return [[line.persona, *draw_negatives(slugs, line.persona, self.negatives, generator)] for line in chosen]

    def loss(self, model: torch.nn.Module, chosen: Sequence[CardLine], candidates: list[list[str]],
             soft: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        """Cross-entropy of the own persona among each line's candidates; soft: slug -> (K, d) soft prompt.

        A candidate's score is the sum of the line's token log-probs after the line's own prompt with the
        candidate's soft prompt (the metric's score). All (line, candidate) sequences run as one batch.
        """
        seqs, owners = [], []
        for line, cands in zip(chosen, candidates):
            for slug in cands:
                seqs.append((self.prompt(line.persona, line.to), line.ids))
                owners.append(slug)
        ids, mask, rows, cols = pack(seqs, self.pad)
        vectors = torch.stack([soft[slug] for slug in owners])  # (S, K, d)
        device = vectors.device
        logits = logits_at(model, ids, mask, rows, cols, vectors)  # (N, V)
        rows = rows.to(device)
        targets = torch.tensor([t for _, cont in seqs for t in cont], device=device)  # (N,)
        token_logp = torch.log_softmax(logits, dim=-1).gather(-1, targets[:, None])[:, 0]  # (N,)
        scores = torch.zeros(len(seqs), device=device).index_add(0, rows, token_logp)  # (S,)
        scores = scores.view(len(chosen), -1)  # (L, 1 + negatives); column 0 is the own persona
        loss = F.cross_entropy(scores, torch.zeros(len(chosen), dtype=torch.long, device=device))
        right = (scores.argmax(-1) == 0).float().mean().item()
        return loss, {"id_loss": loss.item(), "id_acc": right}
