"""A draft leaf's grammar on the llama.cpp backend: llama.cpp's own grammar sampler over our logits.

`LlamaGrammar(model, schema)` converts the leaf's JSON Schema to GBNF with llama-cpp-python's converter (the
one its server uses for `json_schema`) and masks each step's logits with `llama_sampler_apply`; `write_leaf`
(decoding.py) samples from what is left.
"""
from __future__ import annotations

import ctypes
import functools
import json
import weakref

import numpy as np

from ..models.llamacpp import LlamaCppModel, import_llama_cpp

LIKELY = 256  # tokens checked against the grammar first; all of them only when none of these passes


@functools.lru_cache(maxsize=64)
def schema_gbnf(schema_json: str) -> str:
    """GBNF for a JSON Schema (llama-cpp-python's converter, as its server applies `json_schema`)."""
    import_llama_cpp()
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    return json_schema_to_gbnf(schema_json)


class LlamaGrammar:
    """One value's grammar state: a llama.cpp grammar sampler (freed with this object)."""

    def __init__(self, model: LlamaCppModel, schema: dict):
        self._c = import_llama_cpp()
        self.gbnf = schema_gbnf(json.dumps(schema, sort_keys=True))
        sampler = self._c.llama_sampler_init_grammar(model.vocab, self.gbnf.encode("utf-8"), b"root")
        if not sampler:
            raise ValueError(f"llama.cpp refused the grammar of {schema}:\n{self.gbnf}")
        self._sampler = sampler
        self._finalizer = weakref.finalize(self, self._c.llama_sampler_free, sampler)
        self._n_vocab = model.n_vocab
        self._size = 0
        self._data = None
        self._view = None

    def _buffer(self, n: int) -> np.ndarray:
        if self._data is None or self._size < n:
            self._data = (self._c.llama_token_data * n)()
            self._view = np.ctypeslib.as_array(self._data)  # fields id, logit, p
            self._size = n
        return self._view[:n]

    def mask(self, logits: np.ndarray, *, full: bool) -> np.ndarray:
        """logits (vocab,) float32 -> a copy with every token the grammar forbids at -inf."""
        n = len(logits)
        ids = np.arange(n, dtype=np.int32) if full or n <= LIKELY else \
            np.argpartition(logits, -LIKELY)[-LIKELY:].astype(np.int32)
        view = self._buffer(len(ids))
        view["id"], view["logit"], view["p"] = ids, logits[ids], 0.0
        candidates = self._c.llama_token_data_array(
            data=ctypes.cast(self._data, ctypes.POINTER(self._c.llama_token_data)), size=len(ids), selected=-1,
            sorted=False)
        self._c.llama_sampler_apply(self._sampler, ctypes.byref(candidates))
        out = np.full(n, -np.inf, dtype=np.float32)
        kept = view[: candidates.size]
        out[kept["id"]] = kept["logit"]
        if not full and not np.isfinite(out).any():
            return self.mask(logits, full=True)
        return out

    def accept(self, token: int) -> None:
        self._c.llama_sampler_accept(self._sampler, int(token))
