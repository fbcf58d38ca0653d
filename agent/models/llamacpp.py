"""Loads a GGUF into llama.cpp (llama-cpp-python's low-level API) for fast chat on the CPU.

`load_llamacpp(path)` hands a `LlamaCppModel` to the llamacpp chat backend: one llama.cpp context whose
unified KV cache holds one sequence per session and per shared persona prefix. Sharing a prefix between
sequences copies no data (`llama_memory_seq_cp` tags the same cells with both sequences).
"""
from __future__ import annotations

import collections
import ctypes
import logging
import threading
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
MAX_SEQUENCES = 64  # sessions and shared prefixes held at once; the least recently used is evicted past this

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
        if level == 3:  # GGML_LOG_LEVEL_ERROR
            log.error("llama.cpp: %s", text.decode("utf-8", "replace").rstrip())

    _quiet_log = quiet
    llama_cpp.llama_log_set(quiet, ctypes.c_void_p(0))
    llama_cpp.llama_backend_init()
    _backend_ready = True


class KVFull(RuntimeError):
    """No room left in the KV cache, even after evicting every other sequence."""


class Lease:
    """One llama.cpp sequence id held by a decoder or a prefix snapshot. `alive` turns False when the model
    evicts it to make room; its owner must then start again from an empty cache."""
    __slots__ = ("seq", "alive", "__weakref__")

    def __init__(self, seq: int):
        self.seq = seq
        self.alive = True


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
    """A GGUF model, one context, and the sequences of its unified KV cache.

    Thread-safe: every call that touches the context holds one lock, so sessions driven from different
    threads take turns (the logits buffer is shared).
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
        params.n_batch = params.n_ubatch = BATCH
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
        self.threads = threads
        self._memory = llama_cpp.llama_get_memory(self._ctx)
        self._tokens = _views(llama_cpp.llama_batch_init(BATCH, 0, 1), 0)
        self._embeds = _views(llama_cpp.llama_batch_init(BATCH, self.n_embd, 1), self.n_embd)
        self._lock = threading.RLock()
        self._free = list(range(MAX_SEQUENCES - 1, -1, -1))  # pop() hands out 0 first
        self._held: collections.OrderedDict[int, weakref.ref] = collections.OrderedDict()  # seq -> lease, LRU first
        self._orphans: collections.deque[int] = collections.deque()  # seqs of leases collected without release()
        self._finalizer = weakref.finalize(self, _free_native, llama_cpp, self._model, self._ctx,
                                           [self._tokens.raw, self._embeds.raw])

    def close(self) -> None:
        self._finalizer()

    @property
    def vocab(self):
        """The native llama_vocab pointer, for llama.cpp samplers built on this model (grammars)."""
        return self._vocab

    # --- sequences -----------------------------------------------------------------------------
    def claim(self, keep: Optional[Lease] = None) -> Lease:
        """A fresh, empty sequence; evicts the least recently used one (never `keep`) when all are held."""
        with self._lock:
            self._collect()
            if not self._free and not self._evict(keep=keep):
                raise KVFull(f"all {MAX_SEQUENCES} llama.cpp sequences are in use")
            lease = Lease(self._free.pop())
            self._held[lease.seq] = weakref.ref(lease, lambda _, seq=lease.seq, orphans=self._orphans: orphans.append(seq))
            return lease

    def release(self, lease: Optional[Lease]) -> None:
        """Frees the sequence and its KV cells (cells shared with other sequences stay)."""
        if lease is None:
            return
        with self._lock:
            if lease.alive:
                self._drop(lease.seq)
                lease.alive = False

    def _drop(self, seq: int) -> None:
        self._c.llama_memory_seq_rm(self._memory, seq, -1, -1)
        del self._held[seq]  # its weakref goes too, so no orphan callback follows
        self._free.append(seq)

    def _collect(self) -> None:
        """Frees the sequences of leases that were garbage-collected (a dropped session or prefix)."""
        while self._orphans:
            seq = self._orphans.popleft()
            ref = self._held.get(seq)
            if ref is not None and ref() is None:
                self._drop(seq)

    def _evict(self, keep: Optional[Lease]) -> bool:
        """Drops the least recently used sequence other than `keep`; False when there is none."""
        for seq, ref in self._held.items():
            lease = ref()
            if lease is not None and lease is not keep:
                lease.alive = False
                self._drop(seq)
                return True
        return False

    def _touch(self, lease: Lease) -> None:
        if not lease.alive:
            raise ValueError("this sequence was evicted; claim a new one")
        self._held.move_to_end(lease.seq)

    def truncate(self, lease: Lease, length: int) -> int:
        """Keeps the first `length` positions of the sequence; returns how many it kept (0 if it had to clear)."""
        with self._lock:
            self._touch(lease)
            if self._c.llama_memory_seq_rm(self._memory, lease.seq, length, -1):
                return length
            self._c.llama_memory_seq_rm(self._memory, lease.seq, -1, -1)
            return 0

    def copy(self, source: Lease, target: Lease, length: int = -1) -> None:
        """Makes `target` hold the first `length` positions of `source` (all with -1), sharing their cells."""
        with self._lock:
            self._touch(source)
            self._touch(target)
            self._c.llama_memory_seq_rm(self._memory, target.seq, -1, -1)
            self._c.llama_memory_seq_cp(self._memory, source.seq, target.seq, 0, length)

    # --- decoding ------------------------------------------------------------------------------
    def decode(self, lease: Lease, start: int, pieces: Sequence[np.ndarray]) -> np.ndarray:
        """Appends `pieces` to the sequence at positions start, start+1, ...; returns the last one's logits.

        pieces: int32 token ids (n,) or float32 input embeddings (n, n_embd), decoded one after the other
        (a llama.cpp batch holds either). Returns logits (n_vocab,) float32, a copy.
        """
        end = start + sum(len(piece) for piece in pieces)
        if end > self.kv_tokens:  # would never fit: fail before evicting anyone
            raise KVFull(f"{end} tokens do not fit the llama.cpp KV cache ({self.kv_tokens} tokens)")
        with self._lock:
            self._collect()
            self._touch(lease)
            pos = start
            for p, piece in enumerate(pieces):
                for offset in range(0, len(piece), BATCH):
                    chunk = piece[offset:offset + BATCH]
                    last = p == len(pieces) - 1 and offset + BATCH >= len(piece)
                    self._decode_chunk(lease, pos, chunk, last)
                    pos += len(chunk)
            logits = self._c.llama_get_logits_ith(self._ctx, -1)
            return np.ctypeslib.as_array(logits, shape=(self.n_vocab,)).copy()

    def _decode_chunk(self, lease: Lease, pos: int, chunk: np.ndarray, want_logits: bool) -> None:
        n = len(chunk)
        batch = self._embeds if chunk.ndim == 2 else self._tokens
        if chunk.ndim == 2:
            batch.embd[:n] = chunk
        else:
            batch.token[:n] = chunk
        batch.pos[:n] = np.arange(pos, pos + n, dtype=np.int32)
        batch.n_seq_id[:n] = 1
        batch.logits[:n] = 0
        batch.logits[n - 1] = int(want_logits)
        for i in range(n):
            batch.raw.seq_id[i][0] = lease.seq
        batch.raw.n_tokens = n
        while True:
            code = self._c.llama_decode(self._ctx, batch.raw)
            if code == 0:
                return
            if code == 1 and self._evict(keep=lease):  # no free cells: make room and try again
                continue
            self._c.llama_memory_seq_rm(self._memory, lease.seq, pos, -1)  # drop what a failed call left behind
            if code == 1:
                raise KVFull(f"{pos + n} tokens do not fit the llama.cpp KV cache ({self.kv_tokens} tokens)")
            raise RuntimeError(f"llama_decode returned {code} at position {pos}")

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
    (the least recently used sequence is evicted when they run out). Fails fast when llama-cpp-python is
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
