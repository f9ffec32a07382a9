#!/usr/bin/env bash
# Builds llama.cpp's llama-bench, llama-batched-bench and llama-quantize from the source tree
# that the llama-cpp-python sdist on PyPI vendors (scripts/fetch-llama-cpp-sdist.sh), into
# target/llama.cpp/build/bin. Idempotent: an existing build is reused.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DIR="$ROOT/target/llama.cpp"
BIN="$DIR/build/bin"
if [[ -x "$BIN/llama-bench" && -x "$BIN/llama-batched-bench" && -x "$BIN/llama-quantize" ]]; then
  exit 0
fi
command -v cmake >/dev/null || { apt-get update -qq && apt-get install -y -qq cmake; }
command -v c++ >/dev/null || { apt-get update -qq && apt-get install -y -qq g++; }
SRC="$("$ROOT/scripts/fetch-llama-cpp-sdist.sh")"
# Native code for this CPU, but without AMX: llama.cpp 0.3.36's AMX matmul dies with SIGILL at
# `tilezero` on the AMX machine we measured (the kernel grants tile state; its tile set-up does
# not hold), and our engine does not use AMX either, so both sides run AVX-512/VNNI code.
ARCH=(-DGGML_NATIVE=ON)
if grep -qw amx_tile /proc/cpuinfo; then
  FLAGS="-march=native -mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
  ARCH=(-DGGML_NATIVE=OFF "-DCMAKE_C_FLAGS=$FLAGS" "-DCMAKE_CXX_FLAGS=$FLAGS")
fi
cmake -S "$SRC" -B "$DIR/build" -DCMAKE_BUILD_TYPE=Release "${ARCH[@]}" \
  -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
  -DLLAMA_BUILD_TOOLS=ON -DLLAMA_USE_PREBUILT_UI=OFF >/dev/null
cmake --build "$DIR/build" -j"$(nproc)" --target llama-bench llama-batched-bench llama-quantize >/dev/null
echo "llama.cpp tools built in $BIN"
