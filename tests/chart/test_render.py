"""The chart renders (by real Helm) with its defaults and with every charts/hearth/ci/*.yaml, every
rendered object is valid for Kubernetes (or its CRD), the values are checked by values.schema.json,
and the rendered objects agree with the operator's command line and with each other."""

from __future__ import annotations

import base64

import copy
import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from conftest import (
    CHART,
    CI_VALUES,
    NAMESPACE,
    RENDER_CASES,
    ROOT,
    pod_templates,
    render,
    render_override,
    validate_object,
    values_id,
)
from helm import HelmError, template

VALUES_SCHEMA = json.loads((CHART / "values.schema.json").read_text())


def merged(values: dict, override: dict) -> dict:
    """`override` laid over `values` as Helm merges a values file: maps merge key by key, anything
    else replaces, and null deletes the key."""
    result = copy.deepcopy(values)
    for key, value in override.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def values_of(path: Path | None) -> dict:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    if path is not None:
        values = merged(values, yaml.safe_load(path.read_text()) or {})
    return values


# --------------------------------------------------------------------------------------------
# values.schema.json


def test_values_schema_is_a_valid_draft7_schema():
    jsonschema.Draft7Validator.check_schema(VALUES_SCHEMA)


@pytest.mark.parametrize("values_file", RENDER_CASES, ids=[values_id(p) for p in RENDER_CASES])
def test_values_schema_accepts_the_chart_values(values_file):
    jsonschema.Draft7Validator(VALUES_SCHEMA).validate(values_of(values_file))


@pytest.mark.parametrize(
    "override, field",
    [
        ({"operator": {"replicas": 0}}, "replicas"),
        ({"operator": {"replica": 2}}, "replica"),  # a typo is refused, not ignored
        ({"gateway": {"port": "8080"}}, "port"),
        ({"logFormat": "yaml"}, "logFormat"),
        ({"billing": {"persistence": {"accessMode": "ReadOnlyMany"}}}, "accessMode"),
        ({"monitoring": {"interval": "30 seconds"}}, "interval"),
        ({"tiers": [{"name": "Gold", "spec": {}}]}, "name"),
        ({"networkPolicy": {"gatewayFrom": [{"podSelctor": {}}]}}, "podSelctor"),
        ({"operator": {"runtimeCudaImage": 5}}, "runtimeCudaImage"),
        ({"gateway": {"ingress": {"hosts": [{"host": "LLM.example.com", "paths": [{"path": "/", "pathType": "Prefix"}]}]}}}, "host"),
        ({"gateway": {"ingress": {"hosts": [{"paths": [{"path": "/", "pathType": "prefix"}]}]}}}, "pathType"),
        ({"gateway": {"ingress": {"tls": [{"hosts": ["llm.example.com"]}]}}}, "secretName"),
        ({"gateway": {"ingress": {"certManager": {"clusterIssuer": 1}}}}, "clusterIssuer"),
        ({"gateway": {"httpRoute": {"enabled": True}}}, "parentRefs"),  # a route attached to nothing
        ({"gateway": {"httpRoute": {"parentRefs": [{"name": "gw", "sectionname": "https"}]}}}, "sectionname"),
        ({"gateway": {"httpRoute": {"hostnames": ["*"]}}}, "hostnames"),
    ],
)
def test_values_schema_refuses_mistakes(override, field, tmp_path):
    with pytest.raises(jsonschema.ValidationError) as raised:
        jsonschema.Draft7Validator(VALUES_SCHEMA).validate(merged(values_of(None), override))
    assert field in str(raised.value)
    # Helm applies the same schema before it renders anything.
    with pytest.raises(HelmError, match="schema") as refused:
        render_override(tmp_path, override)
    assert field in str(refused.value)


def test_every_default_value_is_described_by_the_schema():
    def walk(values: dict, schema: dict, path: str) -> None:
        for key, value in values.items():
            assert key in schema.get("properties", {}), f"{path}{key} is not in values.schema.json"
            child = schema["properties"][key]
            if isinstance(value, dict) and child.get("additionalProperties") is False:
                walk(value, child, f"{path}{key}.")

    walk(values_of(None), VALUES_SCHEMA, "")


# --------------------------------------------------------------------------------------------
# Rendering and validation


def test_renders_every_template_to_valid_objects(rendered):
    objects = rendered.objects()
    assert objects, "nothing rendered"
    for obj in objects:
        validate_object(obj)


