"""The metrics, one function each: fidelity, identification, drift, break rate and prompt tokens of a conditioning.

Each takes the LM, one or more `Conditioning`s and held-out data, and returns plain numbers (JSON-ready);
`run.evaluate` calls them per mode. Prompts come from the chat path (`fit_prompt`, `ChatSession`), so
they are the prompts a chat would build.
"""
from __future__ import annotations

import random
import tempfile
import zlib
from pathlib import Path
from typing import Optional, Sequence

import torch
from tqdm.auto import tqdm

from ..chat.backends import TransformersBackend
from ..chat.decoding import CachedDecoder
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


DRIFT_WINDOW = 5  # turns averaged at each end of the drift curve, next to the single turns 1 and N


@torch.inference_mode()
def continuation_logits(decoder: CachedDecoder, prompt_ids: list[int], continuation: Sequence[int]) -> torch.Tensor:
    """Next-token logits at each position of `continuation` after `prompt_ids`, shape (len(continuation), vocab).

    Row i predicts continuation[i]. The decoder's cache is reused for the shared prefix of consecutive
    prompts and is left holding exactly `prompt_ids`.
    """
    first, _ = decoder.prefill(prompt_ids)  # (vocab,)
    rows = [first[None]]
    if len(continuation) > 1:
        rows.append(decoder.score(list(continuation[:-1])))  # (n-1, vocab)
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
    current, decoder, decoders = None, None, {}  # the current persona's decoders keep its system turns cached
    for persona, turn in tqdm(cases, desc="fidelity", disable=not progress, leave=False):
        t_soft = teacher.soft(persona)
        if persona is not current:
            current, decoder, decoders = persona, CachedDecoder(lm.model, soft=t_soft), {}
        history = [Message("user", turn)]
        t_ids = teacher.prompt(lm.tokenizer, persona, history, user, budget=budget).ids
        reply = greedy_reply(decoder, t_ids, options)
        t_logp = _log_probs(continuation_logits(decoder, t_ids, reply))  # (n, vocab)
        t_top = t_logp.argmax(-1)
        for name, student in students.items():
            s_ids = student.prompt(lm.tokenizer, persona, history, user, budget=budget).ids
            s_soft = student.soft(persona)
            if s_ids == t_ids and s_soft is t_soft:
                s_logp = t_logp
            else:
                if name not in decoders:
                    decoders[name] = CachedDecoder(lm.model, soft=s_soft)
                    student.start(decoders[name], lm.tokenizer, persona, user)
                s_logp = _log_probs(continuation_logits(decoders[name], s_ids, reply))
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
        conditioning.start(decoder, lm.tokenizer, candidate, user)
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
    return ChatSession(persona=conditioning.persona(persona), session_id=sid, backend=TransformersBackend(lm),
                       store=store, chat=chat, user_name=chat.user_name, soft=conditioning.soft(persona),
                       with_card=conditioning.with_card, kv=conditioning.kv)


def _reply(session: ChatSession, turn: str, *seed_parts) -> str:
    """session's reply to `turn`, sampled with a seed of its own made from chat.seed and `seed_parts`.

    One seed for every reply (what chat.seed alone does) draws the same random numbers each time, so
    replies start alike ("The ..."); every mode gets the same seeds, so modes are compared pairwise.
    """
    seed = zlib.crc32("/".join(map(str, (session.chat.seed, *seed_parts))).encode())
    return "".join(session.reply(turn, sampling=session.options(seed=seed)))


