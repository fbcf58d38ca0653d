"""Context distillation: trains the fusion adapter so the LM with soft prompts answers as it does with the card.

The LM and the encoders stay frozen; gradients flow through the LM's `inputs_embeds` into the K soft vectors
and on into the adapter. Loss per reply position: kl_weight * KL(teacher top-k || student) + lm_weight * CE
on the teacher's reply token, plus train.contrast_weight x the identification term of contrast.py when it is
on. Hands the trained adapter (safetensors) to `embedding.adapter`.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..chat.prompt import fit_prompt
from ..conditioning import shown_card, student_modes
from ..config import ChatConfig
from ..embedding.config import FusionConfig
from ..embedding.encoders import ModalityTokens
from ..embedding.fusion import Fusion, build_fusion, embedding_norm
from ..models.lm import LoadedLM
from ..persona.store import Persona
from .batching import logits_at, pack, pad_id
from .checkpoint import clear_checkpoints, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .data import conversation
from .teacher import TeacherReply, TeacherSet

if TYPE_CHECKING:
    from .contrast import Contrast

# TrainConfig fields that may change between a run and its resumption
RESUMABLE_CHANGES = ("checkpoint_every", "out", "work_dir", "data_dir")


@dataclass(frozen=True)
class StudentExample:
    persona: str  # slug, to look up its modality tokens
    prompt_ids: list[int]  # the student's prompt; ids -1..-K mark the soft-prompt slots
    reply: TeacherReply  # what the student is taught to continue with


@dataclass(frozen=True)
class StudentBatch:
    ids: torch.Tensor  # (B, T) prompt ++ reply, right-padded
    attention_mask: torch.Tensor  # (B, T) 1 at real tokens
    rows: torch.Tensor  # (N,) batch row of each position that predicts a reply token
    cols: torch.Tensor  # (N,) its column
    targets: torch.Tensor  # (N,) the teacher's reply token there
    topk_ids: torch.Tensor  # (N, k) the teacher's k likeliest tokens there
    topk_logprobs: torch.Tensor  # (N, k) their teacher log-probs


def student_examples(lm: LoadedLM, personas: dict[str, Persona], teacher: TeacherSet, cfg: TrainConfig,
                     chat: ChatConfig, k: int) -> list[StudentExample]:
    """The student's view of every teacher example in each mode of cfg.student_mode (both: each example twice)."""
    budget = min(chat.context_tokens, lm.context_length) - cfg.reply_tokens
    out = []
    for mode in student_modes(cfg.student_mode):  # both: every teacher reply without, then with, the card
        for example, reply in zip(teacher.examples, teacher.replies):
            card = shown_card(personas[example.persona].card, mode)
            history = conversation(card, example.turn, chat.user_name, with_greeting=cfg.greeting)
            prompt = fit_prompt(lm.tokenizer, card, history, chat.user_name, budget=budget, soft_tokens=k,
                                with_card=mode.card_text)
            out.append(StudentExample(example.persona, prompt.ids, reply))
    return out


def make_batch(examples: Sequence[StudentExample], pad: int) -> StudentBatch:
    """Right-padded prompt ++ reply ids; position t predicts token t+1, so reply token j is predicted at P+j-1."""
    ids, mask, rows, cols = pack([(e.prompt_ids, e.reply.ids.tolist()) for e in examples], pad)
    cat = torch.cat
    return StudentBatch(ids, mask, rows, cols, cat([e.reply.ids for e in examples]),
                        cat([e.reply.topk_ids for e in examples]), cat([e.reply.topk_logprobs for e in examples]))


def student_logits(model: torch.nn.Module, batch: StudentBatch, soft: torch.Tensor) -> torch.Tensor:
    """The frozen LM on the batch with each row's soft prompt; soft: (B, K, d). Returns (N, V) float32 logits."""
    return logits_at(model, batch.ids, batch.attention_mask, batch.rows, batch.cols, soft)