def test_no_object_is_rendered_twice(rendered):
    seen = set()
    for obj in rendered.objects():
        key = (obj["kind"], obj["metadata"].get("namespace"), obj["metadata"]["name"])
        assert key not in seen, f"{key} rendered twice"
        seen.add(key)


def test_namespaced_objects_live_in_the_release_namespace(rendered):
    cluster_scoped = {"CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding", "Tier", "Namespace"}
    for obj in rendered.objects():
        namespace = obj["metadata"].get("namespace")
        if obj["kind"] in cluster_scoped:
            assert namespace is None, f"{obj['kind']}/{obj['metadata']['name']} is cluster-scoped"
        elif obj["kind"] == "ConfigMap" and obj["metadata"]["name"].startswith("hearth-dashboard-"):
            continue  # dashboards.namespace may place them beside Grafana
        else:
            assert namespace == NAMESPACE, f"{obj['kind']}/{obj['metadata']['name']} in {namespace}"


def kinds_and_names(values_file: Path | None) -> set[tuple[str, str]]:
    return {(o["kind"], o["metadata"]["name"]) for o in render(values_file).objects(include_crds=False)}


DEFAULT_OBJECTS = {
    ("ServiceAccount", "hearth-operator"),
    ("ClusterRole", "hearth-operator"),
    ("ClusterRoleBinding", "hearth-operator"),
    ("Role", "hearth-operator-leader-election"),
    ("RoleBinding", "hearth-operator-leader-election"),
    # The leader-election Lease, so that `helm uninstall` removes it too.
    ("Lease", "hearth-operator-leader"),
    ("Deployment", "hearth-operator"),
    ("Service", "hearth-operator"),
    ("Service", "hearth-billing"),
    ("PersistentVolumeClaim", "hearth-billing"),
    ("ServiceAccount", "hearth-gateway"),
    ("ClusterRole", "hearth-gateway"),
    ("ClusterRoleBinding", "hearth-gateway"),
    ("Deployment", "hearth-gateway"),
    ("Service", "hearth-gateway"),
    # The meters' root keys and the invoice token, generated once per install.
    ("Secret", "hearth-meter-keys"),
    ("Secret", "hearth-billing-token"),
}


def test_default_install_is_the_operator_gateway_and_billing():
    assert kinds_and_names(None) == DEFAULT_OBJECTS
    crds = {o["metadata"]["name"] for o in render(None).objects() if o["kind"] == "CustomResourceDefinition"}
    assert crds == {"inferencemodels.hearth.dev", "tenants.hearth.dev", "tiers.hearth.dev"}


def test_meter_keys_are_random_per_install_mounted_by_component_and_replaceable(tmp_path):
    def secret_and_pods(override):
        objects = render_override(tmp_path, override).objects()
        by_name = {(o["kind"], o["metadata"]["name"]): o for o in objects}
        return by_name.get(("Secret", "hearth-meter-keys")), by_name

    first, objects = secret_and_pods({})
    second, _ = secret_and_pods({})
    assert first["data"]["proxy"] != second["data"]["proxy"], "each install gets its own keys"
    assert len(base64.b64decode(first["data"]["usage"])) >= 16
    operator = objects[("Deployment", "hearth-operator")]["spec"]["template"]
    gateway = objects[("Deployment", "hearth-gateway")]["spec"]["template"]
    assert operator["metadata"]["labels"]["hearth.dev/model-access"] == "true"
    assert gateway["metadata"]["labels"]["hearth.dev/model-access"] == "true"
    volume = lambda pod: next(v for v in pod["spec"]["volumes"] if v["name"] == "meter-keys")["secret"]
    assert "items" not in volume(operator), "the operator (billing) holds both keys"
    assert volume(gateway)["items"] == [{"key": "proxy", "path": "proxy"}], "the gateway never holds billing's key"
    args = operator["spec"]["containers"][0]["args"]
    assert "--meter-keys-dir=/etc/hearth/meter-keys" in args
    assert "--model-access-namespace=hearth-system" in args and "--metrics-namespace=monitoring" in args
    assert "--meter-proxy-key-file=/etc/hearth/meter-keys/proxy" in gateway["spec"]["containers"][0]["args"]
    assert "--billing-token-file=/etc/hearth/billing-token/token" in args
    assert not any(v["name"] == "billing-token" for v in gateway["spec"]["volumes"]), "the gateway never reads invoices"

    own, objects = secret_and_pods(
        {"meterKeys": {"existingSecret": "mine"}, "networkPolicy": {"models": {"enabled": False}}}
    )
    assert own is None and ("Secret", "mine") not in objects
    operator = objects[("Deployment", "hearth-operator")]["spec"]["template"]
    assert next(v for v in operator["spec"]["volumes"] if v["name"] == "meter-keys")["secret"]["secretName"] == "mine"
    assert not any(a.startswith("--model-access-namespace") for a in operator["spec"]["containers"][0]["args"])


