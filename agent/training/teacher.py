"""The teacher: the chat LM with the full card in its context, run once over every training example.

For each example it greedily writes a reply (as the chat engine would at temperature 0) and keeps, per
reply position, its top-k next-token log-probs. Those go to disk (one safetensors file and a JSON index,
keyed by everything they depend on) so training only ever runs the student.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from ..atomic import write_atomically, write_text_atomically
from ..chat.decoding import CachedDecoder, cache_kwarg
from ..chat.prompt import fit_prompt
from ..chat.sampling import SamplingOptions, sample_next
from ..chat.template import stop_token_ids
from ..config import ChatConfig
from ..embedding.cache import EmbeddingCache
from ..embedding.encoders import ModalityTokens, PersonaEncoder, weights_fingerprint
from ..models.lm import LoadedLM
from ..persona.store import Persona
from .config import TrainConfig
from .data import Example, conversation

TEACHER_VERSION = "2"  # part of the cache key: bump it when what the teacher records or the prompt layout changes (2: post-history instructions precede the user turn)


@dataclass(frozen=True)
class TeacherReply:
    ids: torch.Tensor  # (R,) int64, the reply's tokens (ending with end-of-turn when the teacher stopped there)
    topk_ids: torch.Tensor  # (R, k) int64, the teacher's k likeliest next tokens at each reply position
    topk_logprobs: torch.Tensor  # (R, k) float32 rounded to float16 (as stored), log-probs under the full softmax
    stopped_by: str  # "eos" | "max_tokens"


@dataclass(frozen=True)
class TeacherSet:
    examples: list[Example]  # what each reply answers
    replies: list[TeacherReply]  # one per example, same order
    texts: list[str]  # the replies as text, for reading the JSON index
    key: str  # the cache key they were stored under
    seconds: float  # time spent generating them (summed over resumed runs)


@torch.inference_mode()
def teacher_replies(decoder: CachedDecoder, prompts: Sequence[list[int]], *, max_tokens: int, top_k: int,
                    options: SamplingOptions) -> list[TeacherReply]:
    """Greedy replies to `prompts`, decoded as one batch; records the raw (unpenalised) top-k at each position.

    Each prompt is prefilled alone by the chat's `decoder`, which reuses the prefix it shares with the one
    before (a persona's card); the caches are then left-padded into one batch, since on a CPU one decode step
    for 8 rows costs about twice one for a single row. Tokens are picked as the chat picks them at temperature
    0 (with its repetition penalty); the penalty only picks, so the student learns the LM's own distribution.
    """
    model = decoder.model
    rows = []
    for ids in prompts:
        logits, _ = decoder.prefill(ids)
        rows.append((decoder.snapshot(len(ids))[1], len(ids), logits))
    cache, mask, positions = _batch_caches(model, rows)
    logits = torch.stack([row[2] for row in rows])  # (B, V)
    ids = [[] for _ in prompts]
    top_ids, top_lp = [[] for _ in prompts], [[] for _ in prompts]
    done = [False] * len(prompts)
    for t in range(max_tokens):
        logprobs = torch.log_softmax(logits.float(), dim=-1)  # (B, V)
        best = torch.topk(logprobs, min(top_k, logprobs.shape[-1]), dim=-1)
        step = []
        for i, prompt in enumerate(prompts):
            if done[i]:
                step.append(ids[i][-1])  # fed but never read: its row is finished
                continue
            top_ids[i].append(best.indices[i].cpu())
            top_lp[i].append(best.values[i].cpu().half().float())  # as stored: a fresh and a cached run train alike
            token = sample_next(logits[i], options, list(prompt) + ids[i])
            ids[i].append(token)
            done[i] = token in options.eos_token_ids
            step.append(token)
        if all(done) or t + 1 == max_tokens:
            break
        mask = torch.cat([mask, mask.new_ones(len(prompts), 1)], dim=1)  # (B, L + t + 1)
        out = model(input_ids=torch.tensor(step, device=mask.device)[:, None], attention_mask=mask,
                    position_ids=positions[:, None] + t, use_cache=True, **{cache_kwarg(model): cache})
        logits = out.logits[:, -1]  # (B, V)
    return [TeacherReply(torch.tensor(r), torch.stack(a), torch.stack(b), "eos" if d else "max_tokens")
            for r, a, b, d in zip(ids, top_ids, top_lp, done)]


def _batch_caches(model: torch.nn.Module, rows: list) -> tuple[object, torch.Tensor, torch.Tensor]:
    """Per-prompt KV caches [(cache, length, logits)] -> (one cache, left-padded to the longest; mask (B, L);
    the next position of each row (B,)). Padding sits before each prompt and is masked out."""
    from transformers import DynamicCache

    device = rows[0][2].device
    lengths = torch.tensor([row[1] for row in rows], device=device)  # (B,)
    L = int(lengths.max())
    mask = (torch.arange(L, device=device)[None] >= (L - lengths)[:, None]).long()  # (B, L)
    if len(rows) == 1:
        return rows[0][0], mask, lengths
    merged = DynamicCache(config=model.config)
    for layer in range(len(rows[0][0].layers)):
        keys, values = [], []
        for cache, length, _ in rows:
            k, v = cache.layers[layer].keys, cache.layers[layer].values  # (1, h, length, d)
            keys.append(F.pad(k, (0, 0, L - length, 0)))
            values.append(F.pad(v, (0, 0, L - length, 0)))
        merged.update(torch.cat(keys), torch.cat(values), layer)  # (B, h, L, d)
    return merged, mask, lengths


def teacher_key(lm: LoadedLM, files: Sequence[Path], examples: Sequence[Example], cfg: TrainConfig,
                chat: ChatConfig) -> str:
    """sha256 of the LM (source and weights fingerprint), the data files, the examples and the options used."""
    digest = hashlib.sha256(f"teacher v{TEACHER_VERSION} {lm.source} {weights_fingerprint(lm.model)}\n".encode())
    for path in sorted(files):
        digest.update(f"{path.parent.name}/{path.name}".encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    options = {"greeting": cfg.greeting, "reply_tokens": cfg.reply_tokens, "top_k": cfg.top_k,
               "teacher_batch": cfg.teacher_batch,  # batching moves near-ties, so it can change a reply
               "user": chat.user_name, "repetition_penalty": chat.repetition_penalty,
               "context_tokens": chat.context_tokens}
    digest.update(json.dumps([options, [dataclasses.astuple(e) for e in examples]]).encode())
    return digest.hexdigest()


def _paths(folder: Path, key: str) -> tuple[Path, Path]:
    stem = folder / f"teacher-{key[:16]}"
    return stem.with_suffix(".safetensors"), stem.with_suffix(".json")


def save_teacher(folder: Path, key: str, examples: Sequence[Example], replies: Sequence[TeacherReply],
                 texts: Sequence[str], seconds: float, *, complete: bool) -> None:
    """Replies concatenated into flat tensors (offsets say where each starts) + a JSON index beside them."""
    tensors_path, index_path = _paths(folder, key)
    lengths = torch.tensor([0] + [len(r.ids) for r in replies])
    tensors = {
        "offsets": lengths.cumsum(0),  # (N+1,) int64
        "reply_ids": torch.cat([r.ids for r in replies]).to(torch.int32),  # (total,)
        "topk_ids": torch.cat([r.topk_ids for r in replies]).to(torch.int32),  # (total, k)
        "topk_logprobs": torch.cat([r.topk_logprobs for r in replies]).half(),  # (total, k)
    }
    index = {"key": key, "version": TEACHER_VERSION, "complete": complete, "seconds": round(seconds, 2),
             "examples": [{**dataclasses.asdict(e), "reply": t, "tokens": len(r.ids), "stopped_by": r.stopped_by}
                          for e, r, t in zip(examples, replies, texts)]}
    # the index is written last: a tensors file without a matching index is ignored on load
    write_atomically(tensors_path, lambda tmp: save_file(tensors, tmp, metadata={"key": key}))
    write_text_atomically(index_path, json.dumps(index, indent=1))


def load_teacher(folder: Path, key: str) -> Optional[tuple[dict, list[TeacherReply]]]:
    """(index, replies) stored under `key`, complete or partial; None when absent or unreadable."""
    tensors_path, index_path = _paths(folder, key)
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
        tensors = load_file(tensors_path)
    except (OSError, ValueError, SafetensorError):
        return None
    offsets = tensors["offsets"].tolist()
    if index.get("key") != key or len(offsets) != len(index["examples"]) + 1:
        return None
    replies = [TeacherReply(tensors["reply_ids"][a:b].long(), tensors["topk_ids"][a:b].long(),
                            tensors["topk_logprobs"][a:b].float(), entry["stopped_by"])
               for a, b, entry in zip(offsets, offsets[1:], index["examples"])]
    return index, replies


def precompute_teacher(lm: LoadedLM, personas: dict[str, Persona], examples: list[Example], files: Sequence[Path],
                       cfg: TrainConfig, chat: ChatConfig, folder: Path) -> TeacherSet:
    """Teacher replies for `examples`, cfg.teacher_batch at a time, cached in `folder` under `teacher_key`.

    Examples should come persona by persona, so each card is prefilled once. A rerun with the same key
    loads them; an interrupted run continues after the last batch it saved.
    """
    if not examples:
        raise ValueError("no training examples: the data set gave no (persona, turn) pairs")
    key = teacher_key(lm, files, examples, cfg, chat)
    found = load_teacher(folder, key)
    index, replies = found if found else ({"seconds": 0.0, "examples": []}, [])
    texts = [e["reply"] for e in index["examples"]]
    if found and index.get("complete"):
        return TeacherSet(examples, replies, texts, key, index["seconds"])
    options = SamplingOptions(temperature=0.0, repetition_penalty=chat.repetition_penalty,
                              eos_token_ids=stop_token_ids(lm.tokenizer, lm.model.generation_config))
    budget = min(chat.context_tokens, lm.context_length) - cfg.reply_tokens
    seconds, started = index["seconds"], time.perf_counter()
    decoder = CachedDecoder(lm.model)
    bar = tqdm(total=len(examples), desc="teacher replies", unit="reply", initial=len(replies), dynamic_ncols=True)
    for first in range(len(replies), len(examples), cfg.teacher_batch):
        chunk = examples[first:first + cfg.teacher_batch]  # examples come persona by persona: prefixes are shared
        prompts = []
        for example in chunk:
            card = personas[example.persona].card
            history = conversation(card, example.turn, chat.user_name, with_greeting=cfg.greeting)
            prompts.append(fit_prompt(lm.tokenizer, card, history, chat.user_name, budget=budget, with_card=True).ids)
        for reply in teacher_replies(decoder, prompts, max_tokens=cfg.reply_tokens, top_k=cfg.top_k, options=options):
            replies.append(reply)
            texts.append(lm.tokenizer.decode(reply.ids, skip_special_tokens=True).strip())
        bar.update(len(chunk))
        save_teacher(folder, key, examples[:len(replies)], replies, texts, seconds + time.perf_counter() - started,
                     complete=len(replies) == len(examples))
    bar.close()
    return TeacherSet(examples, replies, texts, key, seconds + time.perf_counter() - started)


def encode_personas(personas: dict[str, Persona], encoder: PersonaEncoder,
                    folder: Path) -> dict[str, dict[str, ModalityTokens]]:
    """Every persona's modality tokens through the on-disk EmbeddingCache, so training never re-encodes."""
    cache = EmbeddingCache(folder)
    return {slug: cache.encode(persona, encoder)
            for slug, persona in tqdm(personas.items(), desc="persona encodings", unit="persona", dynamic_ncols=True)}
