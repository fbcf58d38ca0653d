"""A chat tokenizer without torch: a saved transformers tokenizer folder read with the `tokenizers` library,
its chat template rendered by transformers' own renderer (which imports no torch).

`from transformers import AutoTokenizer` imports torch (about 500 MB of RSS with the CUDA build), which the
llama.cpp and engine backends otherwise never need; `load_chat_tokenizer(folder)` gives them the part of the
tokenizer API personae's chat uses: `tokenizer(text, add_special_tokens=False)["input_ids"]`, `decode`, `get_vocab`,
`apply_chat_template(..., tokenize=False)`, `eos_token_id`, `all_special_tokens` / `all_special_ids` and
`added_tokens_decoder`. tests/test_chat_tokenizer.py checks it against AutoTokenizer on the same folder.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

SPECIAL_KEYS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


@dataclass(frozen=True)
class AddedToken:
    content: str
    special: bool

    def __str__(self) -> str:
        return self.content


def _token_text(value) -> Optional[str]:
    if isinstance(value, dict):  # {"content": "<|im_end|>", ...} in older tokenizer_config.json files
        return value.get("content")
    return value


class ChatTokenizer:
    def __init__(self, folder: str | Path):
        from tokenizers import Tokenizer

        folder = Path(folder)
        config_path, model_path = folder / "tokenizer_config.json", folder / "tokenizer.json"
        if not model_path.is_file() or not config_path.is_file():
            raise FileNotFoundError(f"{folder} is not a saved fast tokenizer (tokenizer.json and tokenizer_config.json)")
        self.folder = folder
        self._tokenizer = Tokenizer.from_file(str(model_path))
        config = json.loads(config_path.read_text(encoding="utf-8"))
        template_file = folder / "chat_template.jinja"
        self.chat_template = template_file.read_text(encoding="utf-8") if template_file.is_file() \
            else config.get("chat_template")
        self.clean_up_tokenization_spaces = bool(config.get("clean_up_tokenization_spaces", False))
        self.special_tokens_map = {k: _token_text(config[k]) for k in SPECIAL_KEYS if _token_text(config.get(k))}
        extra = [_token_text(t) for t in config.get("additional_special_tokens") or config.get("extra_special_tokens") or []]
        self.added_tokens_decoder = {tid: AddedToken(t.content, t.special)
                                     for tid, t in self._tokenizer.get_added_tokens_decoder().items()}
        names = list(dict.fromkeys([*self.special_tokens_map.values(), *(t for t in extra if t)]))
        self.all_special_tokens = names
        self.all_special_ids = [self._tokenizer.token_to_id(t) for t in names]
        for key, text in self.special_tokens_map.items():
            setattr(self, key, text)
            setattr(self, f"{key}_id", self._tokenizer.token_to_id(text))

    def __len__(self) -> int:
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict:
        return {"input_ids": self._tokenizer.encode(text, add_special_tokens=add_special_tokens).ids}

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self._tokenizer.encode(text, add_special_tokens=add_special_tokens).ids

    def get_vocab(self) -> dict[str, int]:
        """Token -> id, added tokens included (prompt fitting bounds a text's tokens by its longest entry)."""
        return self._tokenizer.get_vocab(with_added_tokens=True)

    def convert_tokens_to_ids(self, token: str) -> Optional[int]:
        return self._tokenizer.token_to_id(token)

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        text = self._tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)
        if self.clean_up_tokenization_spaces:  # as transformers' clean_up_tokenization
            for before, after in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                                  (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
                text = text.replace(before, after)
        return text

    def apply_chat_template(self, conversation: list[dict], tokenize: bool = True, add_generation_prompt: bool = False,
                            continue_final_message: bool = False, chat_template: Optional[str] = None, **kwargs):
        """As transformers renders it (its own renderer, its normalisation of messages, special tokens as variables)."""
        from transformers.tokenization_utils_base import _normalize_chat_messages
        from transformers.utils.chat_template_utils import render_jinja_template

        template = chat_template or self.chat_template
        if not template:
            raise ValueError(f"the tokenizer in {self.folder} has no chat template")
        if not conversation:
            raise ValueError("Cannot apply chat template to an empty conversation. Provide at least one message.")
        rendered, _ = render_jinja_template(conversations=[_normalize_chat_messages(conversation)],
                                            chat_template=template, add_generation_prompt=add_generation_prompt,
                                            continue_final_message=continue_final_message,
                                            **{**self.special_tokens_map, **kwargs})
        text = rendered[0]
        return self.encode(text, add_special_tokens=False) if tokenize else text


def load_chat_tokenizer(folder: str | Path) -> ChatTokenizer:
    """The tokenizer saved in `folder` (by transformers' save_pretrained), without importing torch."""
    return ChatTokenizer(folder)