def distill_loss(logits: torch.Tensor, batch: StudentBatch, cfg: TrainConfig) -> tuple[torch.Tensor, dict]:
    """kl_weight * T^2 * KL(teacher || student) + lm_weight * CE, both means over the N reply positions.

    The teacher's top-k log-probs are renormalised over those k ids (at temperature T); the student's are its
    full-vocabulary log-softmax gathered on the same ids, so mass it puts outside the top-k is penalised too.
    """
    device, t = logits.device, cfg.temperature
    teacher = torch.log_softmax(batch.topk_logprobs.to(device).float() / t, dim=-1)  # (N, k)
    student = torch.log_softmax(logits / t, dim=-1).gather(-1, batch.topk_ids.to(device))  # (N, k)
    kl = (teacher.exp() * (teacher - student)).sum(-1).mean() * t * t
    ce = F.cross_entropy(logits, batch.targets.to(device))
    loss = cfg.kl_weight * kl + cfg.lm_weight * ce
    return loss, {"kl": kl.item(), "ce": ce.item()}


@torch.no_grad()
def mean_loss(model: torch.nn.Module, examples: Sequence[StudentExample], soft_for, cfg: TrainConfig, *,
              pad: int, batch_size: int = 8) -> float:
    """The distillation loss over all `examples`, weighted by reply positions; soft_for(chunk) -> (B, K, d)."""
    total, count = 0.0, 0
    for i in range(0, len(examples), batch_size):
        chunk = examples[i:i + batch_size]
        batch = make_batch(chunk, pad)
        loss, _ = distill_loss(student_logits(model, batch, soft_for(chunk)), batch, cfg)
        total, count = total + loss.item() * len(batch.targets), count + len(batch.targets)
    return total / count


def param_groups(adapter: torch.nn.Module, cfg) -> list[dict]:
    """AdamW groups: the gates (`*_gate`) at gate_lr_mult x the learning rate and no weight decay, the rest as set.

    Zero-initialised tanh gates get tiny, inconsistent gradients while the free latents can already lower
    the loss alone; at the common rate they stay near 0 and the adapter ignores the persona's media.
    """
    gates = [p for n, p in adapter.named_parameters() if n.endswith("_gate")]
    rest = [p for n, p in adapter.named_parameters() if not n.endswith("_gate")]
    groups = [{"params": rest, "weight_decay": cfg.weight_decay, "lr_mult": 1.0}]
    if gates:
        groups.append({"params": gates, "weight_decay": 0.0, "lr_mult": cfg.gate_lr_mult})
    return groups


def reader_config(fusion_cfg: FusionConfig):
    """The ReaderConfig a fusion config names (fusion.reader=lora or prefix)."""
    from ..embedding.reader import ReaderConfig

    targets = tuple(t.strip() for t in fusion_cfg.reader_targets.split(",") if t.strip())
    return ReaderConfig(rank=fusion_cfg.reader_rank, alpha=fusion_cfg.reader_alpha, targets=targets,
                        kind=fusion_cfg.reader)


