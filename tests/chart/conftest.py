"""Shared fixtures of the chart and manifest tests: paths, renders, kubectl kustomize and the
schemas every rendered object is validated against."""

from __future__ import annotations

import copy
import functools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from helm import Rendered, helm_binary, template  # noqa: E402

ROOT = HERE.parent.parent
CHART = ROOT / "charts" / "hearth"
MANIFESTS = ROOT / "manifests"
CI_VALUES = sorted((CHART / "ci").glob("*.yaml"))
OVERLAYS = ["dev", "prod"]
RELEASE = "hearth"
NAMESPACE = "hearth-system"
# Kubernetes version the objects are validated for (a version kubernetes-validate ships).
KUBERNETES_VERSION = "1.33"
SCHEMAS = HERE / "schemas"


def values_id(path: Path | None) -> str:
    return "default" if path is None else f"ci/{path.name}"


@functools.lru_cache(maxsize=None)
def _render(values_file: str | None) -> Rendered:
    files = [Path(values_file)] if values_file else []
    return template(CHART, files, release=RELEASE, namespace=NAMESPACE)


def render(values_file: Path | None = None) -> Rendered:
    """The chart as `helm template` renders it with its defaults, overlaid by `values_file` (cached)."""
    return _render(str(values_file) if values_file else None)


def render_override(tmp_path: Path, override: dict, **kwargs) -> Rendered:
    """The chart as `helm template` renders it with `override` as a values file (`kwargs`:
    release, namespace, kube_version)."""
    values = tmp_path / "override.yaml"
    values.write_text(yaml.safe_dump(override))
    return template(CHART, [values], **{"release": RELEASE, "namespace": NAMESPACE, **kwargs})


RENDER_CASES = [None, *CI_VALUES]


@pytest.fixture(params=RENDER_CASES, ids=[values_id(p) for p in RENDER_CASES])
def rendered(request) -> Rendered:
    return render(request.param)


# --------------------------------------------------------------------------------------------
# kubectl kustomize


def kubectl() -> str:
    """kubectl from PATH, else the one e2e/cluster/build.sh builds beside helm."""
    found = shutil.which("kubectl")
    if found:
        return found
    beside_helm = Path(helm_binary()).parent / "kubectl"
    if os.access(beside_helm, os.X_OK):
        return str(beside_helm)
    if os.environ.get("CI"):
        pytest.fail("kubectl is required for the kustomize tests (it is on the project's machines)")
    pytest.skip("kubectl is not installed: the kustomize renders cannot be checked here")


@functools.lru_cache(maxsize=None)
def _kustomize(path: str) -> str:
    result = subprocess.run([kubectl(), "kustomize", path], capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        missing_crds = not any((MANIFESTS / "crds").glob("*.yaml")) or "crds" in result.stderr
        hint = (
            "\nmanifests/crds/*.yaml are written by crdgen (`make generate`); "
            "crds/src/crdgen.rs OUTPUT_DIRS must list \"manifests/crds\""
            if missing_crds
            else ""
        )
        raise AssertionError(f"kubectl kustomize {path} failed:\n{result.stderr}{hint}")
    return result.stdout


def kustomize(relative: str) -> list[dict]:
    """Objects of `kubectl kustomize manifests/<relative>` (offline)."""
    return [doc for doc in yaml.safe_load_all(_kustomize(str(MANIFESTS / relative))) if doc is not None]


# --------------------------------------------------------------------------------------------
# Validation


def crd_schemas() -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) -> JSON Schema of the CRD's served version, from charts/hearth/crds."""
    schemas = {}
    for path in sorted((CHART / "crds").glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if version.get("served"):
                schema = to_json_schema(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
                # The API server checks these itself; the CRD schema leaves them out.
                schema["properties"].update(
                    apiVersion={"const": f"{group}/{version['name']}"},
                    kind={"const": kind},
                    metadata=OBJECT_META,
                )
                schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata"})
                schemas[(f"{group}/{version['name']}", kind)] = schema
    return schemas


OBJECT_META = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", "maxLength": 253},
        "namespace": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}


def to_json_schema(node: dict) -> dict:
    """A structural CRD schema as plain JSON Schema: `nullable` allows null, int-or-string
    allows both, and unknown fields are errors (as the API server's strict field validation,
    kubectl's default, makes them) unless the schema preserves them."""
    if not isinstance(node, dict):
        return node
    if node.get("x-kubernetes-int-or-string"):
        node.pop("type", None)
        node.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if node.get("nullable") and "type" in node:
        node["type"] = [node["type"], "null"] if isinstance(node["type"], str) else [*node["type"], "null"]
    if "properties" in node and "additionalProperties" not in node and not node.get("x-kubernetes-preserve-unknown-fields"):
        node["additionalProperties"] = False
    for key in ("properties", "patternProperties"):
        for name, child in node.get(key, {}).items():
            node[key][name] = to_json_schema(child)
    for key in ("items", "additionalProperties", "not"):
        if isinstance(node.get(key), dict):
            node[key] = to_json_schema(node[key])
    for key in ("allOf", "anyOf", "oneOf"):
        if key in node:
            node[key] = [to_json_schema(child) for child in node[key]]
    return node


@functools.lru_cache(maxsize=None)
def _extra_schemas() -> dict[tuple[str, str], dict]:
    schemas = crd_schemas()
    # Prometheus Operator kinds: a strict subset of their CRDs (the fields this chart may use).
    for path in sorted(SCHEMAS.glob("*.json")):
        schema = json.loads(path.read_text())
        schemas[(schema["x-api-version"], schema["x-kind"])] = schema
    return schemas


def validate_object(obj: dict) -> None:
    """Validates one object: Kubernetes kinds with kubernetes-validate (strict: unknown fields
    are errors), Hearth's CRs against the generated CRDs, Prometheus Operator kinds against
    tests/chart/schemas. Raises AssertionError naming the object and the failing field."""
    name = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
    assert isinstance(obj.get("apiVersion"), str) and isinstance(obj.get("kind"), str), f"{name}: no apiVersion/kind"
    metadata = obj.get("metadata") or {}
    assert metadata.get("name"), f"{name}: no metadata.name"
    extra = _extra_schemas().get((obj["apiVersion"], obj["kind"]))
    try:
        if extra is not None:
            jsonschema.Draft202012Validator(extra).validate(obj)
            return
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except jsonschema.ValidationError as error:
        path = ".".join(str(p) for p in error.absolute_path)
        raise AssertionError(f"{name}: {path}: {error.message}") from None
    except kubernetes_validate.SchemaNotFoundError as error:
        raise AssertionError(f"{name}: no schema for {obj['apiVersion']} {obj['kind']}: {error.message}") from None


def pod_templates(objects: list[dict]) -> list[tuple[str, dict]]:
    """(name, pod spec) of every workload among `objects`."""
    found = []
    for obj in objects:
        kind, spec = obj.get("kind"), obj.get("spec") or {}
        if kind == "Pod":
            found.append((f"Pod/{obj['metadata']['name']}", spec))
        elif kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
            found.append((f"{kind}/{obj['metadata']['name']}", spec["template"]["spec"]))
        elif kind == "CronJob":
            found.append((f"CronJob/{obj['metadata']['name']}", spec["jobTemplate"]["spec"]["template"]["spec"]))
    return found
