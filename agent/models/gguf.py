"""GGUF files read without their weights: a check that names the file, the metadata chat needs, the tokenizer.

`read_gguf(path)` checks the header and reads the key/value metadata (memory-mapped: an 8B file costs no
RAM); `load_gguf_tokenizer(path, cache_dir)` builds the transformers tokenizer (chat template included) from
the file's own `tokenizer.*` fields once and caches it, so the llama.cpp backend chats with no transformers
weights at all. `token_embeddings(path)` dequantises only the `token_embd` tensor, (vocab, d) float32.
"""
from __future__ import annotations

import functools
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..atomic import staging_folder
from .packages import MissingWeights

MAGIC = b"GGUF"

log = logging.getLogger(__name__)


class GGUFError(ValueError):
    """A file that is not a GGUF model personae can read (not GGUF, truncated, damaged, no tokenizer)."""


@dataclass(frozen=True)
class GGUFInfo:
    path: Path
    architecture: str  # general.architecture: llama, qwen2, qwen3, gemma3, phi3, ...
    context_length: int  # {arch}.context_length: the context it was trained for
    embedding_length: int  # {arch}.embedding_length: d, the width soft prompts must have
    chat_template: Optional[str]  # tokenizer.chat_template, when the file has one
    name: str  # general.name, or the file's stem


# GGUF value types (gguf.GGUFValueType) -> struct format of a scalar; 8 is a string, 9 an array
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9


class _Cursor:
    """Reads little-endian GGUF fields from a memory map; IndexError/struct.error past the end."""

    def __init__(self, data, offset: int = 0):
        self.data, self.at = data, offset

    def take(self, fmt: str):
        import struct

        value = struct.unpack_from("<" + fmt, self.data, self.at)[0]
        self.at += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        n = self.take("Q")
        if self.at + n > len(self.data):
            raise IndexError("a string runs past the end of the file")
        text = bytes(self.data[self.at:self.at + n]).decode("utf-8", "replace")
        self.at += n
        return text

    def value(self, kind: int):
        import struct

        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            inner, count = self.take("I"), self.take("Q")
            if inner == _STRING:
                for _ in range(count):  # strings: walk their lengths
                    self.at += 8 + struct.unpack_from("<Q", self.data, self.at)[0]
            elif inner in _SCALARS:
                self.at += count * struct.calcsize(_SCALARS[inner])
            else:
                for _ in range(count):
                    self.value(inner)
            if self.at > len(self.data):
                raise IndexError("an array runs past the end of the file")
            return None  # not decoded
        if kind not in _SCALARS:
            raise ValueError(f"unknown GGUF value type {kind}")
        return self.take(_SCALARS[kind])


def _read_header(path: Path) -> tuple[dict, list[tuple[str, int, int, int]], int]:
    """(scalar and string metadata, [(tensor name, ggml type, element count, offset)], data start), reading the
    header only: arrays such as the token list are skipped, so an 8B file's header reads in milliseconds."""
    import mmap

    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        cur = _Cursor(data, 4)
        version = cur.take("I")
        if version not in (2, 3):
            raise ValueError(f"GGUF version {version}; this reader knows versions 2 and 3")
        n_tensors, n_kv = cur.take("Q"), cur.take("Q")
        fields = {}
        for _ in range(n_kv):
            key = cur.string()
            fields[key] = cur.value(cur.take("I"))
        tensors = []
        for _ in range(n_tensors):
            name, dims = cur.string(), cur.take("I")
            count = 1
            for _ in range(dims):
                count *= cur.take("Q")
            tensors.append((name, cur.take("I"), count, cur.take("Q")))
        align = int(fields.get("general.alignment") or 32)
        return fields, tensors, (cur.at + align - 1) // align * align