def test_optional_objects_follow_their_values():
    ci = CHART / "ci"
    minimal = kinds_and_names(ci / "minimal.yaml")
    assert not any("gateway" in name for _, name in minimal)
    assert ("PersistentVolumeClaim", "hearth-billing") not in minimal
    monitoring = kinds_and_names(ci / "monitoring-on.yaml") - DEFAULT_OBJECTS
    assert monitoring == {
        ("ServiceMonitor", "hearth-operator"),
        ("PodMonitor", "hearth-gateway"),
        ("PodMonitor", "hearth-runtime"),
        ("PrometheusRule", "hearth"),
        ("ConfigMap", "hearth-dashboard-operator"),
        ("ConfigMap", "hearth-dashboard-gateway"),
        ("ConfigMap", "hearth-dashboard-engine"),
        ("ConfigMap", "hearth-dashboard-billing"),
    }
    assert kinds_and_names(ci / "networkpolicy-on.yaml") - DEFAULT_OBJECTS == {
        ("NetworkPolicy", "hearth-operator"),
        ("NetworkPolicy", "hearth-gateway"),
    }
    ha = kinds_and_names(ci / "ha-rwx.yaml") - DEFAULT_OBJECTS
    assert ha == {("PodDisruptionBudget", "hearth-gateway"), ("Tier", "gold"), ("Tier", "free")}
    assert kinds_and_names(ci / "ingress-tls-secret.yaml") - DEFAULT_OBJECTS == {
        ("Ingress", "hearth-gateway"),
        ("HTTPRoute", "hearth-gateway"),
    }
    assert kinds_and_names(ci / "ingress-cert-manager.yaml") - DEFAULT_OBJECTS == {("Ingress", "hearth-gateway")}


def test_release_name_prefixes_object_names():
    other = template(CHART, release="ml", namespace="inference")
    names = {(o["kind"], o["metadata"]["name"]) for o in other.objects(include_crds=False)}
    assert ("Deployment", "ml-hearth-operator") in names
    deployment = next(o for o in other.objects() if o["kind"] == "Deployment" and o["metadata"]["name"] == "ml-hearth-operator")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--lease-name=ml-hearth-operator-leader" in args
    role = next(o for o in other.objects() if o["kind"] == "Role")
    assert role["rules"][0]["resourceNames"] == ["ml-hearth-operator-leader"]


def test_a_bad_tier_in_values_fails_crd_validation():
    tier = yaml.safe_load((CHART / "ci" / "ha-rwx.yaml").read_text())["tiers"][0]
    rendered = {"apiVersion": "hearth.dev/v1alpha1", "kind": "Tier", "metadata": {"name": "bad"}, "spec": copy.deepcopy(tier["spec"])}
    validate_object(rendered)
    rendered["spec"]["limits"]["requestsPerMinit"] = 5
    with pytest.raises(AssertionError, match="requestsPerMinit"):
        validate_object(rendered)
    rendered["spec"]["limits"].pop("requestsPerMinit")
    rendered["spec"]["weight"] = "heavy"
    with pytest.raises(AssertionError, match="weight"):
        validate_object(rendered)


