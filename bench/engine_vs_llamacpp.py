"""runtime-node and llama.cpp side by side on the same GGUF files, threads and machine, in one
run (`make bench`). For each weight type (the shipped Q4_1 and Q4_0 / Q8_0 / F16 / Q4_K_M /
Q5_K_M / Q2_K / IQ4_XS made from it with llama-quantize) it measures prompt processing (the prompt
that decoding follows and a long one, llama-bench's pp512), time to first token,
batch-1 decode, aggregate decode of 8 concurrent sequences and peak RSS of both engines, plus
this machine's memory read bandwidth and the batch-1 decode roofline (bandwidth / bytes of
weights), and writes the table into docs/benchmarks.md between the engine-bench markers.

A shared VM's speed drifts by tens of percent within minutes, so every figure is the median of
`--rounds` rounds, each measuring every type with both engines back to back (bandwidth probe
first); the ratios column shows the median per-round decode ratio and its range. Of two runs
back to back the first tends to be faster on such a VM, so which engine goes first alternates
from round to round.

    python bench/engine_vs_llamacpp.py --gguf <SmolLM2 Q4_1 GGUF> [--threads 2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LLAMA_BIN = ROOT / "target" / "llama.cpp" / "build" / "bin"
RUNTIME_NODE = ROOT / "target" / "release" / "runtime-node"
VARIANTS_DIR = ROOT / "target" / "bench-models"
DOC = ROOT / "docs" / "benchmarks.md"
START, END = "<!-- engine-bench:start -->", "<!-- engine-bench:end -->"


def run(command: list[str]) -> tuple[str, int]:
    """Runs a command to completion; returns its output and its peak RSS in bytes (wait4)."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = process.stdout.read() if process.stdout else ""
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(command)} failed:\n{output[-4000:]}")
    return output, usage.ru_maxrss * 1024


def variant(shipped: Path, kind: str) -> Path:
    """The shipped file, or one requantized from it by llama-quantize (cached)."""
    if kind == "Q4_1":
        return shipped
    VARIANTS_DIR.mkdir(parents=True, exist_ok=True)
    path = VARIANTS_DIR / shipped.name.replace("Q4_1", kind)
    if not path.exists():
        run([str(LLAMA_BIN / "llama-quantize"), "--allow-requantize", str(shipped), str(path), kind])
    return path


def ours(model: Path, args: argparse.Namespace) -> dict:
    output, rss = run([
        str(RUNTIME_NODE), "bench", "--model", str(model), "--threads", str(args.threads),
        "--prompt-tokens", str(args.prompt), "--decode-tokens", str(args.decode),
        "--batch", str(args.streams), "--long-prompt-tokens", str(args.long_prompt), "--json",
    ])
    report = json.loads(output.strip().splitlines()[-1])
    return {
        "pp": report["prefill_tok_s"], "pp_long": report["long_prefill_tok_s"],
        "ttft": report["ttft_s"], "tg": report["decode_tok_s"],
        "tg_batch": report["batch_decode_tok_s"], "rss": rss,
    }


def llama_cpp(model: Path, args: argparse.Namespace) -> dict:
    # Prompt processing from an empty context; generation after a prompt's worth of context
    # (`-d`), as ours decodes after its prompt (llama-bench's plain `-n` starts from nothing, so
    # its attention would read less than ours).
    prompt_output, prompt_rss = run([
        str(LLAMA_BIN / "llama-bench"), "-m", str(model), "-t", str(args.threads),
        "-p", f"{args.prompt},{args.long_prompt}", "-n", "0", "-r", "3", "-o", "json",
    ])
    decode_output, decode_rss = run([
        str(LLAMA_BIN / "llama-bench"), "-m", str(model), "-t", str(args.threads),
        "-p", "0", "-n", str(args.decode), "-d", str(args.prompt), "-r", "3", "-o", "json",
    ])
    prompt_tests = json.loads(prompt_output[prompt_output.index("["):])
    pp, pp_long = (next(t["avg_ts"] for t in prompt_tests if t["n_prompt"] == n) for n in (args.prompt, args.long_prompt))
    tg = next(t["avg_ts"] for t in json.loads(decode_output[decode_output.index("["):]) if t["n_gen"] > 0)
    rss = max(prompt_rss, decode_rss)
    # Concurrent sequences each with its own prompt: aggregate generation speed.
    batched, batched_rss = run([
        str(LLAMA_BIN / "llama-batched-bench"), "-m", str(model), "-t", str(args.threads),
        "-c", str(args.streams * (args.prompt + args.decode) + 64), "-b", "2048", "-ub", "512",
        "-npp", str(args.prompt), "-ntg", str(args.decode), "-npl", str(args.streams),
        "--output-format", "jsonl",
    ])
    line = next(l for l in batched.splitlines() if l.startswith('{"n_kv_max"'))
    return {
        "pp": pp, "pp_long": pp_long, "ttft": args.prompt / pp, "tg": tg,
        "tg_batch": json.loads(line)["speed_tg"], "rss": max(rss, batched_rss),
    }


def bandwidth(model: Path, args: argparse.Namespace) -> float:
    output, _ = run([
        str(RUNTIME_NODE), "bench", "--model", str(model), "--threads", str(args.threads),
        "--prompt-tokens", "8", "--decode-tokens", "1", "--batch", "1", "--bandwidth", "--json",
    ])
    return json.loads(output.strip().splitlines()[-1])["read_bandwidth_bytes_s"]


