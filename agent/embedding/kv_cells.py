"""The persona as KV cells: the card's system turn read by the LM once, only its most telling cells kept.

    system turn ids (T,) --LM, one pass--> K/V at every layer (L, n_kv, T, hd)
                         --select--------> kept positions: the header, the M highest tf-idf tokens, the end marker
                         --gather, re-rotate keys to positions 0..n-1--> persona cells (L, n_kv, n, hd)

The kept cells still carry what the LM read around them (each was computed attending to the whole card), which
is why they identify a persona far better than the same tokens fed as fresh input. A kept key computed at
position p is moved to position q by rotating it by q - p (RoPE: R(q) = R(q - p) R(p)), as llama.cpp's
`llama_memory_seq_add` does for its K-shift; values carry no position.

`select_positions` decides which cells stay (deterministic: ties go to the earlier position); `TfIdf` scores a
token by how often the card uses it against how many other cards do; `transformers_cells` builds the cells on
a transformers LM as a `DynamicCache` prefix. agent/generation/sequences.py builds the same cells in llama.cpp.
"""
from __future__ import annotations

import collections
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence

MIN_WORD_CHARS = 3  # tokens shorter than this once stripped (punctuation, "a", "of") never count as telling


class TfIdf:
    """Token scores: tf (uses in this system turn) x log(N / (1 + df)) (df: cards among N that use the token).

    df: token id -> number of reference cards whose system turn holds it; n: number of reference cards.
    """

    def __init__(self, df: dict[int, int], n: int):
        if n < 1:
            raise ValueError("tf-idf needs at least one reference card")
        self.df, self.n = df, n

    @classmethod
    def from_ids(cls, cards: Iterable[Sequence[int]]) -> "TfIdf":
        """From the system-turn ids of reference cards (other personas')."""
        df: collections.Counter = collections.Counter()
        n = 0
        for ids in cards:
            df.update(set(ids))
            n += 1
        return cls(dict(df), n)

    def save(self, path: Path, *, tokenizer_key: str) -> None:
        path.write_text(json.dumps({"tokenizer": tokenizer_key, "n": self.n,
                                    "df": {str(t): c for t, c in sorted(self.df.items())}}))

    @classmethod
    def load(cls, path: Path, *, tokenizer_key: str) -> "TfIdf":
        try:
            data = json.loads(Path(path).read_text())
            found, n, df = data["tokenizer"], int(data["n"]), {int(t): int(c) for t, c in data["df"].items()}
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"embedding.kv_idf {path}: not a token-frequency file ({type(e).__name__}: {e})") from None
        if found != tokenizer_key:
            raise ValueError(f"embedding.kv_idf {path} counts tokens of {found!r}, but the LM's tokenizer is "
                             f"{tokenizer_key!r}; rebuild it with scripts/make_kv_idf.py")
        return cls(df, n)

    def scores(self, ids: Sequence[int], words: Sequence[bool]) -> list[float]:
        """One score per position of `ids`; positions whose token is no word (words[i] False) score -1."""
        tf = collections.Counter(ids)
        return [tf[t] * math.log(self.n / (1 + self.df.get(t, 0))) if word else -1.0 for t, word in zip(ids, words)]


def tokenizer_key(tokenizer) -> str:
    """Names a tokenizer by its vocabulary (16 hex digits of a sha256): df counts are only valid for the same one."""
    import hashlib

    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    return hashlib.sha256(json.dumps(vocab).encode()).hexdigest()[:16]


def word_mask(tokenizer, ids: Sequence[int]) -> list[bool]:
    """Whether each token, decoded alone and stripped, has at least MIN_WORD_CHARS characters."""
    cache: dict[int, bool] = {}
    for t in set(ids):
        cache[t] = len(tokenizer.decode([t]).strip()) >= MIN_WORD_CHARS
    return [cache[t] for t in ids]


def select_positions(scores: Sequence[float], *, header: int, tail: int, m: int,
                     ids: Optional[Sequence[int]] = None) -> list[int]:
    """Positions kept, ascending: the first `header`, the last `tail`, and the `m` best-scoring of the rest (ties go
    to the earlier position). ids given: at most one position per token id (its first use), so a name the card
    repeats is kept once. Deterministic."""
    n = len(scores)
    if header + tail >= n:
        return list(range(n))
    best, seen = [], set()
    for i in sorted(range(header, n - tail), key=lambda i: (-scores[i], i)):
        if len(best) == m:
            break
        if ids is not None:
            if ids[i] in seen:
                continue
            seen.add(ids[i])
        best.append(i)
    return sorted({*range(header), *range(n - tail, n), *best})


def header_length(tokenizer, system_ids: Sequence[int], name: str, kind: str) -> int:
    """Tokens of the system turn kept before the selection.

    kind "name": through the end of the first sentence ("<|im_start|>system\\nYou are Captain Mara Vell.");
    "main": through the first paragraph (personae's whole instruction line); "none": nothing.
    """
    if kind == "none":
        return 0
    if kind not in ("name", "main"):
        raise ValueError(f"embedding.kv_header must be name, main or none, got {kind!r}")
    end = "\n\n" if kind == "main" else "."
    text = ""
    for i, t in enumerate(system_ids):
        text += tokenizer.decode([t])
        at = text.find(name)
        if at >= 0 and end in text[at + len(name):]:
            return i + 1
    return 0


