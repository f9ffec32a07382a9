"""Scenarios at the end of the session: KEDA's CRDs installed (from KEDA's own Go module) make a
keda-mode model's ScaledObject accepted by its real schema; the chart's Ingress and Gateway API
HTTPRoute, rendered by Helm, are accepted by the apiserver (Gateway API CRDs from their Go
module); `helm uninstall` leaves no Hearth object behind but the CRDs and the billing store's claim (kept
on purpose: `helm.sh/resource-policy: keep`)."""

from __future__ import annotations

import json
import time

import yaml

from test_b_models import apply, model

NAMESPACE = "hearth-demo"


def crds(cluster, project: str) -> str:
    return str(cluster.bin.parent / "crds" / project)


def install_crds(cluster, project: str, crd: str) -> None:
    """Applies a project's CRDs and waits until `crd` is served."""
    cluster.kubectl("apply", "--server-side", "-f", crds(cluster, project))

    def established() -> bool:
        conditions = cluster.get("crd", crd).get("status", {}).get("conditions") or []
        return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)

    cluster.wait_for(f"CRD {crd} established", established, timeout=60)


def test_keda_present_scaled_object_is_accepted(cluster, installed):
    install_crds(cluster, "keda", "scaledobjects.keda.sh")
    apply(cluster, model("smollm2-keda", {
        "servedName": "smollm2-keda",
        "source": {"uri": "pvc://smollm2-weights/SmolLM2-135M-Instruct.Q4_1.gguf", "format": "gguf"},
        "replicas": {"min": 1, "max": 3},
        "autoscaling": {"mode": "keda", "metric": "inflightRequests", "target": 4},
    }))
    scaled = cluster.wait_for("the ScaledObject", lambda: json.loads(
        cluster.kubectl("get", "scaledobject", "smollm2-keda", "-n", NAMESPACE, "-o", "json", check=False) or "null"))
    assert scaled["spec"]["scaleTargetRef"]["name"] == "smollm2-keda"
    assert scaled["spec"]["maxReplicaCount"] == 3
    cluster.kubectl("delete", "inferencemodel", "smollm2-keda", "-n", NAMESPACE, "--wait=true")


def test_ingress_and_http_route_are_accepted_by_the_apiserver(cluster, installed):
    install_crds(cluster, "gateway-api", "httproutes.gateway.networking.k8s.io")
    rendered = cluster.run(
        str(cluster.bin / "helm"), "template", "hearth", "charts/hearth", "--namespace", "hearth-system",
        "-f", "charts/hearth/ci/ingress-tls-secret.yaml",
    ).stdout
    exposure = [doc for doc in yaml.safe_load_all(rendered) if doc and doc["kind"] in ("Ingress", "HTTPRoute")]
    assert sorted(doc["kind"] for doc in exposure) == ["HTTPRoute", "Ingress"]
    applied = cluster.kubectl("apply", "--dry-run=server", "--server-side", "--validate=strict", "-f", "-",
                              input=yaml.safe_dump_all(exposure))
    assert "ingress.networking.k8s.io/hearth-gateway" in applied and "httproute.gateway.networking.k8s.io/hearth-gateway" in applied


def test_helm_uninstall_leaves_only_the_crds(cluster, installed):
    for kind in ("inferencemodels", "tenants"):
        cluster.kubectl("delete", kind, "--all", "-n", NAMESPACE, "--wait=true", timeout=300)
    cluster.kubectl("delete", "tiers", "--all", "--wait=true")
    cluster.run(str(cluster.bin / "helm"), "uninstall", "hearth", "--namespace", "hearth-system", "--wait", "--timeout", "5m", timeout=400)

    def leftovers() -> list[str]:
        names = cluster.kubectl(
            "get", "all,configmaps,secrets,serviceaccounts,roles,rolebindings,leases,pvc,networkpolicies,pdb",
            "-A", "-o", "name", "-l", "app.kubernetes.io/managed-by in (hearth-operator,Helm)",
        ).split()
        names += [n for n in cluster.kubectl("get", "clusterroles,clusterrolebindings", "-o", "name").split() if "hearth" in n]
        names += cluster.kubectl("get", "leases", "-n", "hearth-system", "-o", "name").split()
        return [n for n in names if n != "persistentvolumeclaim/hearth-billing"]

    deadline = time.monotonic() + 120
    while (left := leftovers()) and time.monotonic() < deadline:
        time.sleep(2)
    assert not left, f"left behind by helm uninstall: {left}"
    remaining = cluster.kubectl("get", "crds", "-o", "name")
    assert "inferencemodels.hearth.dev" in remaining and "tenants.hearth.dev" in remaining
