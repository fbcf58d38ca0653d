"""Loads a GGUF into llama.cpp (llama-cpp-python's low-level API) for fast chat on the CPU.

`load_llamacpp(path)` hands a `LlamaCppModel` to the llamacpp chat backend: one llama.cpp context whose
unified KV cache holds one sequence per session and per shared persona prefix, and the native calls on it
(decode a batch, read a row's logits, remove/copy/save/restore a sequence). Which sequence holds what is
decided by agent/generation/, the only caller.
"""
from __future__ import annotations

import ctypes
import logging
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .gguf import GGUFError, read_gguf
from .packages import MissingWeights

VERSION = "0.3.36"  # the llama-cpp-python release this module is written and tested against
INSTALL = (f"scripts/install.sh in a checkout (it builds it with the right flags), or pip install llama-cpp-python=={VERSION} "
           f"(a source build: cmake and a C++ compiler, 10 to 15 minutes; on CPUs that report AMX, pass the CMAKE_ARGS "
           f"scripts/install.sh uses, or llama.cpp dies with SIGILL)")
BATCH = 512  # tokens per llama_decode call; bounds the compute buffers, like PREFILL_CHUNK for transformers
MAX_SEQUENCES = 64  # sequences resident at once (sessions, shared prefixes); agent/generation spills idle ones past this

log = logging.getLogger(__name__)
_backend_ready = False
_quiet_log = None  # the log callback must outlive every llama.cpp call, so it is kept here


class MissingBackend(MissingWeights):
    """llama-cpp-python is not installed (or its library does not load); the message says how to install it."""


def import_llama_cpp():
    """The `llama_cpp` module, or MissingBackend saying how to install it."""
    try:
        import llama_cpp
    except (ImportError, OSError, RuntimeError) as e:  # OSError/RuntimeError: the shared library failed to load
        raise MissingBackend(f"lm.backend=llamacpp needs llama-cpp-python, which does not import here "
                             f"({type(e).__name__}: {str(e)[:160]}); install it with: {INSTALL}") from None
    return llama_cpp


def llama_cpp_available() -> bool:
    try:
        import_llama_cpp()
    except MissingBackend:
        return False
    return True


def _init_backend(llama_cpp) -> None:
    """Once per process: llama.cpp's backend, and a log callback that only passes errors on (it is chatty)."""
    global _backend_ready, _quiet_log
    if _backend_ready:
        return

    @llama_cpp.llama_log_callback
    def quiet(level, text, _user_data):
        message = text.decode("utf-8", "replace").rstrip()
        if level == 3 and "failed to find a memory slot" not in message:  # GGML_LOG_LEVEL_ERROR; a full cache is
            log.error("llama.cpp: %s", message)  # not one: the scheduler spills an idle sequence and decodes again

    _quiet_log = quiet
    llama_cpp.llama_log_set(quiet, ctypes.c_void_p(0))
    llama_cpp.llama_backend_init()
    _backend_ready = True


class KVFull(RuntimeError):
    """No room left in the KV cache for a sequence, even with every idle one spilled."""


@dataclass(frozen=True)
class _Batch:
    """A llama_batch and numpy views of its arrays (token or embd, pos, n_seq_id, logits flags)."""
    raw: object
    token: Optional[np.ndarray]  # (BATCH,) int32, None for an embeddings batch
    embd: Optional[np.ndarray]  # (BATCH, n_embd) float32, None for a token batch
    pos: np.ndarray  # (BATCH,) int32
    n_seq_id: np.ndarray  # (BATCH,) int32
    logits: np.ndarray  # (BATCH,) int8: 1 where logits are wanted


def _views(raw, n_embd: int) -> _Batch:
    def view(ptr, shape):
        return np.ctypeslib.as_array(ptr, shape=shape)

    token = view(raw.token, (BATCH,)) if n_embd == 0 else None
    embd = view(raw.embd, (BATCH, n_embd)) if n_embd else None
    return _Batch(raw, token, embd, view(raw.pos, (BATCH,)), view(raw.n_seq_id, (BATCH,)), view(raw.logits, (BATCH,)))