@dataclass(frozen=True)
class CellPlan:
    """What to keep of one system turn: the cells at `kept` positions of its body (all but the last `tail` ids),
    moved to positions 0..n-1; the tail (the turn's end marker) is then decoded afresh after them, which also
    makes llama.cpp apply its pending K-shift before anything reads or saves the cells."""
    ids: tuple[int, ...]  # (T,) the system turn's ids, as rendered
    kept: tuple[int, ...]  # (n,) kept positions among the first T - tail, ascending
    tail: int  # ids at the end decoded after the kept cells

    @property
    def body(self) -> list[int]:
        return list(self.ids[:len(self.ids) - self.tail])

    @property
    def prefix_ids(self) -> list[int]:
        """(n + tail,) the ids that stand for the system turn in every prompt: the kept ones, then the tail."""
        return [self.ids[i] for i in self.kept] + list(self.ids[len(self.ids) - self.tail:])

    def runs_dropped(self) -> list[tuple[int, int]]:
        """Dropped body positions as [start, end) runs, ascending."""
        runs, kept, start = [], set(self.kept), None
        for i in range(len(self.body) + 1):
            gone = i < len(self.body) and i not in kept
            if gone and start is None:
                start = i
            elif not gone and start is not None:
                runs.append((start, i))
                start = None
        return runs

    def key(self) -> str:
        """Names these cells (a card edit, other lore, another M: another key)."""
        import hashlib

        return hashlib.sha256(repr((self.ids, self.kept, self.tail)).encode()).hexdigest()[:24]


def plan_cells(tokenizer, system_ids: Sequence[int], name: str, tfidf: TfIdf, *, m: int, header: str = "name",
               tail: int = 2, unique: bool = True) -> CellPlan:
    """Which cells of `system_ids` stay: the header (see header_length) and the M best tf-idf tokens of the body;
    the last `tail` ids (the turn's end marker and newline) follow them, decoded afresh."""
    ids = list(system_ids)
    tail = min(tail, len(ids) - 1)
    body = ids[:len(ids) - tail]
    scores = tfidf.scores(body, word_mask(tokenizer, body))
    kept = select_positions(scores, header=header_length(tokenizer, body, name, header), tail=0, m=m,
                            ids=body if unique else None)
    return CellPlan(tuple(ids), tuple(kept), tail)


def rope_rotate(model, keys, delta):
    """keys (B, n_kv, n, hd) computed at positions p, rotated by `delta` (n,) positions each: the keys at p + delta.

    Uses the model's own rotary embedding (llama / qwen2 / mistral style rotate-half RoPE)."""
    import torch
    from transformers.models.llama.modeling_llama import rotate_half

    rotary = model.model.rotary_emb
    cos, sin = rotary(keys, position_ids=torch.as_tensor(delta, device=keys.device)[None, :])  # (1, n, hd)
    cos, sin = cos[:, None].to(keys.dtype), sin[:, None].to(keys.dtype)  # (1, 1, n, hd)
    return keys * cos + rotate_half(keys) * sin


def transformers_cells(model, plan: CellPlan, cache_kwarg: str = "past_key_values"):
    """`plan`'s cells as a transformers DynamicCache over positions 0..len(plan.prefix_ids)-1.

    One forward over the body; per layer, keys (1, n_kv, T', hd) -> kept (1, n_kv, n, hd), rotated from their
    original positions to 0..n-1; then the tail is run over them."""
    import torch
    from transformers import DynamicCache

    device = next(model.parameters()).device
    full = DynamicCache(config=model.config)
    with torch.inference_mode():
        model(input_ids=torch.tensor([plan.body], device=device), use_cache=True, logits_to_keep=1,
              **{cache_kwarg: full})
        cells = gather_cells(model, full, plan.kept)
        if plan.tail:
            tail = torch.tensor([plan.prefix_ids[len(plan.kept):]], device=device)
            model(input_ids=tail, use_cache=True, logits_to_keep=1, **{cache_kwarg: cells})
    return cells


def gather_cells(model, full, kept: Sequence[int]):
    """The cells at `kept` positions of the DynamicCache `full`, keys re-rotated to positions 0..n-1: a new
    DynamicCache (per layer (B, n_kv, n, hd)); `full` is not modified."""
    import torch
    from transformers import DynamicCache

    layers = _layers(full)
    device = layers[0][0].device
    index = torch.tensor(list(kept), device=device)
    delta = torch.arange(len(index), device=device) - index  # new position - old position, (n,)
    cells = DynamicCache(config=model.config)
    for layer, (keys, values) in enumerate(layers):
        kept_k = rope_rotate(model, keys.index_select(2, index), delta)
        cells.update(kept_k.contiguous(), values.index_select(2, index).contiguous(), layer)
    return cells


def _layers(cache):
    """(keys, values) per layer of a DynamicCache, each (B, n_kv, T, hd), across transformers versions."""
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    return list(zip(cache.key_cache, cache.value_cache))


def rope_supported(model) -> Optional[str]:
    """None when the model's RoPE can be re-rotated here; else why not (the refusal names it)."""
    config = model.config
    params = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    kind = params.get("rope_type", params.get("type", "default")) if isinstance(params, dict) else "default"
    if kind not in ("default", "linear", "llama3"):
        return f"rope type {kind!r}"
    if not hasattr(getattr(model, "model", None), "rotary_emb"):
        return f"{type(model).__name__} has no shared rotary embedding"
    return None