def learning_rate(step: int, total: int, cfg: TrainConfig) -> float:
    """Linear warm-up to cfg.lr, then cosine decay to 10% of it; a pure function of the step, kept by no state."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    return cfg.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, progress))))


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The shuffled example order of one epoch; recomputed, never stored, so a resumed run sees the same batches."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)).tolist()


BUCKET_BATCHES = 16  # epoch_batches sorts this many batches' worth of examples by length before cutting batches


def epoch_batches(lengths: Sequence[int], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """One epoch's batches of example indices: shuffled, then bucketed by length, then the batches shuffled.

    Each window of BUCKET_BATCHES * batch_size shuffled examples is sorted by length before it is cut
    into batches, so short soft-mode prompts are not padded to the card prompts of soft+card examples
    (student_mode both). A pure function of (lengths, seed, epoch): a resumed run sees the same batches.
    """
    order = epoch_order(len(lengths), seed, epoch)
    window = BUCKET_BATCHES * batch_size
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start:start + window], key=lambda j: lengths[j])
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    shuffled = torch.randperm(len(batches), generator=torch.Generator().manual_seed(seed * 100_003 + epoch + 7))
    return [batches[j] for j in shuffled.tolist()]


def run_identity(cfg: TrainConfig, fusion: FusionConfig, teacher_key: str, lm_source: str) -> dict:
    """What a checkpoint must match to be resumed: the options that shape the run, the teacher data, the LM."""
    train = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in RESUMABLE_CHANGES}
    return {"train": train, "fusion": dataclasses.asdict(fusion), "teacher": teacher_key, "lm": lm_source}


def _check_resumable(saved: dict, identity: dict, folder: Path) -> None:
    for part, value in identity.items():
        if saved.get(part) != value:
            diff = [k for k in value if saved.get(part, {}).get(k) != value[k]] if isinstance(value, dict) else []
            raise ValueError(f"cannot resume from {folder}: its {part} differs ({', '.join(diff) or 'changed'}); "
                             f"train without resume to start over")


def _restore(adapter: Fusion, optimizer, checkpoints: Path, identity: dict, resume: bool) -> dict:
    """The run state to start from: the newest checkpoint's (loaded into adapter and optimizer) or a fresh one."""
    found = load_checkpoint(checkpoints) if resume else None
    if not found:
        if not resume:
            clear_checkpoints(checkpoints)
        return {"step": 0, "losses": [], "seconds": 0.0, "eval_before": None}
    saved, state = found
    _check_resumable(state["identity"], identity, checkpoints)
    adapter.load_state_dict(saved.state_dict())
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng"])
    return state


def _evaluate(adapter: Fusion, model, modalities: dict, examples: list[StudentExample], cfg: TrainConfig,
              pad: int) -> float:
    adapter.eval()
    return mean_loss(model, examples, lambda chunk: adapter.soft_prompts([modalities[e.persona] for e in chunk]),
                     cfg, pad=pad, batch_size=cfg.batch_size)


