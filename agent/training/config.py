"""Options of `personae train` and `personae tune`: one frozen dataclass, a comment per field.

No torch here, so the CLI can read and validate a training config before loading any model.
`load_train_config(path, overrides)` maps a YAML file onto `TrainConfig` the way agent/config.py does.

The defaults fit a full run of the embedded default into about an hour on a shared 2-core CPU
(SmolLM2-135M, one torch thread): teacher ~1.2 s per reply (510 replies, ~10 min), persona encodings
~3 s each (~5 min), student ~1 s per example per epoch (4 epochs of 510, ~35 min).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional


STUDENT_MODES = ("soft", "soft+card", "both")  # what the student sees besides the soft prompt: nothing | the card text | each example once without, once with
PRECISIONS = ("no", "bf16", "fp16")  # accelerate's mixed_precision names


@dataclass(frozen=True)
class TrainConfig:
    data_dir: str = "data"  # the training data set (personas/, user_turns.yaml, splits.yaml; see data/README.md)
    personas: int = 0  # use only the first N train personas (0 = all 102); for quick runs
    val_personas: int = 0  # the last N of those train personas are left out of the adapter's training (their teacher replies are still computed, so the cache is shared), to validate on
    examples_per_persona: int = 5  # train user turns drawn (seeded) for each train persona: 510 examples in all
    greeting: bool = False  # greeting before the user turn; off: ~60 fewer tokens, the soft prompt alone carries the voice
    reply_tokens: int = 32  # the longest teacher reply, in tokens; replies also end at end-of-turn
    top_k: int = 32  # teacher log-probs kept per reply position (the KL runs over these)
    teacher_batch: int = 8  # teacher replies decoded together (one CPU decode step for 8 costs about 2 for 1)
    student_mode: str = "soft"  # soft: soft prompt instead of the card (as conditioning=soft chats) | soft+card: soft prompt and card | both: every example in each of those two ways, so one adapter serves both conditionings
    epochs: int = 4  # passes over the teacher examples
    batch_size: int = 4  # examples per optimiser step
    lr: float = 3e-3  # AdamW peak learning rate (after warm-up, then cosine decay to 10%)
    warmup_steps: int = 20  # linear warm-up from 0 to lr over these steps
    weight_decay: float = 0.01  # AdamW weight decay
    gate_lr_mult: float = 30.0  # the attention adapter's tanh gates learn this much faster, without decay: at 1x they stay near 0 and the adapter stays media-blind
    max_grad_norm: float = 1.0  # gradients are clipped to this norm; 0 turns clipping off
    kl_weight: float = 1.0  # weight of KL(teacher top-k || student) per reply position
    lm_weight: float = 0.5  # weight of the cross-entropy on the teacher's reply tokens
    contrast_weight: float = 0.0  # weight of the identification term (agent/training/contrast.py): own card lines likelier under own soft prompt than others'; 0 = off
    contrast_lines: int = 4  # card lines (greeting, example-dialogue replies) scored per step by that term
    contrast_negatives: int = 3  # other train personas each line is also scored under
    contrast_tokens: int = 32  # card lines are cut to this many tokens
    temperature: float = 1.0  # softens teacher and student distributions in the KL (scaled back by T^2)
    eval_examples: int = 32  # a fixed, seeded subset of the training examples scored before and after (0 = skip)
    seed: int = 0  # fixes the drawn turns, the adapter's initialisation and the batch order
    checkpoint_every: int = 25  # optimiser steps between checkpoints (one is always written at the end)
    mixed_precision: str = "no"  # accelerate mixed precision: no | bf16 | fp16 (fp16 needs a GPU)
    out: str = "adapters/default.safetensors"  # the trained adapter (relative to the working dir); a .json beside it tells the run
    work_dir: str = ""  # teacher outputs and checkpoints; "" = the personae home's cache/training

    def __post_init__(self):
        positive = ("examples_per_persona", "reply_tokens", "top_k", "teacher_batch", "epochs", "batch_size",
                    "checkpoint_every", "contrast_lines", "contrast_negatives", "contrast_tokens")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("personas", "val_personas", "warmup_steps", "eval_examples"):
            if getattr(self, name) < 0:
                raise ValueError(f"train.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("lr", "temperature"):
            if not getattr(self, name) > 0:
                raise ValueError(f"train.{name} must be > 0, got {getattr(self, name)}")
        for name in ("weight_decay", "max_grad_norm", "kl_weight", "lm_weight", "gate_lr_mult", "contrast_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"train.{name} must be >= 0, got {getattr(self, name)}")
        if self.kl_weight == 0 and self.lm_weight == 0:
            raise ValueError("train.kl_weight and train.lm_weight are both 0: nothing to train on")
        if self.student_mode not in STUDENT_MODES:
            raise ValueError(f"train.student_mode must be one of {', '.join(STUDENT_MODES)}, got {self.student_mode!r}")
        if self.mixed_precision not in PRECISIONS:
            raise ValueError(f"train.mixed_precision must be one of {', '.join(PRECISIONS)}, "
                             f"got {self.mixed_precision!r}")
        if not self.out.endswith(".safetensors"):
            raise ValueError(f"train.out must name a .safetensors file, got {self.out!r}")


def load_train_config(path: Optional[str | Path] = None, overrides: tuple[str, ...] | list[str] = ()) -> TrainConfig:
    """A YAML file of TrainConfig keys (or the defaults when `path` is None) with KEY=VALUE overrides applied.

    Overrides may name a key alone (`epochs=1`) or with the section (`train.epochs=1`).
    """
    from ..config import from_dict, parse_override, read_yaml_mapping

    tree = read_yaml_mapping(path, "training config") if path is not None else {}
    where = str(path) if path is not None else "train defaults"
    for text in overrides:
        key, value = parse_override(text)
        tree[key.removeprefix("train.")] = value
    return from_dict(TrainConfig, tree, f"{where}:")
