"""manifests/: the kustomize base and overlays render offline with `kubectl kustomize`, every
object is valid, and they describe the same install as the chart (the base = the chart's defaults,
each overlay = the chart with charts/hearth/ci/<overlay>-overlay.yaml)."""

from __future__ import annotations

import copy

import pytest

import sync_manifests
from conftest import CHART, MANIFESTS, OVERLAYS, kustomize, render, validate_object

# Labels that say which tool installed an object; everything else must be equal.
TOOL_LABELS = ("helm.sh/chart", "app.kubernetes.io/managed-by")


def normalise(objects: list[dict]) -> dict[tuple[str, str | None, str], dict]:
    """Objects by (kind, namespace, name), without the labels that name the installing tool."""
    by_key = {}
    for obj in objects:
        obj = copy.deepcopy(obj)
        for meta in (obj.get("metadata"), ((obj.get("spec") or {}).get("template") or {}).get("metadata")):
            if meta and meta.get("labels"):
                for label in TOOL_LABELS:
                    meta["labels"].pop(label, None)
        key = (obj["kind"], obj["metadata"].get("namespace"), obj["metadata"]["name"])
        assert key not in by_key, f"{key} appears twice"
        by_key[key] = obj
    return by_key


def images(objects: dict) -> dict[str, list[str]]:
    return {
        f"{k[0]}/{k[2]}": [c["image"] for c in o["spec"]["template"]["spec"]["containers"]]
        for k, o in objects.items()
        if o["kind"] == "Deployment"
    }


def rbac_rules(objects: dict) -> dict[str, list]:
    return {f"{k[0]}/{k[2]}": o["rules"] for k, o in objects.items() if o["kind"] in ("ClusterRole", "Role")}


# What a kustomize user creates: the meters' root keys and the invoice token (random per install;
# manifests/README.md).
USER_CREATED = {("Secret", "hearth-system", "hearth-meter-keys"), ("Secret", "hearth-system", "hearth-billing-token")}


def assert_same_install(chart: dict, kustomized: dict, what: str) -> None:
    only_kustomize = set(kustomized) - set(chart)
    assert only_kustomize == {("Namespace", None, "hearth-system")}, f"{what}: only in kustomize: {only_kustomize}"
    only_chart = set(chart) - set(kustomized)
    assert only_chart == USER_CREATED, f"{what}: only in the chart: {only_chart - USER_CREATED}"
    chart = {key: obj for key, obj in chart.items() if key not in USER_CREATED}
    # Named comparisons first, for readable failures; then everything.
    assert images(chart) == images(kustomized), f"{what}: images differ"
    assert rbac_rules(chart) == rbac_rules(kustomized), f"{what}: RBAC rules differ"
    for key in chart:
        assert chart[key] == kustomized[key], f"{what}: {key} differs"


def test_crds_in_manifests_are_the_generated_ones():
    generated = {p.name: p.read_text() for p in sorted((CHART / "crds").glob("*.yaml"))}
    copies = {p.name: p.read_text() for p in sorted((MANIFESTS / "crds").glob("*.yaml")) if p.name != "kustomization.yaml"}
    assert copies, "manifests/crds/ has no CRDs: crdgen (`make generate`) writes them there"
    assert copies == generated, "manifests/crds/ is stale: run `make generate`"


def test_base_is_the_fresh_render_of_the_chart():
    assert sync_manifests.main(["--check"]) == 0, "run: python tests/chart/sync_manifests.py"


@pytest.mark.parametrize("target", ["base", *(f"overlays/{o}" for o in OVERLAYS)])
def test_kustomize_renders_offline_to_valid_objects(target):
    objects = kustomize(target)
    assert len(objects) >= 15
    for obj in objects:
        validate_object(obj)


def test_base_is_the_chart_default_install():
    assert_same_install(normalise(render(None).objects()), normalise(kustomize("base")), "base")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_is_the_chart_with_its_ci_values(overlay):
    chart = normalise(render(CHART / "ci" / f"{overlay}-overlay.yaml").objects())
    assert_same_install(chart, normalise(kustomize(f"overlays/{overlay}")), f"overlays/{overlay}")


def test_overlays_change_what_they_say():
    dev = normalise(kustomize("overlays/dev"))
    operator = dev[("Deployment", "hearth-system", "hearth-operator")]["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "RUST_LOG", "value": "debug,kube=info,hyper=info"} in operator["env"]
    prod = normalise(kustomize("overlays/prod"))
    assert prod[("Deployment", "hearth-system", "hearth-gateway")]["spec"]["replicas"] == 2
    assert ("PodDisruptionBudget", "hearth-system", "hearth-gateway") in prod
    assert prod[("PersistentVolumeClaim", "hearth-system", "hearth-billing")]["spec"]["resources"]["requests"]["storage"] == "10Gi"


def test_a_difference_is_detected():
    chart = normalise(render(None).objects())
    kustomized = normalise(kustomize("base"))
    key = ("Deployment", "hearth-system", "hearth-gateway")
    kustomized[key]["spec"]["template"]["spec"]["containers"][0]["image"] = "ghcr.io/hearth-dev/hearth-operator:latest"
    with pytest.raises(AssertionError, match="images differ"):
        assert_same_install(chart, kustomized, "base")
