#!/usr/bin/env python3
"""Writes the seed corpora: tiny valid GGUF and safetensors files (and the first bytes of the
SmolLM2 GGUF when $HEARTH_SMOLLM2_GGUF names it). Deterministic; the output is checked in."""

import json
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def gguf_string(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def gguf_value(kind, v):
    """(type code, payload) for a metadata value."""
    if kind == "u32":
        return 4, struct.pack("<I", v)
    if kind == "f32":
        return 6, struct.pack("<f", v)
    if kind == "bool":
        return 7, struct.pack("<B", int(v))
    if kind == "str":
        return 8, gguf_string(v)
    if kind == "strs":
        return 9, struct.pack("<IQ", 8, len(v)) + b"".join(gguf_string(x) for x in v)
    if kind == "i32s":
        return 9, struct.pack("<IQ", 5, len(v)) + b"".join(struct.pack("<i", x) for x in v)
    raise ValueError(kind)


def gguf(metadata, tensors, alignment=32):
    """A GGUF v3 file; tensors are (name, dims, ggml type, raw bytes)."""
    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(metadata))
    for key, (kind, v) in metadata.items():
        code, payload = gguf_value(kind, v)
        out += gguf_string(key) + struct.pack("<I", code) + payload
    offset = 0
    data = b""
    for name, dims, ggml_type, raw in tensors:
        out += gguf_string(name) + struct.pack("<I", len(dims))
        out += b"".join(struct.pack("<Q", d) for d in dims)
        out += struct.pack("<IQ", ggml_type, offset)
        pad = (-len(raw)) % alignment
        data += raw + b"\0" * pad
        offset += len(raw) + pad
    out += b"\0" * ((-len(out)) % alignment)
    return out + data


def f32s(n, scale=0.01):
    return b"".join(struct.pack("<f", scale * ((i * 37) % 11 - 5)) for i in range(n))


def tiny_llama():
    hidden, heads, kv, ff, vocab = 8, 2, 1, 16, 6
    tokens = ["a", "b", "c", "ab", "<s>", "</s>"]
    metadata = {
        "general.architecture": ("str", "llama"),
        "llama.embedding_length": ("u32", hidden),
        "llama.attention.head_count": ("u32", heads),
        "llama.attention.head_count_kv": ("u32", kv),
        "llama.feed_forward_length": ("u32", ff),
        "llama.block_count": ("u32", 1),
        "llama.context_length": ("u32", 64),
        "llama.rope.freq_base": ("f32", 10000.0),
        "llama.attention.layer_norm_rms_epsilon": ("f32", 1e-5),
        "tokenizer.ggml.model": ("str", "gpt2"),
        "tokenizer.ggml.pre": ("str", "smollm"),
        "tokenizer.ggml.tokens": ("strs", tokens),
        "tokenizer.ggml.merges": ("strs", ["a b"]),
        "tokenizer.ggml.token_type": ("i32s", [1, 1, 1, 1, 3, 3]),
        "tokenizer.ggml.bos_token_id": ("u32", 4),
        "tokenizer.ggml.eos_token_id": ("u32", 5),
        "tokenizer.ggml.add_bos_token": ("bool", False),
        "tokenizer.chat_template": ("str", "{% for m in messages %}{{ m.content }}{% endfor %}"),
    }
    head_dim = hidden // heads
    tensors = [
        ("token_embd.weight", [hidden, vocab], 0, f32s(hidden * vocab)),
        ("output_norm.weight", [hidden], 0, f32s(hidden, 1.0)),
        ("blk.0.attn_norm.weight", [hidden], 0, f32s(hidden, 1.0)),
        ("blk.0.ffn_norm.weight", [hidden], 0, f32s(hidden, 1.0)),
        ("blk.0.attn_q.weight", [hidden, hidden], 0, f32s(hidden * hidden)),
        ("blk.0.attn_k.weight", [hidden, kv * head_dim], 0, f32s(hidden * kv * head_dim)),
        ("blk.0.attn_v.weight", [hidden, kv * head_dim], 0, f32s(hidden * kv * head_dim)),
        ("blk.0.attn_output.weight", [hidden, hidden], 0, f32s(hidden * hidden)),
        ("blk.0.ffn_gate.weight", [hidden, ff], 0, f32s(hidden * ff)),
        ("blk.0.ffn_up.weight", [hidden, ff], 0, f32s(hidden * ff)),
        ("blk.0.ffn_down.weight", [ff, hidden], 0, f32s(hidden * ff)),
        # One quantized tensor: Q8_0 blocks are 32 values in 34 bytes.
        ("extra.q8.weight", [32, 1], 8, struct.pack("<e", 0.5) + bytes(range(32))),
    ]
    return gguf(metadata, tensors)


def safetensors(tensors):
    """tensors: name -> (dtype, shape, raw bytes)."""
    header, data = {"__metadata__": {"format": "pt"}}, b""
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((-len(text)) % 8)
    return struct.pack("<Q", len(text)) + text + data


def main():
    corpus = os.path.join(HERE, "corpus")
    files = {
        "gguf_header/tiny_llama.gguf": tiny_llama(),
        "gguf_header/empty_v3.gguf": gguf({}, []),
        "safetensors_header/tiny.safetensors": safetensors({
            "model.embed_tokens.weight": ("F32", [2, 3], f32s(6)),
            "model.norm.weight": ("F16", [3], struct.pack("<3e", 1.0, 0.5, -2.0)),
            "lm_head.weight": ("BF16", [1, 2], b"\x80\x3f\x00\x40"),
            "ids": ("I64", [2], struct.pack("<2q", 1, -1)),
            "mask": ("U8", [3], b"\x00\x01\x02"),
        }),
        "safetensors_header/empty.safetensors": safetensors({}),
    }
    smollm2 = os.environ.get("HEARTH_SMOLLM2_GGUF")
    if smollm2 and os.path.exists(smollm2):
        with open(smollm2, "rb") as f:
            files["gguf_header/smollm2_first_16k.gguf"] = f.read(16 * 1024)
    for name, data in files.items():
        path = os.path.join(corpus, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        print(f"{path}: {len(data)} bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
