"""Training checkpoints: the adapter (safetensors with its own config) and the optimiser and step state.

`<folder>/step-000050/{adapter.safetensors, state.pt}`; `latest.json` names the newest complete one and
is replaced last, so a run killed while saving resumes from the checkpoint before.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Optional

import torch

from ..atomic import staging_folder, write_text_atomically
from ..embedding.fusion import Fusion, load_adapter, save_adapter

LATEST = "latest.json"


def save_checkpoint(folder: Path, step: int, adapter: Fusion, state: dict) -> Path:
    """Writes step `step` (adapter weights + `state`, which holds the optimiser, RNG and run config)."""
    target = folder / f"step-{step:06d}"
    with staging_folder(target) as staging:
        save_adapter(staging / "adapter.safetensors", adapter)
        torch.save({**state, "step": step}, staging / "state.pt")
    write_text_atomically(folder / LATEST, json.dumps({"step": step, "folder": target.name}))
    for old in folder.glob("step-*"):  # only the newest is kept; each is a few MB
        if old != target:
            shutil.rmtree(old, ignore_errors=True)
    return target


def load_checkpoint(folder: Path) -> Optional[tuple[Fusion, dict]]:
    """(adapter, state) of the newest complete checkpoint in `folder`, or None when there is none."""
    try:
        latest = json.loads((folder / LATEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    where = folder / latest["folder"]
    adapter = load_adapter(where / "adapter.safetensors")
    state = torch.load(where / "state.pt", weights_only=True)
    if state.get("step") != latest["step"]:
        raise ValueError(f"{where}: state.pt is for step {state.get('step')}, latest.json says {latest['step']}")
    return adapter, state


def clear_checkpoints(folder: Path) -> None:
    """Removes a previous run's checkpoints, so a fresh run never resumes from them by mistake."""
    if folder.is_dir():
        shutil.rmtree(folder)
