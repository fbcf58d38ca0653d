"""Options of `personae eval`: which data, adapters and conditioning modes, and how much of each metric to run.

A frozen dataclass with a comment per field; `load_eval_config` maps a YAML file (and KEY=VALUE
overrides) onto it one to one, as agent/config.py does. Hands `EvalConfig` to `run.evaluate`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..conditioning import MODES

MODE_NAMES = tuple(MODES)  # the registry in agent/conditioning.py
DEFAULT_MODES = ("card", "summary", "soft", "soft+card", "weighted", "none", "name")  # name: what the name alone is worth


@dataclass(frozen=True)
class EvalConfig:
    data_dir: str = "data"  # eval data in the data/README.md layout; relative to the repo root unless it exists as given
    adapter: str = "adapters/default.safetensors"  # attention adapter for soft, soft+card (where `personae train` writes it); "" takes embedding.adapter; a missing file skips those modes with a note
    weighted_adapter: str = "adapters/weighted.safetensors"  # weighted-fusion baseline for the weighted modes; "" or a missing file skips them with a note
    modes: tuple[str, ...] = DEFAULT_MODES  # conditioning modes to evaluate (agent/conditioning.py MODES); card is always the fidelity teacher
    personas: int = 0  # held-out personas used (a seeded sample, kept in splits order); 0 = all of them
    reference_lines: int = 0  # reference lines per persona for identification (the first N); 0 = all
    n_turns: int = 3  # held-out user turns per persona for fidelity (seeded sample per persona)
    reply_tokens: int = 48  # tokens per generated reply (fidelity teacher, drift chat, adversarial replies)
    drift_turns: int = 40  # user turns in the scripted long chat; drift is read at turn 1 and at this turn
    drift_context_tokens: int = 768  # context window of the drift chat: small, so the history presses on it
    drift_personas: int = 3  # personas that hold the long chat (the first N of those evaluated)
    break_turns: int = 4  # adversarial turns per persona for the break rate (spread over the list, seeded)
    break_similarity_floor: float = 0.0  # a reply whose MiniLM cosine to the card is below this also counts as a break; 0 = off
    ablation: bool = True  # also run soft with each modality masked out in turn (identification and fidelity)
    seed: int = 0  # fixes every sample above and the sampling of drift and adversarial replies

    def __post_init__(self):
        modes = self.modes
        if isinstance(modes, str):  # "card,none" from a command-line override
            modes = [m.strip() for m in modes.split(",") if m.strip()]
        object.__setattr__(self, "modes", tuple(modes))
        if not self.modes:
            raise ValueError("eval.modes is empty; choose from: " + ", ".join(MODE_NAMES))
        unknown = [m for m in self.modes if m not in MODE_NAMES]
        if unknown:
            raise ValueError(f"eval.modes: unknown mode {unknown[0]!r}; choose from: {', '.join(MODE_NAMES)}")
        if len(set(self.modes)) != len(self.modes):
            raise ValueError(f"eval.modes lists a mode twice: {list(self.modes)}")
        for name in ("personas", "reference_lines"):
            if getattr(self, name) < 0:
                raise ValueError(f"eval.{name} must be >= 0 (0 = all), got {getattr(self, name)}")
        for name in ("n_turns", "reply_tokens", "drift_turns", "drift_personas", "break_turns"):
            if getattr(self, name) < 1:
                raise ValueError(f"eval.{name} must be >= 1, got {getattr(self, name)}")
        if self.personas == 1:
            raise ValueError("eval.personas must be 0 (all) or >= 2: identification needs candidates to choose from")
        if self.drift_context_tokens <= self.reply_tokens:
            raise ValueError(f"eval.drift_context_tokens ({self.drift_context_tokens}) must exceed "
                             f"eval.reply_tokens ({self.reply_tokens})")
        if not 0 <= self.break_similarity_floor < 1:
            raise ValueError(f"eval.break_similarity_floor must be in [0, 1), got {self.break_similarity_floor}")


def load_eval_config(path: Optional[str | Path] = None, overrides: tuple[str, ...] | list[str] = ()) -> EvalConfig:
    """A YAML file of EvalConfig keys (or the defaults when `path` is None) with KEY=VALUE overrides applied.

    An unknown key is a ConfigError naming it and the file, as for the main config.
    """
    from ..config import from_dict, parse_override, read_yaml_mapping

    tree = read_yaml_mapping(path, "eval config") if path is not None else {}
    where = str(path) if path is not None else "eval defaults"
    for text in overrides:
        key, value = parse_override(text)
        tree[key.removeprefix("eval.")] = value
    return from_dict(EvalConfig, tree, f"{where}:")