def drift(lm: LoadedLM, conditioning: Conditioning, personas: Sequence[Persona], turns: Sequence[str], *,
          chat: ChatConfig, embed: Embedder, progress: bool = False) -> dict:
    """Similarity of replies to the card as a long chat goes on, in a context small enough that history presses.

    Each persona holds one chat of `turns` (the same script for every persona and mode) under `chat`
    (its context_tokens is the small window). Each reply's MiniLM cosine to `card_description` gives a
    curve per persona; `curve` is their mean per turn, `at_turn_1` and `at_last_turn` its ends, and
    `first_turns_mean` / `last_turns_mean` the means of its first and last DRIFT_WINDOW turns (one reply
    per persona and turn is noisy).
    `messages_dropped_at_last_turn` shows the window pressing: old messages the last prompt left out;
    `break_rate_in_chat` is the share of these ordinary replies the break detector flags; `transcripts`
    holds every chat with the rules each reply broke, for reading.
    """
    per_persona, dropped, transcripts = {}, {}, {}
    with tempfile.TemporaryDirectory(prefix="personae-eval-") as tmp:
        store = HistoryStore(Path(tmp) / "drift.db")
        for persona in personas:
            session = _session(lm, conditioning, persona, store, chat)
            transcript = []
            for i, turn in enumerate(tqdm(turns, desc=f"drift {conditioning.name} {persona.slug}",
                                          disable=not progress, leave=False)):
                reply = _reply(session, turn, persona.slug, "drift", i)
                rules = detect_break(reply, card=persona.card, user=chat.user_name, user_turn=turn,
                                     wrote_user_line=session.last_stats.stopped_by == "stop string")
                transcript.append({"user": turn, "reply": reply, "rules": list(rules)})
            replies = [entry["reply"] for entry in transcript]
            per_persona[persona.slug] = cosine_to(embed, replies, card_description(persona, chat.user_name))
            transcripts[persona.slug] = transcript
            dropped[persona.slug] = session.kept_from  # no greeting, so the index is the messages left out
    curve = [sum(values[t] for values in per_persona.values()) / len(per_persona) for t in range(len(turns))]
    window = min(DRIFT_WINDOW, len(curve))
    broken = sum(bool(entry["rules"]) for transcript in transcripts.values() for entry in transcript)
    return {"at_turn_1": curve[0], "at_last_turn": curve[-1], "last_turn": len(turns),
            "first_turns_mean": sum(curve[:window]) / window, "last_turns_mean": sum(curve[-window:]) / window,
            "window": window, "break_rate_in_chat": broken / (len(turns) * len(transcripts)), "curve": curve,
            "per_persona": per_persona, "messages_dropped_at_last_turn": dropped, "transcripts": transcripts}


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
    the card description is below it also counts as a break (rule `off_card`). `rules` counts the replies
    each rule fired on; `transcript` holds every reply with its rules and the guard's report (X-Personae-Guard's
    form: re-sampled, banned, cut or withheld replies), for checking the detector.
    """
    rules: dict[str, int] = {}
    transcript = []
    with tempfile.TemporaryDirectory(prefix="personae-eval-") as tmp:
        store = HistoryStore(Path(tmp) / "breaks.db")
        cases = [(p, turn) for p, turns in zip(personas, script) for turn in turns]
        for persona, turn in tqdm(cases, desc=f"break {conditioning.name}", disable=not progress, leave=False):
            session = _session(lm, conditioning, persona, store, chat)
            reply = _reply(session, turn, persona.slug, "break", turn)
            system_text = session.prompt_for([Message("user", turn)]).messages[0]["content"]
            fired = list(detect_break(reply, card=persona.card, user=chat.user_name, user_turn=turn,
                                      system_text=system_text,
                                      wrote_user_line=session.last_stats.stopped_by == "stop string"))
            if similarity_floor and embed is not None and \
                    cosine_to(embed, [reply], card_description(persona, chat.user_name))[0] < similarity_floor:
                fired.append("off_card")
            for rule in fired:
                rules[rule] = rules.get(rule, 0) + 1
            transcript.append({"persona": persona.slug, "user": turn, "reply": reply, "rules": fired,
                               "guard": session.last_guard.header()})  # what the guard did: retried, cut, withheld
    broken = sum(1 for entry in transcript if entry["rules"])
    return {"break_rate": broken / max(len(transcript), 1), "replies": len(transcript), "rules": rules,
            "transcript": transcript}


def prompt_tokens(lm: LoadedLM, conditioning: Conditioning, personas: Sequence[Persona], *, user: str) -> dict:
    """Mean context tokens the conditioning costs per persona (`Conditioning.prompt_tokens`)."""
    counts = {p.slug: conditioning.prompt_tokens(lm.tokenizer, p, user) for p in personas}
    return {"prompt_tokens": sum(counts.values()) / len(counts), "per_persona": counts}
