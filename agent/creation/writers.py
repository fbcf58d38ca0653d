"""Who writes a draft leaf under its grammar, chosen by the chat backend's name.

`load_writer(backend)` hands `draft.write_draft` a writer with `write(prompt_text, schema, budget, options,
deadline) -> (JSON text, whether the budget ended it)`: llama.cpp's grammar sampler on the llamacpp backend, xgrammar on transformers, and on
an engine the grammar sent with the request (`grammar`, GBNF, which llama.cpp's server and llama-cpp-python's
take; `json_schema` when llama-cpp-python is not here to convert it, which llama.cpp's server takes).
"""
from __future__ import annotations

import json
from typing import Optional

from ..chat.sampling import SamplingOptions
from .decoding import closing_ids, write_leaf


class LocalWriter:
    """A decoder of the local backend (llama.cpp or transformers) and the grammar constraint it writes under."""

    def __init__(self, backend, constraint_for):
        self.tokenizer = backend.tokenizer
        self.stop_ids = tuple(backend.stop_token_ids)
        self.decoder = backend.new_decoder()
        self.closers = closing_ids(self.tokenizer)
        self._constraint_for = constraint_for  # leaf schema -> a fresh Constraint

    def write(self, prompt_text: str, schema: dict, budget: int, options: SamplingOptions,
              deadline: Optional[float] = None) -> tuple[str, bool]:
        ids = self.tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
        return write_leaf(self.decoder, self.tokenizer, ids, self._constraint_for(schema), budget=budget,
                          options=options, stop_ids=self.stop_ids, closers=self.closers, deadline=deadline)

    def close(self) -> None:
        self.decoder.reset()


class EngineWriter:
    """The LM behind an OpenAI-compatible engine; each leaf is one /v1/completions request with its grammar."""

    def __init__(self, backend):
        self.client = backend.client

    @staticmethod
    def grammar_fields(schema: dict) -> dict:
        from ..models.llamacpp import llama_cpp_available

        if llama_cpp_available():
            from .llamacpp_grammar import schema_gbnf

            return {"grammar": schema_gbnf(json.dumps(schema, sort_keys=True))}
        return {"json_schema": schema}

    def write(self, prompt_text: str, schema: dict, budget: int, options: SamplingOptions,
              deadline: Optional[float] = None) -> tuple[str, bool]:
        import dataclasses
        import time

        from ..chat.engine_decoding import completion_body

        if deadline is not None and time.monotonic() > deadline:
            budget = min(budget, 4)
        body = completion_body(prompt_text, dataclasses.replace(options, max_new_tokens=max(budget, 1)), ())
        body.update(self.grammar_fields(schema))
        chunks = self.client.stream_completion(body)
        text, reason = "", ""
        try:
            for chunk in chunks:
                choice = (chunk.get("choices") or [{}])[0]
                text += choice.get("text") or ""
                reason = choice.get("finish_reason") or reason
        finally:
            chunks.close()
        return text, reason == "length"

    def close(self) -> None:
        pass


def _llamacpp(backend):
    from .llamacpp_grammar import LlamaGrammar

    return LocalWriter(backend, lambda schema: LlamaGrammar(backend.model, schema))


def _transformers(backend):
    from .xgrammar_mask import XGrammarCompiler

    vocab = int(backend.lm.model.get_output_embeddings().weight.shape[0])
    compiler = XGrammarCompiler(backend.tokenizer, vocab_size=vocab, stop_ids=backend.stop_token_ids)
    return LocalWriter(backend, compiler.constraint)


WRITERS = {"llamacpp": _llamacpp, "transformers": _transformers, "engine": EngineWriter}  # backend name -> writer


def load_writer(backend):
    """The constrained writer for a chat backend (agent/chat/backends.py); ValueError naming the valid ones."""
    if backend.name not in WRITERS:
        raise ValueError(f"persona creation has no constrained writer for backend {backend.name!r}; "
                         f"it has: {', '.join(WRITERS)}")
    return WRITERS[backend.name](backend)
