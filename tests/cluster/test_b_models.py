"""Scenarios: GPU scheduling and the memory plan, KEDA absent, every example file applied as a
user would (server-side, strict field validation) reaching what its comments promise, a
gateway-mode model woken from zero by a request, and deletion collecting every child."""

from __future__ import annotations

import json
import time

import openai
import pytest

from test_a_quickstart import endpoint_ips, gateway_client, tenant_key

NAMESPACE = "hearth-demo"
EXAMPLES = ["tiers.yaml", "tenants.yaml", "inferencemodel-llama-8b.yaml", "inferencemodel-qwen-scale-to-zero.yaml",
            "inferencemodel-too-big.yaml", "cluster/smollm2.yaml"]


def apply(cluster, manifest: dict | str) -> None:
    text = manifest if isinstance(manifest, str) else json.dumps(manifest)
    cluster.kubectl("apply", "--server-side", "--validate=strict", "-f", "-", input=text)


def model(name: str, spec: dict) -> dict:
    return {"apiVersion": "hearth.dev/v1alpha1", "kind": "InferenceModel",
            "metadata": {"name": name, "namespace": NAMESPACE}, "spec": spec}


def pods_of(cluster, name: str) -> list[dict]:
    return cluster.get("pods", "-n", NAMESPACE, "-l", f"hearth.dev/model={name}")["items"]


def condition_is(cluster, kind: str, name: str, condition: str, status: str):
    found = cluster.condition(kind, name, NAMESPACE, condition)
    return found if found and found["status"] == status else None


def test_keda_is_absent_and_models_still_deploy(cluster, installed):
    assert cluster.kubectl("get", "crd", "scaledobjects.keda.sh", check=False) == ""
    deployment = cluster.get("deployment", "smollm2-135m", "-n", NAMESPACE)
    assert deployment["status"].get("readyReplicas") == 1


@pytest.mark.parametrize("path", EXAMPLES)
def test_every_example_applies_with_strict_validation(cluster, installed, path):
    cluster.kubectl("apply", "--server-side", "--validate=strict", "-f", f"examples/{path}")


