#!/usr/bin/env python3
"""runtime-node on a CUDA GPU against Hugging Face transformers on the same GPU and GGUF file.

Both run the same prompt (the text `runtime-node bench` tokenizes, cut to --prompt tokens) and
decode greedily; figures are medians over --rounds. transformers loads the GGUF through its own
reader (gguf-py dequantizes the weights) and runs them as --dtype in eager PyTorch, the way its
`generate` is used by default: it is the peer for "the same weights on the same GPU", not a
quantized engine. Needs a CUDA build of runtime-node (`--runtime-node`), torch with CUDA,
transformers and gguf.

    python3 bench/engine_vs_transformers_cuda.py --runtime-node target/release/runtime-node \\
        --gguf SmolLM2-135M-Instruct.Q4_1.gguf
"""

import argparse
import json
import statistics
import subprocess
import time
from pathlib import Path

PROMPT_TEXT = "The quick brown fox jumps over the lazy dog. "


def ours(args: argparse.Namespace) -> dict:
    """One `runtime-node bench --device cuda:N --json` run; its JSON line."""
    command = [
        str(args.runtime_node), "bench", "--model", str(args.gguf), "--device", args.device,
        "--prompt-tokens", str(args.prompt), "--decode-tokens", str(args.decode),
        "--batch", str(args.streams), "--json",
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


class Peer:
    """transformers' model of the GGUF on the GPU, timed as runtime-node bench times itself."""

    def __init__(self, args: argparse.Namespace):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.device = args.device
        dtype = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}[args.dtype]
        folder, name = str(args.gguf.parent), args.gguf.name
        started = time.perf_counter()
        self.tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        self.model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=dtype)
        self.model = self.model.to(self.device).eval()
        self.load_s = time.perf_counter() - started
        ids = self.tokenizer(PROMPT_TEXT * (args.prompt // 8 + 1), add_special_tokens=False).input_ids
        self.prompt = torch.tensor([ids[: args.prompt]], device=self.device)
        self.args = args

    def _timed_generate(self, input_ids, new_tokens: int) -> float:
        torch = self.torch
        torch.cuda.synchronize()
        started = time.perf_counter()
        with torch.inference_mode():
            out = self.model.generate(
                input_ids,
                attention_mask=torch.ones_like(input_ids),
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                pad_token_id=self.tokenizer.eos_token_id,
            )
        torch.cuda.synchronize()
        assert out.shape[1] == input_ids.shape[1] + new_tokens, out.shape
        return time.perf_counter() - started

    def round(self) -> dict:
        """Prefill (the prompt and its first token), batch-1 decode after it, and the aggregate
        decode of --streams copies of the prompt."""
        args = self.args
        first = self._timed_generate(self.prompt, 1)
        whole = self._timed_generate(self.prompt, args.decode + 1)
        batch = self.prompt.repeat(args.streams, 1)
        batch_whole = self._timed_generate(batch, args.decode + 1)
        batch_first = self._timed_generate(batch, 1)
        return {
            "prefill_tok_s": args.prompt / first,
            "decode_tok_s": args.decode / (whole - first),
            "batch_decode_tok_s": args.streams * args.decode / (batch_whole - batch_first),
        }


def median(rounds: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rounds if r.get(key) is not None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runtime-node", type=Path, required=True, help="a --features cuda build")
    parser.add_argument("--gguf", type=Path, required=True)
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--decode", type=int, default=128)
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dtype", default="bf16", choices=["bf16", "f16", "f32"], help="transformers' weights")
    parser.add_argument("--json-out", type=Path, help="also write every round's figures here")
    args = parser.parse_args()

    mine = [ours(args) for _ in range(args.rounds)]
    print("runtime-node rounds:", json.dumps(mine), flush=True)
    peer = Peer(args)
    peer.round()  # untimed: PyTorch's first generations (kernel selection, allocator) are slow
    theirs = [peer.round() for _ in range(args.rounds)]

    import torch
    import transformers

    gpu = torch.cuda.get_device_name(torch.device(peer.device))
    print(f"{args.gguf.name} on {gpu}; prompt {args.prompt} tokens, {args.decode} decoded, "
          f"{args.streams} streams; medians of {args.rounds} rounds; transformers "
          f"{transformers.__version__} ({args.dtype}, eager), torch {torch.__version__}")
    print("| tok/s | runtime-node (CUDA) | transformers | ratio |")
    print("|---|---|---|---|")
    for label, key in [("prompt", "prefill_tok_s"), ("decode, batch 1", "decode_tok_s"),
                       (f"decode, {args.streams} streams", "batch_decode_tok_s")]:
        a, b = median(mine, key), median(theirs, key)
        print(f"| {label} | {a:.1f} | {b:.1f} | {a / b:.2f}× |")
    print(f"load: runtime-node {median(mine, 'load_s'):.2f} s, transformers {peer.load_s:.2f} s")
    if args.json_out:
        args.json_out.write_text(json.dumps({"ours": mine, "transformers": theirs}, indent=1))


if __name__ == "__main__":
    main()
