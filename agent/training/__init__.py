"""Training the persona embedding by context distillation: `personae train` and `personae tune`.

The teacher is the chat LM with the full card in its context (`teacher`, run once and cached); the student
is the same frozen LM reading the adapter's soft prompts (`distill`); `tune` refines one persona's vectors.
`train` hands a fusion adapter file to `embedding.adapter`; `tune` a soft prompt to the persona's folder.
"""
from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Optional

from ..config import Config
from .config import TrainConfig, load_train_config

__all__ = ["TrainConfig", "load_train_config", "train", "tune"]


def train(config: Config, train_cfg: TrainConfig, *, lm, home=None, encoder=None, resume: bool = False) -> dict:
    """Trains a fusion adapter for `config`'s encoders reading into `lm`; writes train_cfg.out and a .json beside it.

    lm: the loaded chat LM (`LoadedLM`); home: the personae home or its folder (caches; train_cfg.work_dir defaults
    to its cache/training); encoder: a `PersonaEncoder` (default: the one config names, around lm). resume:
    continue from the last checkpoint of the same run. Returns the summary.
    """
    import torch

    from ..embedding.fusion import save_adapter
    from ..embedding.load import load_persona_encoder
    from ..paths import resolve_home
    from .data import draw_examples, load_training_data
    from .contrast import Contrast, contrast_lines
    from .batching import pad_id
    from .distill import fit_adapter, run_identity, student_examples
    from .teacher import encode_personas, precompute_teacher

    started = time.perf_counter()
    home = resolve_home(home)
    work = Path(train_cfg.work_dir).expanduser() if train_cfg.work_dir else home.cache_dir("training")
    data = load_training_data(train_cfg.data_dir, max_personas=train_cfg.personas)
    examples = draw_examples(data, train_cfg.examples_per_persona, train_cfg.seed)
    teacher = precompute_teacher(lm, data.personas, examples, data.files, train_cfg, config.chat, work)
    encoder = encoder or load_persona_encoder(config, lm, home=home)
    modalities = encode_personas(data.personas, encoder, home.cache_dir("embeddings"))
    students = student_examples(lm, data.personas, teacher, train_cfg, config.chat, config.fusion.k)
    fitted = training_personas(data.personas, train_cfg.val_personas)
    students = [s for s in students if s.persona in fitted]
    contrast = None
    if train_cfg.contrast_weight > 0:
        lines = contrast_lines(lm.tokenizer, fitted, config.chat.user_name, train_cfg.contrast_tokens)
        contrast = Contrast(lm.tokenizer, fitted, lines, user=config.chat.user_name, k=config.fusion.k,
                            budget=min(config.chat.context_tokens, lm.context_length) - train_cfg.contrast_tokens,
                            negatives=train_cfg.contrast_negatives, pad=pad_id(lm.tokenizer))
    out = Path(train_cfg.out).expanduser()
    identity = run_identity(train_cfg, config.fusion, teacher.key, lm.source)
    adapter, summary = fit_adapter(lm, modalities, students, train_cfg, config.fusion, encoder.dims,
                                   checkpoints=work / "checkpoints" / out.stem, identity=identity, resume=resume,
                                   contrast=contrast)
    reader = None
    if config.fusion.reader != "none":
        from ..embedding.reader import reader_weights
        from .distill import reader_config

        reader = reader_weights(lm.model, reader_config(config.fusion))
    save_adapter(out, adapter, reader)
    summary = {"out": str(out), "teacher_examples": len(examples), "teacher_seconds": round(teacher.seconds, 2),
               "teacher_reply_tokens": sum(len(r.ids) for r in teacher.replies), **summary,
               "total_seconds": round(time.perf_counter() - started, 2)}
    record = {"command": " ".join(sys.argv), "lm": lm.source, "whisper": config.whisper.name_or_path,
              "encoder": dataclasses.asdict(config.encoder), "fusion": dataclasses.asdict(config.fusion),
              "train": dataclasses.asdict(train_cfg), "teacher_key": teacher.key, "torch": torch.__version__,
              "summary": summary}
    out.with_suffix(".json").write_text(json.dumps(record, indent=1), encoding="utf-8")
    return summary


def training_personas(personas: dict, val_personas: int) -> dict:
    """The personas the adapter is fitted to: all but the last `val_personas` (kept for validation)."""
    if val_personas >= len(personas):
        raise ValueError(f"train.val_personas={val_personas} leaves none of the {len(personas)} train personas "
                         f"to train on")
    slugs = list(personas)[:len(personas) - val_personas]
    return {slug: personas[slug] for slug in slugs}


def tune(config: Config, persona: str, *, lm, home=None, encoder=None, steps: int = 30, lr: float = 3e-3,
         examples: int = 8, out: Optional[str | Path] = None, train_cfg: Optional[TrainConfig] = None) -> dict:
    """Tunes `persona`'s soft prompt (a name, slug or folder), starting from config's adapter, and saves it.

    lm: the loaded chat LM; encoder: a `PersonaEncoder` (default: the one config names). See `tune.tune_persona`.
    """
    from ..embedding.load import load_checked_adapter, load_persona_encoder
    from ..paths import resolve_home
    from ..persona.store import PersonaStore
    from .tune import tune_persona

    if not config.embedding.adapter:
        raise ValueError("tuning starts from a trained adapter: set embedding.adapter "
                         "(train one with `personae train`)")
    home = resolve_home(home)
    chosen = PersonaStore(home, config.cards).get(persona)
    encoder = encoder or load_persona_encoder(config, lm, home=home)
    adapter = load_checked_adapter(config, lm, encoder)
    return tune_persona(lm, chosen, adapter, encoder, config, home=home, steps=steps, lr=lr, examples=examples,
                        out=Path(out).expanduser() if out else None, train_cfg=train_cfg or TrainConfig())
