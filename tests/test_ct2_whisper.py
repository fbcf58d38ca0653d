"""CTranslate2 model.bin -> openai-whisper checkpoint: a tiny random Whisper written out in CT2 layout comes back exactly.

`write_ct2_folder` (the inverse mapping plus a model.bin writer) is shared with test_whisper_loader.py.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from whisper.model import ModelDimensions, Whisper

from agent.models.ct2_whisper import convert_ct2_whisper, parse_model_bin, read_model_bytes

TINY = ModelDimensions(n_mels=80, n_audio_ctx=1500, n_audio_state=64, n_audio_head=2, n_audio_layer=2,
                       n_vocab=51865, n_text_ctx=448, n_text_state=64, n_text_head=2, n_text_layer=2)
DTYPE_IDS = {np.float32: 0, np.int8: 1, np.int16: 2, np.int32: 3, np.float16: 4}
ALIGNMENT_HEADS = [[1, 0], [1, 1]]


def tiny_whisper(seed: int = 0) -> Whisper:
    torch.manual_seed(seed)
    model = Whisper(TINY).eval()
    with torch.no_grad():  # random biases and norms, so a swapped or dropped tensor cannot hide behind zeros/ones
        for name, p in model.named_parameters():
            if name.endswith("bias") or "ln" in name.split(".")[-2]:  # biases, attn_ln, mlp_ln, ln_post, ln
                p.normal_()
        model.decoder.positional_embedding.normal_()  # Whisper leaves it as torch.empty
    return model


def _linear(out: dict, src: str, state: dict, dst: str) -> None:
    out[f"{dst}/weight"], out[f"{dst}/bias"] = state[f"{src}.weight"], state[f"{src}.bias"]


def _norm(out: dict, src: str, state: dict, dst: str) -> None:
    out[f"{dst}/gamma"], out[f"{dst}/beta"] = state[f"{src}.weight"], state[f"{src}.bias"]


def _block(out: dict, state: dict, src: str, dst: str, cross: bool) -> None:
    """The inverse of ct2_whisper's block mapping: fuse q,k,v (zero key bias) and k,v as CTranslate2 does."""
    zeros = np.zeros_like(state[f"{src}.attn.query.bias"])
    _norm(out, f"{src}.attn_ln", state, f"{dst}/self_attention/layer_norm")
    out[f"{dst}/self_attention/linear_0/weight"] = np.concatenate(
        [state[f"{src}.attn.{p}.weight"] for p in ("query", "key", "value")])
    out[f"{dst}/self_attention/linear_0/bias"] = np.concatenate(
        [state[f"{src}.attn.query.bias"], zeros, state[f"{src}.attn.value.bias"]])
    _linear(out, f"{src}.attn.out", state, f"{dst}/self_attention/linear_1")
    if cross:
        _norm(out, f"{src}.cross_attn_ln", state, f"{dst}/attention/layer_norm")
        _linear(out, f"{src}.cross_attn.query", state, f"{dst}/attention/linear_0")
        out[f"{dst}/attention/linear_1/weight"] = np.concatenate(
            [state[f"{src}.cross_attn.key.weight"], state[f"{src}.cross_attn.value.weight"]])
        out[f"{dst}/attention/linear_1/bias"] = np.concatenate([zeros, state[f"{src}.cross_attn.value.bias"]])
        _linear(out, f"{src}.cross_attn.out", state, f"{dst}/attention/linear_2")
    _norm(out, f"{src}.mlp_ln", state, f"{dst}/ffn/layer_norm")
    _linear(out, f"{src}.mlp.0", state, f"{dst}/ffn/linear_0")
    _linear(out, f"{src}.mlp.2", state, f"{dst}/ffn/linear_1")


def whisper_to_ct2(model: Whisper, dtype=np.float32) -> dict[str, np.ndarray]:
    """openai-whisper state dict -> CTranslate2 WhisperSpec variables, as ct2-transformers-converter names them."""
    state = {k: v.detach().numpy().astype(dtype) for k, v in model.state_dict().items()}
    dims = model.dims
    out = {
        "decoder/activation": np.int8(3), "decoder/alibi": np.int8(0), "decoder/pre_norm": np.int8(1),
        "decoder/scale_embeddings": np.int8(0), "decoder/start_from_zero_embedding": np.int8(0),
        "decoder/alignment_heads": np.int16(1), "decoder/alignment_layer": np.int16(-1),
        "decoder/num_heads": np.int16(dims.n_text_head), "encoder/num_heads": np.int16(dims.n_audio_head),
        "decoder/embeddings/weight": state["decoder.token_embedding.weight"],
        "decoder/position_encodings/encodings": state["decoder.positional_embedding"],
        "encoder/position_encodings/encodings": state["encoder.positional_embedding"],
    }
    for conv in ("conv1", "conv2"):
        _linear(out, f"encoder.{conv}", state, f"encoder/{conv}")
    for i in range(dims.n_audio_layer):
        _block(out, state, f"encoder.blocks.{i}", f"encoder/layer_{i}", cross=False)
    for i in range(dims.n_text_layer):
        _block(out, state, f"decoder.blocks.{i}", f"decoder/layer_{i}", cross=True)
    _norm(out, "encoder.ln_post", state, "encoder/layer_norm")
    _norm(out, "decoder.ln", state, "decoder/layer_norm")
    return out


def _string(text: str) -> bytes:
    return struct.pack("<H", len(text) + 1) + text.encode() + b"\0"


