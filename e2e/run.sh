#!/usr/bin/env bash
# `make e2e`: Hearth on a throwaway kind cluster, installed as a user installs it.
#   1. builds the operator and runtime-node images (CPU) and loads them into the cluster;
#   2. mounts the directory of the SmolLM2 GGUF into the node (no model hub involved);
#   3. installs the chart with Helm, or — without Helm — the CRDs and the kustomize dev overlay
#      (the same objects, as tests/chart holds them equal);
#   4. runs the kube-rs tests in e2e/ (each in its own namespace), then deletes the cluster.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CLUSTER="${HEARTH_E2E_CLUSTER:-hearth-e2e}"
TAG="${IMAGE_TAG:-0.1.0}"
GGUF="${SMOLLM2_GGUF:?SMOLLM2_GGUF must name the SmolLM2 GGUF (make e2e sets it)}"
MODEL_DIR="$(dirname "$GGUF")"

cd "$ROOT"
docker build -f operator/Dockerfile -t "ghcr.io/hearth-dev/hearth-operator:$TAG" .
docker build -f runtime-node/Dockerfile -t "ghcr.io/hearth-dev/runtime-node:$TAG" .

CONFIG="$(mktemp)"
cat >"$CONFIG" <<YAML
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
nodes:
  - role: control-plane
    extraMounts:
      - hostPath: $MODEL_DIR
        containerPath: /hearth-models
        readOnly: true
YAML
kind create cluster --name "$CLUSTER" --config "$CONFIG" --wait 120s
trap 'kind delete cluster --name "$CLUSTER"; rm -f "$CONFIG"' EXIT
kind load docker-image --name "$CLUSTER" "ghcr.io/hearth-dev/hearth-operator:$TAG" "ghcr.io/hearth-dev/runtime-node:$TAG"

if command -v helm >/dev/null; then
  helm install hearth charts/hearth --namespace hearth-system --create-namespace \
    --set billing.intervalSeconds=5 --wait --timeout 5m
else
  echo "helm not found: installing the kustomize dev overlay (the chart's default objects)"
  kubectl apply --server-side -f manifests/crds/
  kubectl apply --server-side -k manifests/overlays/dev
fi
kubectl -n hearth-system wait --for=condition=Available deployment --all --timeout=300s

HEARTH_E2E_MODEL_DIR=/hearth-models HEARTH_E2E_GGUF="$(basename "$GGUF")" \
  cargo test -p hearth-e2e -- --ignored --test-threads=1
