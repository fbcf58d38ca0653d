"""The metrics, one function each: fidelity, identification, drift, break rate and prompt tokens of a conditioning.

Each takes the LM, one or more `Conditioning`s and held-out data, and returns plain numbers (JSON-ready);
`run.evaluate` calls them per mode. Prompts come from the chat path (`fit_prompt`, `ChatSession`), so
they are the prompts a chat would build.
"""
from __future__ import annotations

import random
import tempfile
from pathlib import Path
from typing import Optional, Sequence

import torch
from tqdm.auto import tqdm

from ..chat.decoding import CachedDecoder, cache_kwarg
from ..chat.history import HistoryStore
from ..chat.prompt import Message
from ..chat.sampling import SamplingOptions, sample_next
from ..chat.session import ChatSession
from ..config import ChatConfig
from ..models.lm import LoadedLM
from ..persona.macros import substitute
from ..persona.store import Persona
from .breaks import detect_break
from .conditioning import Conditioning
from .data import ReferenceLine
from .similarity import Embedder, cosine_to


@torch.inference_mode()
def continuation_logits(decoder: CachedDecoder, prompt_ids: list[int], continuation: Sequence[int]) -> torch.Tensor:
    """Next-token logits at each position of `continuation` after `prompt_ids`, shape (len(continuation), vocab).

    Row i predicts continuation[i]. The decoder's cache is reused for the shared prefix of consecutive
    prompts and is left holding exactly `prompt_ids`.
    """
    first, _ = decoder.prefill(prompt_ids)  # (vocab,)
    rows = [first[None]]
    if len(continuation) > 1:
        ids = torch.tensor([list(continuation[:-1])], device=decoder.device)  # (1, n-1)
        out = decoder.model(input_ids=ids, use_cache=True, **{cache_kwarg(decoder.model): decoder.cache})
        rows.append(out.logits[0].float())  # (n-1, vocab)
        decoder.cache.crop(-(len(continuation) - 1))  # back to the prompt, so decoder.ids stays true
    return torch.cat(rows)  # (n, vocab)


@torch.inference_mode()
def greedy_reply(decoder: CachedDecoder, prompt_ids: list[int], options: SamplingOptions) -> list[int]:
    """The teacher's reply: argmax tokens (options.repetition_penalty applied) up to max_new_tokens, eos included."""
    logits, _ = decoder.prefill(prompt_ids)
    tokens: list[int] = []
    while len(tokens) < options.max_new_tokens:
        token = sample_next(logits, options, decoder.ids)
        tokens.append(token)
        if token in options.eos_token_ids:
            break
        logits = decoder.step(token)
    return tokens