def model_bin_bytes(variables: dict[str, np.ndarray], aliases: dict[str, str], spec: str = "WhisperSpec") -> bytes:
    """CTranslate2 binary version 6, written like ModelSpec._serialize (variables sorted by name)."""
    chunks = [struct.pack("<I", 6), _string(spec), struct.pack("<II", 3, len(variables))]
    for name, value in sorted(variables.items()):
        value = np.asarray(value)  # tobytes() below is C order; 0-d scalars stay rank 0
        chunks += [_string(name), struct.pack("<B", value.ndim), struct.pack(f"<{value.ndim}I", *value.shape),
                   struct.pack("<BI", DTYPE_IDS[value.dtype.type], value.nbytes), value.tobytes()]
    chunks.append(struct.pack("<I", len(aliases)))
    for alias, target in aliases.items():
        chunks += [_string(alias), _string(target)]
    return b"".join(chunks)


def write_ct2_folder(folder: Path, model: Whisper, dtype=np.float32) -> Path:
    """A faster-whisper style folder (model.bin + config.json) holding `model`."""
    folder.mkdir(parents=True, exist_ok=True)
    aliases = {"decoder/projection/weight": "decoder/embeddings/weight"}
    (folder / "model.bin").write_bytes(model_bin_bytes(whisper_to_ct2(model, dtype), aliases))
    (folder / "config.json").write_text(json.dumps({"alignment_heads": ALIGNMENT_HEADS, "suppress_ids": [1, 2]}))
    return folder


@pytest.fixture(scope="module")
def model() -> Whisper:
    return tiny_whisper()


def test_round_trip_is_exact(model, tmp_path):
    folder = write_ct2_folder(tmp_path / "ct2", model)
    checkpoint = convert_ct2_whisper([folder / "model.bin"], folder / "config.json")
    assert checkpoint["dims"] == vars(TINY)
    assert checkpoint["alignment_heads"] == ALIGNMENT_HEADS
    state, expected = checkpoint["model_state_dict"], model.state_dict()
    assert set(state) == set(expected)  # includes encoder.positional_embedding, no key biases
    for name, tensor in expected.items():
        assert state[name].dtype == torch.float32 and torch.equal(state[name], tensor), name


def test_converted_model_gives_the_same_logits(model, tmp_path):
    folder = write_ct2_folder(tmp_path / "ct2", model)
    checkpoint = convert_ct2_whisper([folder / "model.bin"])
    rebuilt = Whisper(ModelDimensions(**checkpoint["dims"])).eval()
    rebuilt.load_state_dict(checkpoint["model_state_dict"])
    mel = torch.randn(1, 80, 3000)  # (batch, n_mels, frames): 30 s
    tokens = torch.tensor([[50258, 50259, 50359]])  # (batch, 3): start of transcript, en, transcribe
    with torch.no_grad():
        assert torch.equal(rebuilt(mel, tokens), model(mel, tokens))  # (1, 3, n_vocab)


def test_float16_parts_concatenate_in_order(model, tmp_path):
    folder = write_ct2_folder(tmp_path / "ct2", model, dtype=np.float16)
    data = (folder / "model.bin").read_bytes()
    parts = [tmp_path / "model.bin.part1", tmp_path / "model.bin.part2"]
    parts[0].write_bytes(data[:len(data) // 2 + 1])  # cut mid-tensor, at an odd offset
    parts[1].write_bytes(data[len(data) // 2 + 1:])
    state = convert_ct2_whisper(parts)["model_state_dict"]
    for name, tensor in model.state_dict().items():
        assert state[name].dtype == torch.float16 and torch.equal(state[name], tensor.half()), name


def test_int8_weights_are_dequantized(model, tmp_path):
    variables = whisper_to_ct2(model)
    name = "decoder/layer_0/ffn/linear_0/weight"
    weight = variables[name]  # (4 * n_state, n_state)
    scale = (127.0 / np.abs(weight).max(axis=1)).astype(np.float32)  # CTranslate2's per-row int8 scheme
    variables[name] = np.rint(weight * scale[:, None]).astype(np.int8)
    variables[name + "_scale"] = scale
    (tmp_path / "model.bin").write_bytes(model_bin_bytes(variables, {}))
    state = convert_ct2_whisper([tmp_path / "model.bin"])["model_state_dict"]
    restored = state["decoder.blocks.0.mlp.0.weight"]
    assert restored.dtype == torch.float32
    assert torch.allclose(restored, torch.from_numpy(weight), atol=float(np.abs(weight).max()) / 127)


def test_other_specs_and_truncated_files_are_refused(model, tmp_path):
    variables = whisper_to_ct2(model)
    (tmp_path / "model.bin").write_bytes(model_bin_bytes(variables, {}, spec="TransformerSpec"))
    with pytest.raises(ValueError, match="TransformerSpec"):
        convert_ct2_whisper([tmp_path / "model.bin"])
    (tmp_path / "model.bin").write_bytes(model_bin_bytes(variables, {})[:-1000])
    with pytest.raises((ValueError, struct.error)):
        convert_ct2_whisper([tmp_path / "model.bin"])


def test_parse_reads_header_scalars_and_aliases(model, tmp_path):
    aliases = {"decoder/projection/weight": "decoder/embeddings/weight"}
    (tmp_path / "model.bin").write_bytes(model_bin_bytes(whisper_to_ct2(model), aliases))
    spec, revision, variables, read_aliases = parse_model_bin(read_model_bytes([tmp_path / "model.bin"]))
    assert (spec, revision, read_aliases) == ("WhisperSpec", 3, aliases)
    assert int(variables["decoder/activation"]) == 3 and int(variables["decoder/alignment_layer"]) == -1
    assert variables["encoder/conv1/weight"].shape == (64, 80, 3)
