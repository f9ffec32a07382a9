#!/usr/bin/env bash
# Builds llama.cpp's llama-bench, llama-batched-bench and llama-quantize from the source tree
# that the llama-cpp-python sdist on PyPI vendors (no GitHub access needed), into
# target/llama.cpp/build/bin. Idempotent: an existing build is reused.
set -euo pipefail

VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DIR="$ROOT/target/llama.cpp"
BIN="$DIR/build/bin"
if [[ -x "$BIN/llama-bench" && -x "$BIN/llama-batched-bench" && -x "$BIN/llama-quantize" ]]; then
  exit 0
fi
command -v cmake >/dev/null || { apt-get update -qq && apt-get install -y -qq cmake; }
command -v c++ >/dev/null || { apt-get update -qq && apt-get install -y -qq g++; }
mkdir -p "$DIR"
ARCHIVE="$DIR/llama_cpp_python-$VERSION.tar.gz"
if [[ ! -f "$ARCHIVE" ]]; then
  # The simple index (JSON) names the sdist's URL and sha256.
  read -r URL SHA < <(curl -fsS -m 60 -H "Accept: application/vnd.pypi.simple.v1+json" \
      https://pypi.org/simple/llama-cpp-python/ | python3 -c '
import json, sys
name = "llama_cpp_python-'"$VERSION"'.tar.gz"
f = next(f for f in json.load(sys.stdin)["files"] if f["filename"] == name)
print(f["url"], f["hashes"]["sha256"])')
  curl -fsS -m 600 -o "$ARCHIVE.part" "$URL"
  echo "$SHA  $ARCHIVE.part" | sha256sum -c --quiet
  mv "$ARCHIVE.part" "$ARCHIVE"
fi
SRC="$DIR/llama_cpp_python-$VERSION/vendor/llama.cpp"
[[ -d "$SRC" ]] || tar xzf "$ARCHIVE" -C "$DIR" "llama_cpp_python-$VERSION/vendor/llama.cpp"
cmake -S "$SRC" -B "$DIR/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
  -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
  -DLLAMA_BUILD_TOOLS=ON -DLLAMA_USE_PREBUILT_UI=OFF >/dev/null
cmake --build "$DIR/build" -j"$(nproc)" --target llama-bench llama-batched-bench llama-quantize >/dev/null
echo "llama.cpp tools built in $BIN"