def test_examples_reach_what_their_comments_promise(cluster, installed):
    # Two tiers, each counting its tenants.
    for tier in ("gold", "free"):
        cluster.wait_for(f"Tier {tier} Ready", lambda: cluster.condition("tier", tier, "", "Ready"))
    # Generated keys land in Secrets of the tenant's namespace; only hashes in the status.
    for tenant, key in (("acme", "production"), ("hobbyist", "default")):
        secret = cluster.wait_for(f"{tenant}'s generated key", lambda: cluster.get("secrets", "-n", NAMESPACE, "-l", f"hearth.dev/tenant={tenant}")["items"])
        assert any(s["metadata"]["name"] == f"{tenant}.apikey.{key}" for s in secret)
        status = cluster.get("tenant", tenant, "-n", NAMESPACE)["status"]
        assert all(k["hash"].startswith("sha256:") for k in status.get("apiKeys", []) if "hash" in k)
    # Llama 3.1 70B on one H100: Fits=False and no Deployment.
    fits = cluster.wait_for("Fits=False on the 70B model", lambda: condition_is(cluster, "inferencemodel", "llama-3-1-70b-single-gpu", "Fits", "False"))
    assert "GiB" in fits["message"]
    assert cluster.kubectl("get", "deployment", "llama-3-1-70b-single-gpu", "-n", NAMESPACE, check=False) == ""
    # Qwen scaled to zero by the gateway: a Deployment at zero replicas.
    qwen = cluster.wait_for("the Qwen Deployment", lambda: cluster.get("deployment", "qwen2-5-7b", "-n", NAMESPACE))
    assert qwen["spec"]["replicas"] == 0
    # Llama 3.1 8B: two A100 GPUs per pod, scheduled on the A100 node, an HPA.
    pods = cluster.wait_for("a scheduled Llama 8B pod", lambda: [p for p in pods_of(cluster, "llama-3-1-8b") if p["spec"].get("nodeName")])
    assert pods[0]["spec"]["nodeName"] == "gpu-a100-node"
    engine = pods[0]["spec"]["containers"][0]
    assert engine["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert engine["image"].endswith("-cuda"), "a GPU model must get the CUDA image"
    assert cluster.get("hpa", "llama-3-1-8b", "-n", NAMESPACE)["spec"]["maxReplicas"] == 4


def test_tensor_parallel_model_lands_on_the_gpu_node_with_two_gpus(cluster, installed):
    apply(cluster, model("qwen-tp2", {
        "servedName": "qwen-tp2", "source": {"uri": "hf://Qwen/Qwen2.5-1.5B-Instruct"},
        "parallelism": {"tensor": 2}, "gpu": {"type": "nvidia-h100-80gb"}, "replicas": {"min": 1, "max": 1},
    }))
    cluster.wait_for("Fits=True", lambda: condition_is(cluster, "inferencemodel", "qwen-tp2", "Fits", "True"))
    pods = cluster.wait_for("a scheduled TP=2 pod", lambda: [p for p in pods_of(cluster, "qwen-tp2") if p["spec"].get("nodeName")])
    pod = pods[0]
    assert pod["spec"]["nodeName"] == "gpu-node"
    assert pod["spec"]["containers"][0]["resources"]["requests"]["nvidia.com/gpu"] == "2"
    # The runner has no CUDA build: the pod says so instead of running a CPU engine with --device cuda.
    status = cluster.wait_for("the engine's waiting reason", lambda: [
        c for c in cluster.get("pod", pod["metadata"]["name"], "-n", NAMESPACE)["status"].get("containerStatuses", [])
        if c["state"].get("waiting", {}).get("reason") == "ErrImagePull"
    ])
    assert status
    cluster.kubectl("delete", "inferencemodel", "qwen-tp2", "-n", NAMESPACE, "--wait=true")


def test_gateway_mode_model_at_zero_is_woken_by_a_request(cluster, installed):
    apply(cluster, model("smollm2-wake", {
        "servedName": "smollm2-wake",
        "source": {"uri": "pvc://smollm2-weights/SmolLM2-135M-Instruct.Q4_1.gguf", "format": "gguf"},
        "engine": {"maxBatchSize": 2, "maxContextTokens": 1024},
        "replicas": {"min": 0, "max": 1},
        "autoscaling": {"mode": "gateway", "scaleToZeroAfter": "10m"},
    }))
    cluster.wait_for("the Deployment at zero", lambda: cluster.get("deployment", "smollm2-wake", "-n", NAMESPACE)["spec"]["replicas"] == 0)
    assert not pods_of(cluster, "smollm2-wake")
    client = gateway_client(cluster, tenant_key(cluster, NAMESPACE, "acme", "production"))
    client = client.with_options(timeout=180)
    completion = client.chat.completions.create(
        model="smollm2-wake", messages=[{"role": "user", "content": "Hi"}], max_tokens=4
    )
    assert completion.usage.completion_tokens > 0
    assert cluster.get("deployment", "smollm2-wake", "-n", NAMESPACE)["spec"]["replicas"] == 1


def test_deleting_a_model_collects_its_children(cluster, installed):
    # One billing pass (every 30 s) sees the woken pod while its model still owns it.
    time.sleep(32)
    cluster.kubectl("delete", "inferencemodel", "smollm2-wake", "-n", NAMESPACE, "--wait=true")

    def gone():
        left = cluster.kubectl("get", "deployments,services,pdb,hpa,pods,secrets,networkpolicies", "-n", NAMESPACE,
                               "-l", "hearth.dev/model=smollm2-wake", "-o", "name")
        return left.strip() == "" or None

    # The pod outlives the model while its meter hands over its last usage: billing still pulls
    # a meter it verified before the owners went, so the pod ends after its 10 s preStop and at
    # most one 30 s billing pass, before the meter's 60 s drain bound.
    cluster.wait_for("every child of smollm2-wake to be collected", gone, timeout=55)
    assert endpoint_ips(cluster, NAMESPACE, "smollm2-wake") == []
    with pytest.raises(openai.NotFoundError):
        gateway_client(cluster, tenant_key(cluster, NAMESPACE, "acme", "production")).chat.completions.create(
            model="smollm2-wake", messages=[{"role": "user", "content": "Hi"}], max_tokens=4
        )


def test_a_served_name_held_in_another_namespace_is_refused_not_joined(cluster, installed):
    # smollm2-135m is served from hearth-demo; a newer model elsewhere asks for the same name,
    # open to every tier.
    cluster.kubectl("create", "namespace", "team-elsewhere")
    intruder = model("smollm2-135m", {"servedName": "smollm2-135m", "tiers": [],
                                      "source": {"uri": "hf://HuggingFaceTB/SmolLM2-135M-Instruct"}})
    intruder["metadata"]["namespace"] = "team-elsewhere"
    apply(cluster, intruder)
    ready = cluster.wait_for("ServedNameConflict", lambda: (
        c := cluster.condition("inferencemodel", "smollm2-135m", "team-elsewhere", "Ready")) and c["reason"] == "ServedNameConflict" and c)
    assert ready["status"] == "False"
    assert "held by hearth-demo/smollm2-135m" in ready["message"], ready["message"]
    assert cluster.kubectl("get", "deployment", "smollm2-135m", "-n", "team-elsewhere", check=False) == ""
    # The holder is untouched and still serves.
    assert condition_is(cluster, "inferencemodel", "smollm2-135m", "Ready", "True")
    cluster.kubectl("delete", "namespace", "team-elsewhere", "--wait=false")
