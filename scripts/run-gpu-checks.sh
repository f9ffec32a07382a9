#!/usr/bin/env bash
# The GPU checks, run on a GPU machine from the folder `scripts/cuda-device-build.sh` fills
# (binaries built elsewhere): the CUDA tests, the SmolLM2 reference tests on the GPU, one
# served chat completion, and the benchmark against transformers on the same GPU.
#   run-gpu-checks.sh MODEL.gguf REPO_DIR [OUT_DIR]
# cuBLAS, cuRAND and NCCL come from python3's NVIDIA wheels (a PyTorch install has them) or the
# system; transformers and gguf must import for the benchmark.
set -uo pipefail
model=$1 repo=$2 out=${3:-.}
here=$(cd "$(dirname "$0")" && pwd)
site=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/nvidia
export LD_LIBRARY_PATH=$site/cu13/lib:$site/nccl/lib:/usr/local/nvidia/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
status=0

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
"$here/cuda-tests" --test-threads 1 --nocapture 2>&1 | tee "$out/cuda_tests.txt" || status=1
HEARTH_TEST_DEVICE=cuda:0 HEARTH_SMOLLM2_GGUF=$model HEARTH_REFERENCE_FIXTURES=$repo/runtime-node/tests/data \
  "$here/reference_llama_cpp-tests" --test-threads 1 --nocapture 2>&1 | tee "$out/reference_cuda.txt" || status=1

"$here/runtime-node" serve --model "$model" --device cuda:0 --port 8090 --served-name smollm2 > "$out/serve.txt" 2>&1 &
server=$!
for _ in $(seq 60); do curl -sf localhost:8090/ready > /dev/null && break; sleep 1; done
curl -sf localhost:8090/v1/chat/completions -H 'content-type: application/json' \
  -d '{"model":"smollm2","messages":[{"role":"user","content":"Hello!"}],"temperature":0,"max_tokens":40}' |
  tee "$out/chat.json" || status=1
echo
kill "$server"; wait "$server"

python3 "$repo/bench/engine_vs_transformers_cuda.py" --runtime-node "$here/runtime-node" --gguf "$model" \
  --rounds 3 --json-out "$out/bench.json" 2>&1 | tee "$out/bench.txt" || status=1
exit $status