def contrast_step(contrast: Contrast, step: int, cfg: TrainConfig):
    """The card lines and candidate personas of one step's identification term; a pure function of the step."""
    n = len(contrast.lines)
    first = step * cfg.contrast_lines
    picked = [epoch_order(n, cfg.seed + 1, (first + j) // n)[(first + j) % n] for j in range(cfg.contrast_lines)]
    chosen = [contrast.lines[j] for j in picked]
    generator = torch.Generator().manual_seed(cfg.seed * 100_003 + step)
    return chosen, contrast.candidates(chosen, generator)


def fit_adapter(lm: LoadedLM, modalities: dict[str, dict[str, ModalityTokens]], examples: list[StudentExample],
                cfg: TrainConfig, fusion_cfg: FusionConfig, dims: dict[str, int], *, checkpoints: Path,
                identity: dict, resume: bool = False, contrast: Optional[Contrast] = None) -> tuple[Fusion, dict]:
    """The training loop; returns the trained adapter (eval mode, on the CPU) and a summary.

    modalities: each persona's encoded tokens by slug; dims: the encoder's widths ({"audio": 512, ...}).
    contrast: the identification term, added with weight cfg.contrast_weight (None or weight 0: off).
    A checkpoint goes to `checkpoints` every cfg.checkpoint_every steps and at the end; resume=True
    continues from the newest one (it must match `identity`) and ends with the same weights.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import set_seed

    # accelerate keeps one process-wide state; forget the last run's, so a second run may pick another precision
    AcceleratorState._reset_state(reset_partial_state=True)
    accelerator = Accelerator(cpu=lm.device.type == "cpu", mixed_precision=cfg.mixed_precision)
    set_seed(cfg.seed)
    adapter = build_fusion(fusion_cfg, dims, lm.model.config.hidden_size, embedding_norm(lm.model))
    groups = param_groups(adapter, cfg)
    if fusion_cfg.reader != "none":  # the LM learns to read the soft vectors (embedding/reader.py)
        if resume:
            raise ValueError(f"resuming a run with fusion.reader={fusion_cfg.reader} is not supported yet (its checkpoints hold "
                             "the adapter only); train without resume")
        from ..embedding.reader import add_reader, has_reader

        if has_reader(lm.model):
            raise ValueError("the LM already carries a reader LoRA; load a fresh LM to train another")
        params = add_reader(lm.model, reader_config(fusion_cfg))
        if fusion_cfg.reader == "prefix":  # its zero gates learn at gate_lr_mult, as the adapter's do
            from ..embedding.deep_prefix import get_prefix

            groups += param_groups(get_prefix(lm.model), cfg)
        else:
            groups.append({"params": params, "weight_decay": 0.0, "lr_mult": 1.0})
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr)
    state = _restore(adapter, optimizer, checkpoints, identity, resume)
    adapter, optimizer = accelerator.prepare(adapter, optimizer)
    model, pad = lm.model.to(accelerator.device), pad_id(lm.tokenizer)
    scored = [examples[j] for j in epoch_order(len(examples), cfg.seed, -1)[:cfg.eval_examples]]
    if scored and state["eval_before"] is None:
        state["eval_before"] = _evaluate(adapter, model, modalities, scored, cfg, pad)
    per_epoch = math.ceil(len(examples) / cfg.batch_size)
    total, start, losses = cfg.epochs * per_epoch, state["step"], list(state["losses"])
    id_losses = list(state.get("id_losses", []))
    lengths, batches = [len(e.prompt_ids) + len(e.reply.ids) for e in examples], None
    bar = tqdm(total=total, initial=start, desc="training adapter", unit="step", dynamic_ncols=True)
    for step in range(start, total):
        began = time.perf_counter()
        epoch, i = divmod(step, per_epoch)
        if i == 0 or batches is None:
            batches = epoch_batches(lengths, cfg.batch_size, cfg.seed, epoch)
        chosen = [examples[j] for j in batches[i]]
        batch = make_batch(chosen, pad)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, total, cfg) * group["lr_mult"]
        adapter.train()
        with accelerator.autocast():
            soft = adapter.soft_prompts([modalities[e.persona] for e in chosen])  # (B, K, d)
            loss, parts = distill_loss(student_logits(model, batch, soft), batch, cfg)
            if contrast is not None and cfg.contrast_weight > 0:
                lines, candidates = contrast_step(contrast, step, cfg)
                slugs = sorted({s for c in candidates for s in c})
                vectors = adapter.soft_prompts([modalities[s] for s in slugs])  # (P, K, d)
                id_loss, id_parts = contrast.loss(model, lines, candidates, dict(zip(slugs, vectors)))
                loss = loss + cfg.contrast_weight * id_loss
                parts.update(id_parts)
                id_losses.append(id_parts["id_loss"])
        accelerator.backward(loss)
        if cfg.max_grad_norm:
            accelerator.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], cfg.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        state["seconds"] += time.perf_counter() - began
        bar.update(1)
        bar.set_postfix({name: f"{value:.3f}" for name, value in [("loss", losses[-1]), *parts.items()]})
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == total:
            save_checkpoint(checkpoints, step + 1, accelerator.unwrap_model(adapter), {
                **state, "optimizer": optimizer.state_dict(), "rng": torch.get_rng_state(), "losses": losses,
                "id_losses": id_losses, "identity": identity})
    bar.close()
    trained = accelerator.unwrap_model(adapter)
    eval_after = _evaluate(trained, model, modalities, scored, cfg, pad) if scored else None
    seconds = state["seconds"]
    summary = {"steps": total, "steps_run": total - start, "examples": len(examples), "steps_per_epoch": per_epoch,
               "eval_examples": len(scored), "eval_loss_before": state["eval_before"], "eval_loss_after": eval_after,
               "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
               "first_epoch_loss": _mean(losses[:per_epoch]), "last_epoch_loss": _mean(losses[-per_epoch:]),
               "seconds": round(seconds, 2), "seconds_per_step": round(seconds / max(1, len(losses)), 3),
               "losses": [round(x, 4) for x in losses]}
    if id_losses:
        summary.update(first_epoch_id_loss=_mean(id_losses[:per_epoch]), last_epoch_id_loss=_mean(id_losses[-per_epoch:]),
                       id_losses=[round(x, 4) for x in id_losses])
    return trained.cpu().eval().requires_grad_(False), summary


def _mean(values: list[float]):
    return sum(values) / len(values) if values else None
