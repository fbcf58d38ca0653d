"""Per-persona tuning: the adapter's soft prompt for one persona, refined as K free vectors on that persona alone.

Starts from what the trained adapter gives the persona, distils its own card into the vectors on a handful
of teacher replies, and writes them to `<home>/personas/<slug>/soft_prompt.safetensors` (agent/embedding/tuned.py).
`fit_card_prompt` fits K vectors by another objective, reading the card's own text back from them (used by
benchmarks/validation_identification.py; see docs/persona_embedding.md, run 7).
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..embedding.cache import EmbeddingCache
from ..embedding.load import adapter_path
from ..embedding.soft_prompt import at_norm
from ..embedding.tuned import card_fingerprint, save_tuned, tuned_path
from ..persona.store import Persona
from .batching import logits_at, pack, pad_id
from .config import TrainConfig
from .data import conversation, draw_turns, load_train_turns
from .distill import distill_loss, make_batch, mean_loss, student_examples, student_logits
from .teacher import precompute_teacher


def tune_persona(lm, persona: Persona, adapter, encoder, config, *, home, steps: int = 30, lr: float = 3e-3,
                 examples: int = 8, out: Optional[Path] = None, train_cfg: TrainConfig = TrainConfig()) -> dict:
    """Fits K free vectors, initialised from `adapter`'s output for `persona`, to the persona's own teacher replies.

    lm: the chat LM (`LoadedLM`); adapter: the trained `Fusion` (config's embedding.adapter) and encoder the
    `PersonaEncoder` it reads; config: the `Config`. The teacher answers `examples` train user turns (from
    train_cfg.data_dir) with the card in context; the student mode is the config's conditioning
    (train_cfg.student_mode for card and summary, which have no soft prompt). The vectors keep the adapter's
    norm. Writes `out` (default: `tuned_path(home, persona.slug)`) and returns a summary with both losses.
    """
    if steps < 1 or examples < 1 or lr <= 0:
        raise ValueError(f"tune needs steps >= 1, examples >= 1 and lr > 0; got {steps}, {examples}, {lr}")
    modalities = EmbeddingCache(home.cache_dir("embeddings")).encode(persona, encoder)
    with torch.no_grad():
        start = adapter.soft_prompt(modalities)  # (K, d)
    mode = config.embedding.conditioning if config.embedding.soft else train_cfg.student_mode
    cfg = dataclasses.replace(train_cfg, student_mode=mode)
    work = Path(cfg.work_dir).expanduser() if cfg.work_dir else home.cache_dir("training")
    began = time.perf_counter()
    tuned, initial, final, n = fit_soft_prompt(lm, persona, start, adapter.target_norm, cfg, config.chat, work,
                                               steps=steps, lr=lr, examples=examples)
    path = Path(out) if out is not None else tuned_path(home, persona.slug)
    save_tuned(path, tuned, {"persona": persona.slug, "lm": lm.source, "card": card_fingerprint(persona.card),
                             "adapter": str(adapter_path(config.embedding.adapter)), "student_mode": mode,
                             "steps": str(steps), "examples": str(examples),
                             "initial_loss": f"{initial:.4f}", "final_loss": f"{final:.4f}"})
    return {"persona": persona.slug, "out": str(path), "steps": steps, "examples": n,
            "initial_loss": initial, "final_loss": final, "seconds": round(time.perf_counter() - began, 2)}


def fit_vectors(start: torch.Tensor, norm, step_loss, *, steps: int, lr: float, seed: int, desc: str) -> torch.Tensor:
    """Adam on K free vectors from `start` (K, d), each kept at length `norm`; returns them fitted, (K, d) float32.

    step_loss(soft) -> scalar loss of one step, soft: (K, d) on start's device. Seeds torch first, so any
    sampling step_loss does is reproducible.
    """
    torch.manual_seed(seed)
    vectors = torch.nn.Parameter(start.detach().clone().float())  # (K, d)
    norm = torch.as_tensor(norm, dtype=torch.float32, device=vectors.device)
    optimizer = torch.optim.Adam([vectors], lr=lr)
    with torch.enable_grad():
        bar = tqdm(range(steps), desc=desc, unit="step", dynamic_ncols=True)
        for _ in bar:
            loss = step_loss(at_norm(vectors, norm))
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    with torch.no_grad():
        return at_norm(vectors, norm).detach()


def fit_soft_prompt(lm, persona: Persona, start: torch.Tensor, norm, cfg: TrainConfig, chat, work: Path, *,
                    steps: int, lr: float, examples: int,
                    shown: Optional[Persona] = None) -> tuple[torch.Tensor, float, float, int]:
    """K free vectors, from `start` (K, d), fitted by context distillation to `persona`'s own teacher replies.

    The teacher (the LM with `persona`'s card) answers `examples` train user turns, cached in `work`; the
    student sees the vectors in cfg.student_mode, with the card of `shown` (default: `persona`; e.g. its
    summary card, with student_mode soft+card). Every vector is kept at length `norm`. Returns the fitted
    (K, d) float32 vectors, the loss before and after over those replies, and the number of student examples.
    """
    turns, files = load_train_turns(cfg.data_dir)
    drawn = draw_turns(persona.slug, turns, examples, cfg.seed)
    teacher = precompute_teacher(lm, {persona.slug: persona}, drawn, (*files, persona.folder / "persona.yaml"),
                                 cfg, chat, work)
    students = student_examples(lm, {persona.slug: shown or persona}, teacher, cfg, chat, start.shape[0])
    model, pad = lm.model, pad_id(lm.tokenizer)
    start = start.float().to(lm.device)
    norm = torch.as_tensor(norm, dtype=torch.float32, device=lm.device)

    def replies_loss(soft: torch.Tensor) -> float:  # over every student example
        return mean_loss(model, students, lambda chunk: soft.expand(len(chunk), -1, -1), cfg, pad=pad,
                         batch_size=cfg.batch_size)

    def step_loss(soft: torch.Tensor) -> torch.Tensor:  # one random batch
        order = torch.randperm(len(students)).tolist()[:cfg.batch_size]
        batch = make_batch([students[i] for i in order], pad)
        return distill_loss(student_logits(model, batch, soft.expand(len(order), -1, -1)), batch, cfg)[0]

    initial = replies_loss(at_norm(start, norm))
    tuned = fit_vectors(start, norm, step_loss, steps=steps, lr=lr, seed=cfg.seed, desc=f"tuning {persona.slug}")
    return tuned, initial, replies_loss(tuned), len(students)


CARD_QUESTION = "Who are you? Tell me about yourself, your world and how you talk."


def fit_card_prompt(lm, persona: Persona, start: torch.Tensor, norm, chat, *, steps: int, lr: float,
                    max_tokens: int = 384, seed: int = 0) -> tuple[torch.Tensor, float, float]:
    """K free vectors, from `start` (K, d), fitted so the LM reads `persona`'s card back from them.

    The prompt is the soft-mode chat prompt (the vectors, the one-line system prompt, no card text) with
    CARD_QUESTION as the user turn; the loss is the LM's cross-entropy on the card's own text (the system turn
    the card would fill, first `max_tokens` tokens) as the reply. Every vector is kept at length `norm`.
    Returns the fitted (K, d) float32 vectors and the card cross-entropy before and after.
    """
    from ..chat.prompt import fit_prompt
    from ..embedding.encoders import card_text

    history = conversation(persona.card, CARD_QUESTION, chat.user_name, with_greeting=False)
    prompt = fit_prompt(lm.tokenizer, persona.card, history, chat.user_name, budget=1 << 20,
                        soft_tokens=start.shape[0], with_card=False).ids
    target = lm.tokenizer(card_text(persona.card), add_special_tokens=False)["input_ids"][:max_tokens]
    ids, mask, rows, cols = pack([(prompt, target)], pad_id(lm.tokenizer))  # (1, T) each
    labels = torch.tensor(target, device=lm.device)
    start = start.float().to(lm.device)
    norm = torch.as_tensor(norm, dtype=torch.float32, device=lm.device)

    def card_loss(soft: torch.Tensor) -> torch.Tensor:  # soft: (K, d)
        logits = logits_at(lm.model, ids, mask, rows, cols, soft[None].to(lm.model.dtype))  # (N, V)
        return F.cross_entropy(logits, labels)

    with torch.no_grad():
        initial = card_loss(at_norm(start, norm)).item()
    fitted = fit_vectors(start, norm, card_loss, steps=steps, lr=lr, seed=seed,
                         desc=f"fitting {persona.slug} to its card")
    with torch.no_grad():
        return fitted, initial, card_loss(fitted).item()