def test_invalid_objects_are_caught():
    """The validation the tests rely on does fail on a wrong field or type."""
    deployment = copy.deepcopy(next(o for o in render(None).objects() if o["kind"] == "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["port"] = 8080
    with pytest.raises(AssertionError, match="port"):
        validate_object(deployment)
    deployment = copy.deepcopy(next(o for o in render(None).objects() if o["kind"] == "Deployment"))
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(AssertionError, match="replicas"):
        validate_object(deployment)


def test_more_than_one_operator_needs_a_shared_billing_volume(tmp_path):
    values = tmp_path / "two.yaml"
    values.write_text("operator:\n  replicas: 2\n")
    with pytest.raises(HelmError, match="ReadWriteMany"):
        template(CHART, [values])
    values.write_text("operator:\n  replicas: 2\nbilling:\n  persistence:\n    accessMode: ReadWriteMany\n")
    deployment = next(o for o in template(CHART, [values]).objects() if o["metadata"]["name"] == "hearth-operator" and o["kind"] == "Deployment")
    assert deployment["spec"]["replicas"] == 2 and "strategy" not in deployment["spec"]


# --------------------------------------------------------------------------------------------
# Agreement with the code: flags, env vars, ports, names


def cli_flags(source: str) -> set[str]:
    """Long flags clap derives from a struct's fields: `pub some_field:` -> `--some-field`."""
    return {"--" + name.replace("_", "-") for name in re.findall(r"#\[arg\([^\]]*long[^\]]*\)\]\s*pub (\w+):", source)}


def test_operator_and_gateway_args_are_flags_the_binary_has(rendered):
    controller = cli_flags((ROOT / "operator/controller/src/args.rs").read_text())
    gateway = cli_flags((ROOT / "operator/gateway/src/lib.rs").read_text())
    assert "--billing-store" in controller and "--listen" in gateway
    for obj in rendered.objects():
        if obj["kind"] != "Deployment":
            continue
        for container in obj["spec"]["template"]["spec"]["containers"]:
            subcommand, *flags = container["args"]
            known = {"controller": controller, "gateway": gateway}[subcommand]
            for flag in flags:
                assert flag.split("=", 1)[0] in known, f"{obj['metadata']['name']}: {flag} is not a flag of hearth-operator {subcommand}"


def test_env_vars_are_read_by_the_binary(rendered):
    sources = "".join(
        (ROOT / path).read_text()
        for path in ("operator/src/cli.rs", "operator/controller/src/args.rs", "operator/kube/src/telemetry.rs")
    )
    read = set(re.findall(r'env = "([A-Z_]+)"', sources)) | {"RUST_LOG"}
    assert "EnvFilter::try_from_default_env" in sources  # RUST_LOG
    for obj in rendered.objects():
        if obj["kind"] == "Deployment":
            for container in obj["spec"]["template"]["spec"]["containers"]:
                # A variable may exist only to be expanded into another one, as $(POD_IP) is.
                expanded = {
                    name for env in container.get("env", []) for name in re.findall(r"\$\(([A-Z_]+)\)", env.get("value", ""))
                }
                for env in container.get("env", []):
                    assert env["name"] in read | expanded, f"{env['name']} is not read by hearth-operator"


def test_operator_ports_match_its_defaults():
    cli = (ROOT / "operator/controller/src/args.rs").read_text()
    assert 'default_value = "0.0.0.0:8080", env = "HEARTH_METRICS_ADDR"' in cli
    assert 'default_value = "0.0.0.0:8090", env = "HEARTH_BILLING_ADDR"' in cli
    assert '"/healthz"' in (ROOT / "operator/controller/src/http.rs").read_text()
    assert '"/readyz"' in (ROOT / "operator/controller/src/http.rs").read_text()
    # The billing store lives on the mounted volume.
    deployment = next(o for o in render(None).objects() if o["kind"] == "Deployment" and o["metadata"]["name"] == "hearth-operator")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    store = next(a for a in container["args"] if a.startswith("--billing-store="))
    assert str(Path(store.split("=", 1)[1]).parent) in mounts


def test_images_default_to_the_chart_app_version(rendered):
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    constants = (ROOT / "crds/src/constants.rs").read_text()
    for obj in rendered.objects():
        if obj["kind"] == "Deployment":
            for container in obj["spec"]["template"]["spec"]["containers"]:
                assert container["image"] == f"ghcr.io/hearth-dev/hearth-operator:{chart['appVersion']}"
                for flag, constant in (("--runtime-image", "DEFAULT_RUNTIME_IMAGE"), ("--runtime-cuda-image", "DEFAULT_RUNTIME_CUDA_IMAGE")):
                    for arg in (a for a in container["args"] if a.startswith(f"{flag}=")):
                        assert f'{constant}: &str = "{arg.split("=", 1)[1]}"' in constants


def operator_args(rendered) -> list[str]:
    deployment = next(o for o in rendered.objects() if o["kind"] == "Deployment" and o["metadata"]["name"].endswith("-operator"))
    return deployment["spec"]["template"]["spec"]["containers"][0]["args"]


def flag_value(args: list[str], flag: str) -> str:
    values = [a.split("=", 1)[1] for a in args if a.startswith(f"{flag}=")]
    assert len(values) == 1, f"{flag} appears {len(values)} times in {args}"
    return values[0]


@pytest.mark.parametrize(
    "override, cpu, cuda",
    [
        ({}, "ghcr.io/hearth-dev/runtime-node:0.1.0", "ghcr.io/hearth-dev/runtime-node:0.1.0-cuda"),
        (
            {"image": {"registry": "registry.example.com/ml", "tag": "1.2.3"}},
            "registry.example.com/ml/runtime-node:1.2.3",
            "registry.example.com/ml/runtime-node:1.2.3-cuda",
        ),
        # Setting the CPU image leaves the CUDA one at its own default, and the reverse.
        ({"operator": {"runtimeImage": "mirror.example.com/rn:cpu"}}, "mirror.example.com/rn:cpu", "ghcr.io/hearth-dev/runtime-node:0.1.0-cuda"),
        ({"operator": {"runtimeCudaImage": "mirror.example.com/rn:gpu"}}, "ghcr.io/hearth-dev/runtime-node:0.1.0", "mirror.example.com/rn:gpu"),
    ],
)
def test_runtime_images_for_cpu_and_gpu_models(override, cpu, cuda, tmp_path):
    args = operator_args(render_override(tmp_path, override))
    assert flag_value(args, "--runtime-image") == cpu
    assert flag_value(args, "--runtime-cuda-image") == cuda
    # Next to each other, as the operator's --help lists them.
    assert args.index(f"--runtime-cuda-image={cuda}") == args.index(f"--runtime-image={cpu}") + 1


def test_large_numbers_reach_the_flags_as_integers(tmp_path):
    """Helm reads every number of a values file as a float64, which prints as `1e+06` from one
    million up; the binaries' integer flags would refuse that."""
    rendered = render_override(tmp_path, {"billing": {"intervalSeconds": 1000000}, "gateway": {"scaleFromZero": {"timeoutSeconds": 3600000}}})
    assert flag_value(operator_args(rendered), "--billing-interval-seconds") == "1000000"
    gateway = next(o for o in rendered.objects() if o["kind"] == "Deployment" and o["metadata"]["name"] == "hearth-gateway")
    assert flag_value(gateway["spec"]["template"]["spec"]["containers"][0]["args"], "--scale-from-zero-timeout-seconds") == "3600000"


def test_services_select_pods_and_name_their_ports(rendered):
    objects = rendered.objects()
    pods = [(o, o["spec"]["template"]) for o in objects if o["kind"] == "Deployment"]
    for service in (o for o in objects if o["kind"] == "Service"):
        selector = service["spec"]["selector"]
        matching = [t for _, t in pods if selector.items() <= t["metadata"]["labels"].items()]
        assert matching, f"Service/{service['metadata']['name']} selects no pod"
        for port in service["spec"]["ports"]:
            names = {p["name"] for t in matching for c in t["spec"]["containers"] for p in c.get("ports", [])}
            assert port["targetPort"] in names, f"Service/{service['metadata']['name']} targets {port['targetPort']}"
    for deployment, template in pods:
        assert deployment["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
    for monitor in (o for o in objects if o["kind"] == "ServiceMonitor"):
        selected = [s for s in objects if s["kind"] == "Service" and monitor["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()]
        assert selected, f"ServiceMonitor/{monitor['metadata']['name']} selects no Service"
        for endpoint in monitor["spec"]["endpoints"]:
            assert any(endpoint["port"] == p["name"] for s in selected for p in s["spec"]["ports"])


def test_notes_tell_how_to_get_a_key_and_call_the_gateway():
    keys = (ROOT / "operator/tenancy/src/keys.rs").read_text()
    assert 'format!("{tenant}.apikey.{key_name}")' in keys
    assert 'SECRET_KEY_FIELD: &str = "api-key"' in (ROOT / "crds/src/constants.rs").read_text()
    notes = render(None).notes
    assert "kubectl get secret <tenant>.apikey.<keyName> -n <namespace> -o jsonpath='{.data.api-key}' | base64 -d" in notes
    assert "port-forward service/hearth-gateway 8080:80" in notes
    assert "export OPENAI_BASE_URL=http://127.0.0.1:8080/v1" in notes
    assert "/chat/completions" in notes
    assert "/billing/invoices/<namespace>/<tenant>" in notes
    assert '"/billing/invoices/{namespace}/{tenant}"' in (ROOT / "operator/billing/src/http.rs").read_text()
    minimal = render(CHART / "ci" / "minimal.yaml").notes
    assert "gateway is disabled" in minimal and "WARNING" in minimal


@pytest.mark.parametrize("values_file", CI_VALUES, ids=[values_id(p) for p in CI_VALUES])
def test_ci_values_change_the_render(values_file):
    """Each ci/ file exercises something the defaults do not."""
    assert render(values_file).manifests != render(None).manifests


def test_pod_templates_exist(rendered):
    names = [name for name, _ in pod_templates(rendered.objects())]
    assert "Deployment/hearth-operator" in names
