"""Rewrites a CTranslate2 (faster-whisper layout) Whisper model as an openai-whisper checkpoint, with numpy and torch only.

Hands `agent.models.whisper` a dict `{"dims": {...}, "model_state_dict": {...}, "alignment_heads": [[layer, head], ...]}`
that `Whisper(ModelDimensions(**dims)).load_state_dict(...)` accepts.

`model.bin` layout (binary versions 4 to 6; little-endian, no padding), as `ModelSpec._serialize` in
ctranslate2/specs/model_spec.py writes it:

    u32 binary version | str spec name | u32 spec revision | u32 number of variables
    per variable: str name | u8 rank | u32 dims[rank] | u8 dtype id | u32 byte count | raw row-major data
    u32 number of aliases | per alias: str alias name | str name of the variable it repeats

where `str` is a u16 length (counting a trailing NUL), the UTF-8 bytes and the NUL. Booleans and small integers
(`decoder/pre_norm`, `encoder/num_heads`) are rank-0 variables. Quantized weights (int8, int16) come with a
`<name>_scale` variable: float = stored / scale (per output row for int8, one scalar for int16).
"""
from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

BINARY_VERSIONS = (4, 5, 6)  # versions whose variable records carry a dtype id and a byte count
SPEC_NAME = "WhisperSpec"
# dtype id -> numpy dtype, in the order of CTranslate2's DataType enum; bfloat16 is read as raw uint16
DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: np.uint16}
BFLOAT16 = 5
GELU = 3  # CTranslate2's Activation enum: RELU, GELUTanh, SWISH, GELU, ...


