"""Tiny randomly initialised causal LMs and their tokenizer, built from configs in code.

`random:llama` / `random:qwen` in `lm.name_or_path` load these, so tests and `configs/tiny.yaml`
run the real chat path in seconds on a CPU with no weights at all. Their replies are gibberish.
"""
from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# A small fixed corpus so the byte-level BPE learns a few real merges; the vocabulary is deterministic.
_CORPUS = [
    "The captain looked out over the sea and said: aye, the wind is with us today.",
    "Hello! How are you? I am fine, thank you. What is your name, traveller?",
    "User: tell me a story. Assistant: Once upon a time there was a small robot.",
    "system user assistant You are a character in a story. Stay in character.",
    "0123456789 .,;:!?'\"()[]{}<>*-_/\\ @#$%^&+=~` The quick brown fox jumps over the lazy dog.",
]


def tiny_tokenizer(vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with ChatML special tokens and chat template; any text round-trips."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_CORPUS, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
        unk_token="<|endoftext|>", pad_token="<|im_end|>")
    fast.chat_template = CHATML_TEMPLATE
    return fast


def tiny_lm(family: str = "llama", *, seed: int = 0, vocab_size: int | None = None):
    """A 2-layer, 64-wide causal LM of `family` ('llama' | 'qwen') with random weights, in eval mode.

    Returns (model, tokenizer).
    """
    tokenizer = tiny_tokenizer()
    vocab = vocab_size or len(tokenizer)
    common = dict(
        vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    builders = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen": (Qwen2Config, Qwen2ForCausalLM)}
    if family not in builders:
        raise ValueError(f"unknown tiny LM family {family!r}; choose one of: {', '.join(builders)}")
    config_cls, model_cls = builders[family]
    torch.manual_seed(seed)
    model = model_cls(config_cls(**common))
    # Random init gives near-uniform logits; a larger output scale makes greedy decoding decisive,
    # so cache-equality tests compare real choices rather than near-ties.
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(50.0)
    return model.eval().requires_grad_(False), tokenizer