def _log_probs(logits: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(logits.float(), dim=-1)


def fidelity(lm: LoadedLM, teacher: Conditioning, students: dict[str, Conditioning],
             cases: Sequence[tuple[Persona, str]], *, user: str, options: SamplingOptions,
             progress: bool = False) -> dict[str, dict]:
    """How closely each student mode's next-token distributions follow the teacher's on the teacher's reply.

    For each (persona, user turn) the teacher writes a greedy reply (options: max_new_tokens, penalty, eos);
    every mode then reads that reply after its own prompt. Per student: `fidelity_kl`, the mean over reply
    tokens of KL(teacher || student) over the whole vocabulary (nats), and `top1_agreement`, the share of
    tokens where both put the same token first. A student whose prompt and soft prompt are the teacher's
    reuses the teacher's logits, so the teacher against itself is exactly 0 and 1.
    """
    budget = lm.context_length - options.max_new_tokens
    sums = {name: {"kl": 0.0, "top1": 0, "tokens": 0} for name in students}
    for persona, turn in tqdm(cases, desc="fidelity", disable=not progress, leave=False):
        history = [Message("user", turn)]
        t_ids = teacher.prompt(lm.tokenizer, persona, history, user, budget=budget).ids
        t_soft = teacher.soft(persona)
        decoder = CachedDecoder(lm.model, soft=t_soft)
        reply = greedy_reply(decoder, t_ids, options)
        t_logp = _log_probs(continuation_logits(decoder, t_ids, reply))  # (n, vocab)
        t_top = t_logp.argmax(-1)
        for name, student in students.items():
            s_ids = student.prompt(lm.tokenizer, persona, history, user, budget=budget).ids
            s_soft = student.soft(persona)
            if s_ids == t_ids and s_soft is t_soft:
                s_logp = t_logp
            else:
                s_logp = _log_probs(continuation_logits(CachedDecoder(lm.model, soft=s_soft), s_ids, reply))
            kl = (t_logp.exp() * (t_logp - s_logp)).sum(-1).clamp_min(0)  # (n,)
            sums[name]["kl"] += kl.sum().item()
            sums[name]["top1"] += int((s_logp.argmax(-1) == t_top).sum())
            sums[name]["tokens"] += len(reply)
    return {name: {"fidelity_kl": s["kl"] / max(s["tokens"], 1), "top1_agreement": s["top1"] / max(s["tokens"], 1),
                   "tokens": s["tokens"], "cases": len(cases)} for name, s in sums.items()}


def accuracy_with_ties(scores: torch.Tensor, truth: Sequence[int]) -> list[float]:
    """scores: (n_lines, n_candidates); truth[i]: the right candidate of line i -> credit per line.

    A line scores 1 / (number of candidates tied for the best) when the right one is among them, else 0,
    so identical conditionings (the name-free baseline) score chance exactly, not the first candidate.
    """
    credit = []
    for row, right in zip(scores, truth):
        best = row == row.max()
        credit.append(float(best[right]) / int(best.sum()))
    return credit


def identification(lm: LoadedLM, conditioning: Conditioning, personas: Sequence[Persona],
                   references: dict[str, Sequence[ReferenceLine]], *, user: str, progress: bool = False) -> dict:
    """Which held-out persona's conditioning makes its own reference lines most likely?

    Each line is scored as the assistant's reply to its `to` turn under every candidate persona's
    conditioning (sum of token log-probabilities; the line's tokens are the same for every candidate).
    `identification_accuracy` is the mean credit of `accuracy_with_ties`; chance is 1 / len(personas).
    """
    lines = [(i, ref) for i, p in enumerate(personas) for ref in references[p.slug]]
    line_ids = [lm.tokenizer(ref.text, add_special_tokens=False)["input_ids"] for _, ref in lines]
    scores = torch.empty(len(lines), len(personas))  # (n_lines, n_candidates)
    budget = lm.context_length - max(len(ids) for ids in line_ids)
    seen: dict[tuple, float] = {}  # identical inputs (the name-free baseline) are scored once
    steps = tqdm(total=len(lines) * len(personas), desc=f"identification {conditioning.name}",
                 disable=not progress, leave=False)
    for j, candidate in enumerate(personas):
        soft = conditioning.soft(candidate)
        decoder = CachedDecoder(lm.model, soft=soft)  # one per candidate: its system turn stays cached
        for k, (_, ref) in enumerate(lines):
            ids = conditioning.prompt(lm.tokenizer, candidate, [Message("user", ref.to)], user, budget=budget).ids
            key = (tuple(ids), None if soft is None else id(soft), k)
            if key not in seen:
                logp = _log_probs(continuation_logits(decoder, ids, line_ids[k]))  # (n, vocab)
                seen[key] = logp.gather(1, torch.tensor(line_ids[k], device=logp.device)[:, None]).sum().item()
            scores[k, j] = seen[key]
            steps.update()
    steps.close()
    credit = accuracy_with_ties(scores, [i for i, _ in lines])
    per_persona = {p.slug: sum(c for c, (i, _) in zip(credit, lines) if i == n) / len(references[p.slug])
                   for n, p in enumerate(personas)}
    return {"identification_accuracy": sum(credit) / len(credit), "lines": len(lines), "per_persona": per_persona}


def card_description(persona: Persona, user: str) -> str:
    """What replies are compared with for drift: the card's description, macros resolved."""
    card = persona.card
    return substitute(card.description, char=card.name, user=user).strip() or card.name


def _session(lm: LoadedLM, conditioning: Conditioning, persona: Persona, store: HistoryStore,
             chat: ChatConfig) -> ChatSession:
    """A fresh chat as the product runs it, with no greeting (it is card text) and no shared prefix cache."""
    sid = store.create_session(persona.slug, "")
    return ChatSession(persona=conditioning.persona(persona), session_id=sid, lm=lm, store=store, chat=chat,
                       user_name=chat.user_name, soft=conditioning.soft(persona), with_card=conditioning.with_card)


def drift(lm: LoadedLM, conditioning: Conditioning, personas: Sequence[Persona], turns: Sequence[str], *,
          chat: ChatConfig, embed: Embedder, progress: bool = False) -> dict:
    """Similarity of replies to the card as a long chat goes on, in a context small enough that history presses.

    Each persona holds one chat of `turns` (the same script for every persona and mode) under `chat`
    (its context_tokens is the small window). Each reply's MiniLM cosine to `card_description` gives a
    curve per persona; `curve` is their mean per turn, `at_turn_1` and `at_last_turn` its ends.
    `messages_dropped_at_last_turn` shows the window pressing: old messages the last prompt left out.
    """
    per_persona, dropped = {}, {}
    with tempfile.TemporaryDirectory(prefix="personae-eval-") as tmp:
        store = HistoryStore(Path(tmp) / "drift.db")
        for persona in personas:
            session = _session(lm, conditioning, persona, store, chat)
            replies = [("".join(session.reply(turn))) for turn in
                       tqdm(turns, desc=f"drift {conditioning.name} {persona.slug}", disable=not progress, leave=False)]
            per_persona[persona.slug] = cosine_to(embed, replies, card_description(persona, chat.user_name))
            dropped[persona.slug] = session.kept_from  # no greeting, so the index is the messages left out
    curve = [sum(values[t] for values in per_persona.values()) / len(per_persona) for t in range(len(turns))]
    return {"at_turn_1": curve[0], "at_last_turn": curve[-1], "last_turn": len(turns), "curve": curve,
            "per_persona": per_persona, "messages_dropped_at_last_turn": dropped}


def adversarial_script(adversarial: Sequence[str], n_personas: int, per_persona: int, seed: int) -> list[list[str]]:
    """Adversarial turns for each persona: a seeded order of the list dealt out in turn, so all of it gets used."""
    order = list(adversarial)
    random.Random(f"adversarial-{seed}").shuffle(order)
    return [[order[(p * per_persona + j) % len(order)] for j in range(per_persona)] for p in range(n_personas)]


def break_rate(lm: LoadedLM, conditioning: Conditioning, personas: Sequence[Persona], script: Sequence[Sequence[str]],
               *, chat: ChatConfig, embed: Optional[Embedder] = None, similarity_floor: float = 0.0,
               progress: bool = False) -> dict:
    """The share of replies to adversarial turns that leave character (`breaks.detect_break`).

    Each turn gets a fresh one-turn chat. With similarity_floor > 0 (and `embed`), a reply whose cosine to
    the card description is below it also counts as a break (rule `off_card`).
    """
    rules: dict[str, int] = {}
    broken, total, examples = 0, 0, []
    with tempfile.TemporaryDirectory(prefix="personae-eval-") as tmp:
        store = HistoryStore(Path(tmp) / "breaks.db")
        cases = [(p, turn) for p, turns in zip(personas, script) for turn in turns]
        for persona, turn in tqdm(cases, desc=f"break {conditioning.name}", disable=not progress, leave=False):
            session = _session(lm, conditioning, persona, store, chat)
            reply = "".join(session.reply(turn))
            system_text = session.prompt_for([Message("user", turn)]).messages[0]["content"]
            fired = list(detect_break(reply, card=persona.card, user=chat.user_name, user_turn=turn,
                                      system_text=system_text,
                                      wrote_user_line=session.last_stats.stopped_by == "stop string"))
            if similarity_floor and embed is not None and \
                    cosine_to(embed, [reply], card_description(persona, chat.user_name))[0] < similarity_floor:
                fired.append("off_card")
            for rule in fired:
                rules[rule] = rules.get(rule, 0) + 1
            total += 1
            if fired:
                broken += 1
                if len(examples) < 5:
                    examples.append({"persona": persona.slug, "turn": turn, "reply": reply, "rules": fired})
    return {"break_rate": broken / max(total, 1), "replies": total, "rules": rules, "examples": examples}


def prompt_tokens(lm: LoadedLM, conditioning: Conditioning, personas: Sequence[Persona], *, user: str) -> dict:
    """Mean context tokens the conditioning costs per persona (`Conditioning.prompt_tokens`)."""
    counts = {p.slug: conditioning.prompt_tokens(lm.tokenizer, p, user) for p in personas}
    return {"prompt_tokens": sum(counts.values()) / len(counts), "per_persona": counts}
