"""A draft leaf's grammar on the transformers backend (and for eval-side tools on a `LoadedLM`): xgrammar.

xgrammar (the structured-generation library vLLM, SGLang and TensorRT-LLM use) compiles the leaf's JSON
Schema against the tokenizer's vocabulary once; `XGrammarMask` fills its token bitmask each step and applies
it to the logits that `write_leaf` (decoding.py) samples from.
"""
from __future__ import annotations

import json
from typing import Sequence


class XGrammarCompiler:
    """The tokenizer's vocabulary as xgrammar sees it, and compiled leaf schemas (cached by schema)."""

    def __init__(self, tokenizer, *, vocab_size: int, stop_ids: Sequence[int]):
        import xgrammar

        self._xgr = xgrammar
        info = xgrammar.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size, stop_token_ids=list(stop_ids))
        self.vocab_size = vocab_size
        self._compiler = xgrammar.GrammarCompiler(info, max_threads=1)
        self._compiled: dict[str, object] = {}

    def constraint(self, schema: dict) -> "XGrammarMask":
        key = json.dumps(schema, sort_keys=True)
        if key not in self._compiled:
            self._compiled[key] = self._compiler.compile_json_schema(key, any_whitespace=False, strict_mode=True)
        return XGrammarMask(self._xgr, self._compiled[key], self.vocab_size)


class XGrammarMask:
    """One value's grammar state (an xgrammar GrammarMatcher)."""

    def __init__(self, xgr, compiled, vocab_size: int):
        self._xgr = xgr
        self._matcher = xgr.GrammarMatcher(compiled)
        self._bitmask = xgr.allocate_token_bitmask(1, vocab_size)

    def mask(self, logits, *, full: bool = True):
        """logits (vocab,) torch float -> a float32 copy with every token the grammar forbids at -inf."""
        self._matcher.fill_next_token_bitmask(self._bitmask)
        out = logits.detach().float().cpu().clone()[None]  # (1, vocab)
        self._xgr.apply_token_bitmask_inplace(out, self._bitmask)
        return out[0]

    def accept(self, token: int) -> None:
        if not self._matcher.accept_token(int(token)):
            raise ValueError(f"xgrammar rejected token {token} that its own mask allowed")
