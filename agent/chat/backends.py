"""The LM backends chat sessions decode with, chosen by name from `lm.backend`.

`load_backend(cfg, lm, ...)` hands the Agent a backend: its `tokenizer` (chat template included),
`context_length`, `stop_token_ids`, and `new_decoder(soft)`, which gives each session a decoder with the
`CachedDecoder` interface (prefill, step, ids, reset, snapshot, adopt). Evaluation wraps its transformers LM
in a `TransformersBackend` to run chats as the product does; training and tuning use transformers directly.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..config import LM_BACKENDS, ConfigError, LMConfig
from ..models.lm import LoadedLM
from ..models.packages import MissingWeights, is_package_ref, resolve_package_ref
from .decoding import CachedDecoder
from .template import stop_token_ids

KV_CONTEXTS = 2  # llama.cpp KV cells = this many full chat contexts: a session plus shared prefixes, or a few sessions


class TransformersBackend:
    """The LM's own transformers model and a DynamicCache per session (GPUs, and CPUs without llama.cpp)."""
    name = "transformers"

    def __init__(self, lm: LoadedLM):
        self.lm = lm
        self.tokenizer = lm.tokenizer
        self.context_length = lm.context_length
        self.stop_token_ids = stop_token_ids(lm.tokenizer, lm.model.generation_config)

    def new_decoder(self, soft=None, *, reuse_cache: bool = True) -> CachedDecoder:
        return CachedDecoder(self.lm.model, soft=soft, reuse_cache=reuse_cache)


class LlamaCppBackend:
    """The same GGUF in llama.cpp: one context, a KV-cache sequence per session and per shared persona prefix."""
    name = "llamacpp"

    def __init__(self, model, lm: LoadedLM):
        self.model = model  # LlamaCppModel
        self.tokenizer = lm.tokenizer
        self.context_length = lm.context_length
        self.stop_token_ids = stop_token_ids(lm.tokenizer, lm.model.generation_config)

    def new_decoder(self, soft=None, *, reuse_cache: bool = True):
        from .llamacpp_decoding import LlamaCppDecoder

        return LlamaCppDecoder(self.model, soft=soft, reuse_cache=reuse_cache)


def gguf_source(source: str) -> Optional[Path]:
    """The .gguf file an LM source names (a path or pkg: reference), or None when it is something else."""
    if source.startswith("random:"):
        return None
    try:
        path = resolve_package_ref(source) if is_package_ref(source) else Path(source).expanduser()
    except MissingWeights:
        return None
    return path if path.is_file() and path.suffix == ".gguf" else None


def backend_name(cfg: LMConfig, lm: LoadedLM) -> str:
    """`lm.backend` made concrete. auto: llamacpp when llama-cpp-python imports, the LM runs on the CPU and
    came from a .gguf file; transformers otherwise. An explicit llamacpp that can't run raises."""
    if cfg.backend == "transformers":
        return "transformers"
    from ..models.llamacpp import import_llama_cpp, llama_cpp_available

    on_cpu = lm.device.type == "cpu"
    gguf = gguf_source(lm.source)
    if cfg.backend == "auto":
        return "llamacpp" if on_cpu and gguf is not None and llama_cpp_available() else "transformers"
    import_llama_cpp()  # MissingBackend (exit code 3) with the install command
    if gguf is None:
        raise ConfigError(f"lm.backend=llamacpp needs lm.name_or_path to be a .gguf file (or pkg: reference to one), "
                          f"got {lm.source!r}; use lm.backend=transformers for other models")
    if not on_cpu:
        raise ConfigError(f"lm.backend=llamacpp runs on the CPU, but lm.device is {cfg.device!r}; "
                          f"set lm.device=cpu or lm.backend=transformers")
    return "llamacpp"


def _transformers(cfg: LMConfig, lm: LoadedLM, context_tokens: int) -> TransformersBackend:
    return TransformersBackend(lm)


def _llamacpp(cfg: LMConfig, lm: LoadedLM, context_tokens: int) -> LlamaCppBackend:
    import torch

    from ..models.llamacpp import load_llamacpp

    threads = cfg.threads if cfg.threads > 0 else torch.get_num_threads()  # the same threads as transformers
    context = min(context_tokens, lm.context_length)
    return LlamaCppBackend(load_llamacpp(gguf_source(lm.source), threads=threads, kv_tokens=KV_CONTEXTS * context), lm)


BACKENDS = {"transformers": _transformers, "llamacpp": _llamacpp}  # name -> loader(cfg, lm, context_tokens)
assert set(BACKENDS) | {"auto"} == set(LM_BACKENDS), "agent/config.py's LM_BACKENDS must list these names"


def load_backend(cfg: LMConfig, lm: LoadedLM, *, context_tokens: int):
    """The chat backend `cfg.backend` names (see `backend_name`), loaded; context_tokens: one chat's budget."""
    return BACKENDS[backend_name(cfg, lm)](cfg, lm, context_tokens)