class LlamaCppModel:
    """A GGUF model, one context with a unified KV cache of `kv_tokens` cells, and the native calls on them.

    Not thread-safe, and holds no policy: the generation scheduler (agent/generation/scheduler.py) is its only
    caller once chat starts, and decides which sequence holds which cells.
    """

    def __init__(self, path: Path, *, threads: int, kv_tokens: int, architecture: str = "?"):
        llama_cpp = import_llama_cpp()
        _init_backend(llama_cpp)
        self._c = llama_cpp
        self.path = path
        model_params = llama_cpp.llama_model_default_params()
        model_params.n_gpu_layers = 0  # the chat backend for CPUs; GPUs use transformers
        self._model = llama_cpp.llama_model_load_from_file(str(path).encode("utf-8"), model_params)
        if not self._model:
            raise GGUFError(f"llama.cpp {llama_cpp.__version__} could not load {path} (architecture "
                            f"{architecture}: one it does not run, or damaged tensors)")
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)
        self.n_embd = llama_cpp.llama_model_n_embd_inp(self._model)  # the width of input embeddings
        self.n_ctx_train = llama_cpp.llama_model_n_ctx_train(self._model)
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = kv_tokens  # cells shared by every sequence (kv_unified)
        params.n_batch = params.n_ubatch = BATCH  # one ubatch per call: a call that finds no cells changes nothing
        params.n_seq_max = MAX_SEQUENCES
        params.kv_unified = True  # one cell pool: seq_cp shares prefix cells instead of copying them
        params.n_threads = params.n_threads_batch = threads
        # llama.cpp's default (auto) turns flash attention on for the CPU, where it is the slower path: SmolLM2-135M
        # on 2 cores decoded 28.8 / 20.4 tok/s after 800 / 1600 prompt tokens with it and 61.7 / 54.1 without.
        # Without it, a sequence's logits depend a little on where its cells sit among other sequences' in the
        # shared cache (measured: KL 0.002 nats, max logit difference 0.8 of a 39-wide range, same top token).
        params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        self._ctx = llama_cpp.llama_init_from_model(self._model, params)
        if not self._ctx:
            llama_cpp.llama_model_free(self._model)
            raise RuntimeError(f"llama.cpp could not create a context of {kv_tokens} tokens for {path}")
        self.kv_tokens = llama_cpp.llama_n_ctx(self._ctx)
        self.n_seq_max = MAX_SEQUENCES
        self.threads = threads
        self._memory = llama_cpp.llama_get_memory(self._ctx)
        self._tokens = _views(llama_cpp.llama_batch_init(BATCH, 0, 1), 0)
        self._embeds = _views(llama_cpp.llama_batch_init(BATCH, self.n_embd, 1), self.n_embd)
        self._finalizer = weakref.finalize(self, _free_native, llama_cpp, self._model, self._ctx,
                                           [self._tokens.raw, self._embeds.raw])

    def close(self) -> None:
        self._finalizer()

    @property
    def vocab(self):
        """The native llama_vocab pointer, for llama.cpp samplers built on this model (grammars)."""
        return self._vocab

    # --- one batch -----------------------------------------------------------------------------
    def decode(self, rows: np.ndarray, pos: np.ndarray, seqs: np.ndarray, want: np.ndarray) -> int:
        """One llama_decode call over at most BATCH rows; returns its code (0 ok, 1 no free cells, else an error).

        rows: int32 token ids (n,) or float32 input embeddings (n, n_embd); pos, seqs: (n,) int32 position and
        sequence id of each row; want: (n,) bool, rows whose logits are kept (read them with `logits(i)`).
        A call that returns 1 leaves the cache as it was (one ubatch per call).
        """
        n = len(rows)
        if not 0 < n <= BATCH:
            raise ValueError(f"a batch holds 1 to {BATCH} rows, got {n}")
        batch = self._embeds if rows.ndim == 2 else self._tokens
        if rows.ndim == 2:
            batch.embd[:n] = rows
        else:
            batch.token[:n] = rows
        batch.pos[:n] = pos
        batch.n_seq_id[:n] = 1
        batch.logits[:n] = want
        seq_id = batch.raw.seq_id
        for i, seq in enumerate(seqs.tolist()):
            seq_id[i][0] = seq
        batch.raw.n_tokens = n
        return int(self._c.llama_decode(self._ctx, batch.raw))

    def logits(self, row: int) -> np.ndarray:
        """(n_vocab,) float32, a copy: the logits of batch row `row` of the last `decode`."""
        found = self._c.llama_get_logits_ith(self._ctx, row)
        return np.ctypeslib.as_array(found, shape=(self.n_vocab,)).copy()

    # --- sequences in the cache ----------------------------------------------------------------
    def seq_rm(self, seq: int, start: int = -1, end: int = -1) -> bool:
        """Drops positions [start, end) of `seq` (-1: open end); False when llama.cpp cannot drop part of it."""
        return bool(self._c.llama_memory_seq_rm(self._memory, seq, start, end))

    def seq_cp(self, source: int, target: int, start: int = -1, end: int = -1) -> None:
        """Tags `source`'s cells at positions [start, end) with `target` too (no data is copied)."""
        self._c.llama_memory_seq_cp(self._memory, source, target, start, end)

    def seq_add(self, seq: int, start: int, end: int, delta: int) -> None:
        """Moves `seq`'s cells at positions [start, end) by `delta` positions (their keys are re-rotated at the
        next decode: llama.cpp's K-shift)."""
        self._c.llama_memory_seq_add(self._memory, seq, start, end, delta)

    @property
    def can_shift(self) -> bool:
        """Whether this model's cache can move cells (RoPE models can; others cannot be compacted)."""
        return bool(self._c.llama_memory_can_shift(self._memory))

    def state_get(self, seq: int) -> bytes:
        """The KV state of one sequence, as llama.cpp serialises it."""
        size = self._c.llama_state_seq_get_size(self._ctx, seq)
        buffer = (ctypes.c_uint8 * size)()
        written = self._c.llama_state_seq_get_data(self._ctx, buffer, size, seq)
        return bytes(buffer)[:written]

    def state_set(self, seq: int, data: bytes) -> bool:
        """Writes a state from `state_get` into the empty sequence `seq`; False when llama.cpp refused it (no
        room, or a state of another model or layout)."""
        buffer = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
        return self._c.llama_state_seq_set_data(self._ctx, buffer, len(data), seq) > 0

    def tokenize(self, text: str, *, special: bool = True) -> list[int]:
        """llama.cpp's own tokenization of `text` (no BOS added; special tokens parsed when `special`)."""
        data = text.encode("utf-8")
        buffer = (self._c.llama_token * (len(data) + 16))()
        n = self._c.llama_tokenize(self._vocab, data, len(data), buffer, len(buffer), False, special)
        if n < 0:
            raise RuntimeError(f"llama_tokenize needs {-n} tokens")
        return list(buffer[:n])


def _free_native(llama_cpp, model, ctx, batches) -> None:
    for batch in batches:
        llama_cpp.llama_batch_free(batch)
    llama_cpp.llama_free(ctx)  # the context before its model
    llama_cpp.llama_model_free(model)


def load_llamacpp(path: str | Path, *, threads: int, kv_tokens: int) -> LlamaCppModel:
    """Loads a .gguf file into llama.cpp for chat.

    threads: CPU threads for decoding; kv_tokens: KV cache cells shared by all sessions and prefixes
    (agent/generation spills idle sequences when they run out). Fails fast when llama-cpp-python is
    not installed or the file is missing; never downloads.
    """
    import_llama_cpp()
    path = Path(path).expanduser()
    if not path.is_file() or path.suffix != ".gguf":
        raise MissingWeights(f"lm.backend=llamacpp needs a .gguf file; {path} is not one")
    if threads < 1 or kv_tokens < 1:
        raise ValueError(f"threads and kv_tokens must be >= 1, got {threads} and {kv_tokens}")
    info = read_gguf(path)  # GGUFError naming the file: not GGUF, truncated
    return LlamaCppModel(path, threads=threads, kv_tokens=kv_tokens, architecture=info.architecture)