def cpu_name() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
        return re.search(r"model name\s*:\s*(.+)", text).group(1).strip()
    except (OSError, AttributeError):
        return platform.processor() or "unknown CPU"


def median_report(rounds: list[dict]) -> dict:
    """Each figure's median over the rounds."""
    return {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}


def table(rows: list[tuple[str, int, list[dict], list[dict], list[float]]], args: argparse.Namespace) -> str:
    mib = 1 << 20
    rate = statistics.median(r for _, _, _, _, rates in rows for r in rates)
    lines = [
        f"Command: `make bench` (`python bench/engine_vs_llamacpp.py --gguf <SmolLM2 Q4_1> --threads {args.threads}`), "
        f"{datetime.date.today().isoformat()}, {cpu_name()}, {os.cpu_count()} cores, {args.threads} threads. "
        f"llama.cpp: `llama-bench`/`llama-batched-bench` built from the llama-cpp-python "
        f"{os.environ.get('LLAMA_CPP_PYTHON_VERSION', '0.3.36')} sdist (`bench/build-llama-cpp.sh`). "
        f"Prompt {args.prompt} tokens (and a separate {args.long_prompt}-token prompt, llama-bench's `pp{args.long_prompt}`), {args.decode} generated after it (llama-bench's generation at depth "
        f"{args.prompt}, `-d {args.prompt}`, so both engines attend to the same context), "
        f"{args.streams} concurrent sequences. "
        f"Each figure is the median of {args.rounds} rounds (every type, both engines, per round; "
        f"which engine runs first alternates by round). "
        f"Measured memory read bandwidth: median {rate / 1e9:.1f} GB/s; roofline = bandwidth / file size "
        f"(% of roofline: median over rounds of decode ÷ that round's roofline).",
        "",
        f"| weights | size | engine | prompt tok/s | prompt {args.long_prompt} tok/s | TTFT ms | decode tok/s (batch 1) | "
        f"decode tok/s ({args.streams} streams) | {args.streams} streams ÷ batch 1 | peak RSS MiB | % of roofline | "
        f"vs llama.cpp: prompt / prompt {args.long_prompt} / decode (range) / streams |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for kind, size, our_rounds, their_rounds, rates in rows:
        we, them = median_report(our_rounds), median_report(their_rounds)
        decode_ratios = [o["tg"] / t["tg"] for o, t in zip(our_rounds, their_rounds)]
        for name, r, runs in (("runtime-node", we, our_rounds), ("llama.cpp", them, their_rounds)):
            ratio = (
                f"{we['pp'] / them['pp']:.2f}× / {we['pp_long'] / them['pp_long']:.2f}× / "
                f"{statistics.median(decode_ratios):.2f}× "
                f"({min(decode_ratios):.2f}–{max(decode_ratios):.2f}) / {we['tg_batch'] / them['tg_batch']:.2f}×"
                if name == "runtime-node"
                else ""
            )
            of_roofline = statistics.median(run["tg"] * size / rate for run, rate in zip(runs, rates))
            per_batch = statistics.median(run["tg_batch"] / run["tg"] for run in runs)
            lines.append(
                f"| {kind} | {size / mib:.0f} MiB | {name} | {r['pp']:.0f} | {r['pp_long']:.0f} | {r['ttft'] * 1000:.0f} | "
                f"{r['tg']:.1f} | {r['tg_batch']:.1f} | {per_batch:.1f}× | {r['rss'] / mib:.0f} | "
                f"{100 * of_roofline:.0f}% | {ratio} |"
            )
        lines.append(f"| {kind} | | roofline | | | | {statistics.median(rates) / size:.0f} | | | | | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gguf", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--long-prompt", type=int, default=512)
    parser.add_argument("--decode", type=int, default=64)
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--types", default="Q4_1,Q4_0,Q8_0,F16,Q4_K_M,Q5_K_M,Q2_K,IQ4_XS")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    args = parser.parse_args()
    for tool in ("llama-bench", "llama-batched-bench", "llama-quantize"):
        if not (LLAMA_BIN / tool).exists():
            sys.exit(f"{LLAMA_BIN / tool} is missing: run bench/build-llama-cpp.sh")
    kinds = args.types.split(",")
    models = {kind: variant(args.gguf, kind) for kind in kinds}
    measured = {kind: ([], [], []) for kind in kinds}
    for round_index in range(1, args.rounds + 1):
        for kind in kinds:
            our_rounds, their_rounds, rates = measured[kind]
            engines = [("runtime-node", ours, our_rounds), ("llama.cpp", llama_cpp, their_rounds)]
            if round_index % 2 == 0:
                engines.reverse()
            order = ", ".join(name for name, _, _ in engines)
            print(f"round {round_index}/{args.rounds}, {kind}: bandwidth, {order} …", flush=True)
            rates.append(bandwidth(args.gguf, args))
            for _, measure, runs in engines:
                runs.append(measure(models[kind], args))
    rows = [(kind, models[kind].stat().st_size, *measured[kind]) for kind in kinds]
    text = table(rows, args)
    print(text)
    if not args.no_write:
        doc = DOC.read_text()
        if START not in doc:
            doc = doc.rstrip("\n") + f"\n\n## Engine vs llama.cpp (make bench)\n\n{START}\n{END}\n"
        head, rest = doc.split(START, 1)
        DOC.write_text(f"{head}{START}\n{text}\n{rest[rest.index(END):]}")
        print(f"wrote {DOC.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