def read_gguf(path: str | Path) -> GGUFInfo:
    """The metadata of the GGUF at `path`. MissingWeights when there is no file; GGUFError naming the file
    when it is not GGUF, is truncated (its tensors reach past its end) or lacks the fields chat needs.

    Parsed once per file version (path, size, mtime): the backend, the tokenizer and llama.cpp's loader all
    ask at start-up."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingWeights(f"GGUF file {path} does not exist")
    stat = path.stat()
    return _read_gguf(path, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _read_gguf(path: Path, size: int, mtime_ns: int) -> GGUFInfo:
    with open(path, "rb") as f:
        head = f.read(4)
    if head != MAGIC:
        raise GGUFError(f"{path} is not a GGUF file (it starts with {head!r}, a GGUF file with {MAGIC!r})")
    try:
        fields, tensors, data_start = _read_header(path)
    except Exception as e:  # struct.error, IndexError, ValueError: a cut or damaged header
        raise GGUFError(f"{path} is not a readable GGUF file (truncated or damaged? "
                        f"{type(e).__name__}: {str(e)[:160]})") from None
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    for name, kind, count, offset in tensors:
        try:
            block, nbytes = GGML_QUANT_SIZES[GGMLQuantizationType(kind)]
        except (ValueError, KeyError):
            raise GGUFError(f"{path}: tensor {name} has a type ({kind}) this gguf package does not know") from None
        end = data_start + offset + count // block * nbytes
        if end > size:
            raise GGUFError(f"{path} is truncated: tensor {name} ends at byte {end}, the file has {size}")
    arch = fields.get("general.architecture")
    if not arch:
        raise GGUFError(f"{path} has no general.architecture: not a model file")
    return GGUFInfo(path=path, architecture=arch,
                    context_length=int(fields.get(f"{arch}.context_length") or 2048),
                    embedding_length=int(fields.get(f"{arch}.embedding_length") or 0),
                    chat_template=fields.get("tokenizer.chat_template"),
                    name=fields.get("general.name") or path.stem)


def gguf_key(gguf: Path) -> str:
    """A short key for cached things derived from `gguf`: its path, size and mtime, so a changed file is new."""
    stat = gguf.stat()
    return hashlib.sha256(f"{gguf.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]


def build_tokenizer_folder(path: Path, folder: Path) -> None:
    """Builds the transformers tokenizer of the GGUF at `path` from its metadata and saves it as `folder`
    (staged, then renamed). Imports transformers and torch: `load_gguf_tokenizer` runs it in a child process."""
    from transformers import AutoTokenizer

    info = read_gguf(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(info.path.parent, gguf_file=info.path.name)
    except Exception as e:
        raise GGUFError(f"{info.path}: transformers cannot build a tokenizer from its metadata "
                        f"(architecture {info.architecture}; {type(e).__name__}: {str(e)[:200]})") from None
    if info.chat_template and not tokenizer.chat_template:
        tokenizer.chat_template = info.chat_template
    if not tokenizer.chat_template:
        raise GGUFError(f"{info.path} has no tokenizer.chat_template; personae renders every prompt with the "
                        f"model's own template, so a base model without one cannot chat")
    with staging_folder(folder) as staging:
        tokenizer.save_pretrained(staging)


_BUILD = ("import sys\nfrom pathlib import Path\nfrom agent.models.gguf import GGUFError, build_tokenizer_folder\n"
          "try:\n    build_tokenizer_folder(Path(sys.argv[1]), Path(sys.argv[2]))\n"
          "except GGUFError as e:\n    print(e, file=sys.stderr)\n    sys.exit(2)\n")


def load_gguf_tokenizer(path: str | Path, cache_dir: Path):
    """The chat tokenizer (with the file's chat template) the GGUF at `path` describes: a `ChatTokenizer`
    (models/chat_tokenizer.py), so no torch is imported.

    The first time, a child process builds it with transformers from the GGUF's tokenizer fields (seconds;
    the weights are not read) and saves it in `cache_dir`, so even a first chat never holds torch; later
    loads take a fraction of a second. GGUFError naming the file when no tokenizer can be built from it.
    """
    import subprocess
    import sys

    from .chat_tokenizer import load_chat_tokenizer

    info = read_gguf(path)
    folder = Path(cache_dir) / f"{info.path.stem}-{gguf_key(info.path)}-tokenizer"
    if not (folder / "tokenizer_config.json").is_file():
        log.info("reading the tokenizer of %s (once; cached in %s)", info.path.name, folder.parent)
        done = subprocess.run([sys.executable, "-c", _BUILD, str(info.path), str(folder)], capture_output=True,
                              text=True, cwd=Path(__file__).resolve().parents[2])
        if done.returncode != 0:
            told = " ".join(done.stderr.split())  # rc 2: the GGUFError's message, which names the file
            raise GGUFError(told[-600:] if done.returncode == 2 and told else
                            f"{info.path}: building its tokenizer failed: {told[-400:]}")
    return load_chat_tokenizer(folder)


def token_embeddings(path: str | Path):
    """The GGUF's token embedding table, dequantised: (vocab, d) float32 torch tensor. Only this tensor is read."""
    import numpy as np
    import torch
    from gguf import GGUFReader
    from gguf.quants import dequantize

    info = read_gguf(path)
    reader = GGUFReader(info.path)
    for tensor in reader.tensors:
        if tensor.name == "token_embd.weight":
            rows = dequantize(tensor.data, tensor.tensor_type)  # (vocab, d)
            return torch.from_numpy(np.array(rows, dtype=np.float32))  # a copy: the file stays read-only
    raise GGUFError(f"{info.path} has no token_embd.weight tensor")
