#!/usr/bin/env bash
# Downloads the llama-cpp-python sdist from PyPI (it vendors the whole llama.cpp tree; no GitHub
# access needed), checks its sha256 against PyPI's index, and unpacks the llama.cpp tree into
# target/llama.cpp/llama_cpp_python-$VERSION/vendor/llama.cpp. Prints that folder.
# Idempotent: an existing download and tree are reused. Used by `make bench` (to build llama.cpp)
# and `make test` (llama.cpp's tokenizer test vocabulary for Llama's SentencePiece model).
set -euo pipefail

VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DIR="$ROOT/target/llama.cpp"
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
echo "$SRC"
