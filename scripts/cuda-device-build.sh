#!/usr/bin/env bash
# Builds the CUDA runtime-node and its GPU test binaries on a machine with no GPU driver, for a
# GPU machine that has no Rust toolchain: `make cuda-binaries`, then copy target/cuda-device/dist
# there and run dist/run-gpu-checks.sh (docs/benchmarks.md, "On a GPU").
#
# - nvcc comes from PyPI at the driver's CUDA version (scripts/cuda-device-requirements.txt):
#   candle ships its kernels as PTX, which a driver older than the compiler cannot load.
# - cudarc links libcuda at build time, which only a driver installs: a stub exporting the
#   symbols of cudarc's driver bindings (each returning an error) stands in for the link, and
#   the real libcuda.so.1 is found at run time on the GPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."

root=$PWD/target/cuda-device
venv=$root/venv
requirements=scripts/cuda-device-requirements.txt
if [ ! -f "$venv/.requirements" ] || ! cmp -s "$requirements" "$venv/.requirements"; then
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q -r "$requirements"
  cp "$requirements" "$venv/.requirements"
fi
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/nvidia
cuda_home=$site/cu13

# The link directory: unversioned names for the wheels' libraries, and the libcuda stub.
link=$root/link
mkdir -p "$link"
for lib in cublas.so.13 cublasLt.so.13 curand.so.10 nvrtc.so.13 cudart.so.13; do
  ln -sf "$cuda_home/lib/lib$lib" "$link/lib${lib%%.so*}.so"
done
ln -sf "$site/nccl/lib/libnccl.so.2" "$link/libnccl.so"
cudarc=$(cargo metadata --format-version 1 --locked --features runtime-node/cuda |
  python3 -c 'import json, sys; print(next(p["manifest_path"] for p in json.load(sys.stdin)["packages"] if p["name"] == "cudarc").rsplit("/", 1)[0])')
grep -oE '^\s+fn cu[A-Za-z0-9_]+\(' "$cudarc/src/driver/sys/mod.rs" | sed -E 's/\s+fn //; s/\($//' | sort -u |
  awk '{ print "int " $1 "(void) { return 999; /* CUDA_ERROR_UNKNOWN */ }" }' > "$link/libcuda-stub.c"
cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$link/libcuda.so" "$link/libcuda-stub.c"

export CUDA_HOME=$cuda_home CUDA_PATH=$cuda_home CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
export PATH=$cuda_home/bin:$PATH LIBRARY_PATH=$link CARGO_TARGET_DIR=$root/target
cargo build --locked --release -p runtime-node --features cuda --bins
tests=$(cargo test --locked --release -p runtime-node --features cuda --no-run \
  --test cuda --test reference_llama_cpp --message-format json 2>/dev/null |
  python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        print(m["target"]["name"], m["executable"])')

dist=$root/dist
rm -rf "$dist" && mkdir -p "$dist"
cp "$CARGO_TARGET_DIR/release/runtime-node" "$dist/"
while read -r name path; do cp "$path" "$dist/$name-tests"; done <<< "$tests"
strip "$dist"/*
cp scripts/run-gpu-checks.sh "$dist/"
ls -la "$dist"