class _Cursor:
    """Reads the little-endian fields of model.bin in order."""

    def __init__(self, buf: bytearray):
        self.buf, self.pos = buf, 0

    def unpack(self, fmt: str):
        values = struct.unpack_from("<" + fmt, self.buf, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return values if len(values) > 1 else values[0]

    def string(self) -> str:
        length = self.unpack("H")  # counts the trailing NUL
        text = bytes(self.buf[self.pos:self.pos + length - 1]).decode("utf-8")
        self.pos += length
        return text

    def array(self, dtype_id: int, shape: tuple[int, ...], num_bytes: int) -> torch.Tensor:
        if dtype_id not in DTYPES:
            raise ValueError(f"unknown CTranslate2 dtype id {dtype_id} at byte {self.pos}")
        dtype = np.dtype(DTYPES[dtype_id])
        if num_bytes != dtype.itemsize * int(np.prod(shape, dtype=np.int64)):
            raise ValueError(f"byte count {num_bytes} does not match shape {shape} at byte {self.pos}")
        # copy: the data starts at arbitrary (unaligned) offsets and must outlive the file buffer
        data = np.frombuffer(self.buf, dtype, count=num_bytes // dtype.itemsize, offset=self.pos).reshape(shape).copy()
        self.pos += num_bytes
        tensor = torch.from_numpy(data)
        return tensor.view(torch.bfloat16) if dtype_id == BFLOAT16 else tensor


def read_model_bytes(parts: Sequence[Path]) -> bytearray:
    """model.bin, or its pieces (model.bin.part1, model.bin.part2, ...) concatenated in the given order."""
    sizes = [Path(p).stat().st_size for p in parts]
    buf = bytearray(sum(sizes))
    view, start = memoryview(buf), 0
    for part, size in zip(parts, sizes):
        with open(part, "rb") as f:
            if f.readinto(view[start:start + size]) != size:
                raise IOError(f"{part} changed size while being read")
        start += size
    return buf


def parse_model_bin(buf: bytearray) -> tuple[str, int, dict[str, torch.Tensor], dict[str, str]]:
    """Returns (spec name, spec revision, variables by name, aliases {alias: variable name})."""
    cur = _Cursor(buf)
    version = cur.unpack("I")
    if version not in BINARY_VERSIONS:
        raise ValueError(f"CTranslate2 binary version {version} is not supported (only {BINARY_VERSIONS})")
    spec, revision, count = cur.string(), cur.unpack("I"), cur.unpack("I")
    variables = {}
    for _ in range(count):
        name = cur.string()
        rank = cur.unpack("B")
        shape = tuple(cur.unpack("I") for _ in range(rank))
        dtype_id, num_bytes = cur.unpack("B"), cur.unpack("I")
        variables[name] = cur.array(dtype_id, shape, num_bytes)
    aliases = {cur.string(): cur.string() for _ in range(cur.unpack("I"))}
    if cur.pos != len(buf):
        raise ValueError(f"{len(buf) - cur.pos} bytes left after the aliases: truncated or corrupt model.bin")
    return spec, revision, variables, aliases


def dequantize(variables: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Folds every `<name>_scale` into its int8/int16 weight; float variables pass through unchanged."""
    out = {}
    for name, value in variables.items():
        scale = variables.get(name + "_scale")
        if name.endswith("_scale") and name[:-len("_scale")] in variables:
            continue
        if scale is not None and not value.is_floating_point():
            scale = scale.float()
            value = value.float() / (scale[:, None] if scale.dim() == 1 else scale)  # int8 rows: (out,) scales
        out[name] = value
    return out


def read_ct2_whisper(parts: Sequence[Path]) -> dict[str, torch.Tensor]:
    """All weights of a CTranslate2 Whisper model.bin, dequantized, with aliases resolved to their tensors."""
    spec, revision, variables, aliases = parse_model_bin(read_model_bytes(parts))
    if spec != SPEC_NAME:
        raise ValueError(f"{parts[0]} holds a CTranslate2 {spec!r} model, not {SPEC_NAME!r}")
    variables = dequantize(variables)
    for alias, target in aliases.items():
        if target in variables:  # '<x>_scale' aliases of float weights point at nothing
            variables[alias] = variables[target]
    return variables


def _count_layers(variables: dict, prefix: str) -> int:
    pattern = re.compile(rf"^{prefix}/layer_(\d+)/")
    return 1 + max((int(m.group(1)) for m in map(pattern.match, variables) if m), default=-1)


def whisper_dims(variables: dict[str, torch.Tensor]) -> dict[str, int]:
    """openai-whisper's ModelDimensions, read off the tensor shapes and the stored head counts."""
    conv1 = variables["encoder/conv1/weight"]  # (n_audio_state, n_mels, 3)
    audio_pos = variables["encoder/position_encodings/encodings"]  # (n_audio_ctx, n_audio_state)
    tokens = variables["decoder/embeddings/weight"]  # (n_vocab, n_text_state)
    text_pos = variables["decoder/position_encodings/encodings"]  # (n_text_ctx, n_text_state)
    return dict(
        n_mels=conv1.shape[1], n_audio_ctx=audio_pos.shape[0], n_audio_state=conv1.shape[0],
        n_audio_head=int(variables["encoder/num_heads"]), n_audio_layer=_count_layers(variables, "encoder"),
        n_vocab=tokens.shape[0], n_text_ctx=text_pos.shape[0], n_text_state=tokens.shape[1],
        n_text_head=int(variables["decoder/num_heads"]), n_text_layer=_count_layers(variables, "decoder"),
    )


def _check_flags(variables: dict[str, torch.Tensor]) -> None:
    """Refuses models whose options openai-whisper's fixed architecture cannot express."""
    expected = {"decoder/activation": GELU, "decoder/pre_norm": 1, "decoder/scale_embeddings": 0, "decoder/alibi": 0}
    for name, want in expected.items():
        if name in variables and int(variables[name]) != want:
            raise ValueError(f"{name} = {int(variables[name])}, but openai-whisper needs {want}")


class _StateDictBuilder:
    """Moves CTranslate2 variables into openai-whisper state-dict entries and records which were used."""

    def __init__(self, variables: dict[str, torch.Tensor]):
        self.variables, self.used, self.state = variables, set(), {}

    def take(self, name: str) -> torch.Tensor:
        self.used.add(name)
        return self.variables[name]

    def copy(self, dst: str, src: str) -> None:
        self.state[dst] = self.take(src)

    def norm(self, dst: str, src: str) -> None:
        self.copy(f"{dst}.weight", f"{src}/gamma")
        self.copy(f"{dst}.bias", f"{src}/beta")

    def linear(self, dst: str, src: str) -> None:
        self.copy(f"{dst}.weight", f"{src}/weight")
        self.copy(f"{dst}.bias", f"{src}/bias")

    def fused(self, dsts: Sequence[str], src: str) -> None:
        """Splits a fused projection (rows [q; k; v] or [k; v]) into openai-whisper's separate Linears.

        openai-whisper's key projection has no bias; CTranslate2 stores zeros there. Any key bias would add
        q.b_k to every score of a query alike, which softmax ignores, so dropping it never changes the output.
        """
        weights = self.take(f"{src}/weight").chunk(len(dsts), dim=0)  # each (n_state, n_state)
        biases = self.take(f"{src}/bias").chunk(len(dsts), dim=0)  # each (n_state,)
        for dst, weight, bias in zip(dsts, weights, biases):
            self.state[f"{dst}.weight"] = weight.contiguous()
            if not dst.endswith(".key"):
                self.state[f"{dst}.bias"] = bias.contiguous()

    def block(self, dst: str, src: str, *, cross: bool) -> None:
        """One residual block: self-attention, (cross-attention,) MLP, each with its pre-norm."""
        self.norm(f"{dst}.attn_ln", f"{src}/self_attention/layer_norm")
        self.fused([f"{dst}.attn.query", f"{dst}.attn.key", f"{dst}.attn.value"], f"{src}/self_attention/linear_0")
        self.linear(f"{dst}.attn.out", f"{src}/self_attention/linear_1")
        if cross:
            self.norm(f"{dst}.cross_attn_ln", f"{src}/attention/layer_norm")
            self.linear(f"{dst}.cross_attn.query", f"{src}/attention/linear_0")
            self.fused([f"{dst}.cross_attn.key", f"{dst}.cross_attn.value"], f"{src}/attention/linear_1")
            self.linear(f"{dst}.cross_attn.out", f"{src}/attention/linear_2")
        self.norm(f"{dst}.mlp_ln", f"{src}/ffn/layer_norm")
        self.linear(f"{dst}.mlp.0", f"{src}/ffn/linear_0")
        self.linear(f"{dst}.mlp.2", f"{src}/ffn/linear_1")


def _single_float_dtype(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """float16 when every tensor was stored as float16 (as faster-whisper ships them), float32 otherwise."""
    all_half = all(t.dtype == torch.float16 for t in state.values())
    dtype = torch.float16 if all_half else torch.float32
    return {name: t.to(dtype) for name, t in state.items()}


def ct2_to_whisper_checkpoint(
    variables: dict[str, torch.Tensor], alignment_heads: Optional[list] = None
) -> dict:
    """Maps CTranslate2 WhisperSpec variables onto openai-whisper names; returns {"dims", "model_state_dict", ...}."""
    _check_flags(variables)
    dims = whisper_dims(variables)
    b = _StateDictBuilder(variables)
    b.copy("encoder.conv1.weight", "encoder/conv1/weight")  # (n_audio_state, n_mels, 3)
    b.copy("encoder.conv1.bias", "encoder/conv1/bias")
    b.copy("encoder.conv2.weight", "encoder/conv2/weight")  # (n_audio_state, n_audio_state, 3)
    b.copy("encoder.conv2.bias", "encoder/conv2/bias")
    b.copy("encoder.positional_embedding", "encoder/position_encodings/encodings")  # sinusoids (n_audio_ctx, d)
    for i in range(dims["n_audio_layer"]):
        b.block(f"encoder.blocks.{i}", f"encoder/layer_{i}", cross=False)
    b.norm("encoder.ln_post", "encoder/layer_norm")
    b.copy("decoder.token_embedding.weight", "decoder/embeddings/weight")  # (n_vocab, n_text_state)
    b.copy("decoder.positional_embedding", "decoder/position_encodings/encodings")  # learned (n_text_ctx, d)
    for i in range(dims["n_text_layer"]):
        b.block(f"decoder.blocks.{i}", f"decoder/layer_{i}", cross=True)
    b.norm("decoder.ln", "decoder/layer_norm")
    b.used.add("decoder/projection/weight")  # tied to the token embedding in openai-whisper
    left = [n for n, t in variables.items() if n not in b.used and t.dim() > 0]
    if left:
        raise ValueError(f"CTranslate2 variables with no openai-whisper counterpart: {left[:5]}")
    checkpoint = {"dims": dims, "model_state_dict": _single_float_dtype(b.state)}
    if alignment_heads:
        checkpoint["alignment_heads"] = [[int(layer), int(head)] for layer, head in alignment_heads]
    return checkpoint


def convert_ct2_whisper(parts: Sequence[Path], config_path: Optional[Path] = None) -> dict:
    """CTranslate2 model.bin (or its parts, in order) + optional config.json -> openai-whisper checkpoint dict."""
    variables = read_ct2_whisper([Path(p) for p in parts])
    config = json.loads(Path(config_path).read_text()) if config_path and Path(config_path).is_file() else {}
    return ct2_to_whisper_checkpoint(variables, config.get("alignment_heads"))
