"""The gateway exposed outside the cluster: an Ingress (TLS from a named Secret or from
cert-manager) and a Gateway API HTTPRoute, both sending traffic to the gateway Service's port.

kubernetes-validate knows Ingress; HTTPRoute is checked here against tests/chart/schemas/httproute.json
(a subset of the real CRD), and against the real CRD by the cluster test, which applies the render
to an API server that has the Gateway API CRDs."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from conftest import CHART, NAMESPACE, render, render_override, validate_object
from helm import HelmError, Rendered

TLS_SECRET = CHART / "ci" / "ingress-tls-secret.yaml"
CERT_MANAGER = CHART / "ci" / "ingress-cert-manager.yaml"


def only(rendered: Rendered, kind: str) -> dict:
    found = [o for o in rendered.objects() if o["kind"] == kind]
    assert len(found) == 1, f"{len(found)} {kind} objects rendered"
    return found[0]


def gateway_service_port(rendered: Rendered) -> tuple[str, int]:
    """Name and port of the gateway Service, the one the gateway pods' `http` port serves."""
    service = next(o for o in rendered.objects() if o["kind"] == "Service" and o["metadata"]["labels"]["app.kubernetes.io/component"] == "gateway")
    port = next(p for p in service["spec"]["ports"] if p["targetPort"] == "http")
    return service["metadata"]["name"], port["port"]


def values_file(path: Path) -> dict:
    return yaml.safe_load(path.read_text())["gateway"]


# --------------------------------------------------------------------------------------------
# Ingress


@pytest.mark.parametrize("values", [TLS_SECRET, CERT_MANAGER], ids=lambda p: f"ci/{p.name}")
def test_ingress_sends_every_host_and_path_to_the_gateway_service(values):
    rendered = render(values)
    ingress = only(rendered, "Ingress")
    name, port = gateway_service_port(rendered)
    wanted = values_file(values)["ingress"]
    assert ingress["metadata"]["namespace"] == NAMESPACE
    assert ingress["spec"]["ingressClassName"] == wanted["className"]
    assert [rule["host"] for rule in ingress["spec"]["rules"]] == [h["host"] for h in wanted["hosts"]]
    for rule, host in zip(ingress["spec"]["rules"], wanted["hosts"]):
        paths = rule["http"]["paths"]
        assert [(p["path"], p["pathType"]) for p in paths] == [(p["path"], p["pathType"]) for p in host["paths"]]
        for path in paths:
            assert path["backend"] == {"service": {"name": name, "port": {"number": port}}}


def test_ingress_tls_from_a_named_secret():
    ingress = only(render(TLS_SECRET), "Ingress")
    wanted = values_file(TLS_SECRET)["ingress"]
    assert ingress["spec"]["tls"] == wanted["tls"]
    annotations = ingress["metadata"]["annotations"]
    assert annotations == wanted["annotations"]
    assert not any(key.startswith("cert-manager.io/") for key in annotations)


def test_ingress_tls_from_a_cert_manager_cluster_issuer():
    ingress = only(render(CERT_MANAGER), "Ingress")
    hosts = [h["host"] for h in values_file(CERT_MANAGER)["ingress"]["hosts"]]
    assert ingress["metadata"]["annotations"] == {"cert-manager.io/cluster-issuer": "letsencrypt-prod"}
    # cert-manager's ingress-shim writes this Secret with a certificate for every host.
    assert ingress["spec"]["tls"] == [{"secretName": "hearth-gateway-tls", "hosts": hosts}]


def test_ingress_tls_from_a_cert_manager_issuer(tmp_path):
    rendered = render_override(
        tmp_path,
        {
            "gateway": {
                "ingress": {
                    "enabled": True,
                    "annotations": {"nginx.ingress.kubernetes.io/proxy-read-timeout": "600"},
                    "hosts": [
                        {"host": "llm.example.com", "paths": [{"path": "/", "pathType": "Prefix"}]},
                        {"paths": [{"path": "/", "pathType": "Prefix"}]},  # every other host, without TLS
                    ],
                    "certManager": {"issuer": "acme"},
                }
            }
        },
        release="ml",
        namespace="inference",
    )
    ingress = only(rendered, "Ingress")
    assert ingress["metadata"]["annotations"] == {
        "cert-manager.io/issuer": "acme",
        "nginx.ingress.kubernetes.io/proxy-read-timeout": "600",
    }
    assert ingress["spec"]["tls"] == [{"secretName": "ml-hearth-gateway-tls", "hosts": ["llm.example.com"]}]
    assert "host" not in ingress["spec"]["rules"][1]
    validate_object(ingress)


def test_cert_manager_keeps_secrets_you_name(tmp_path):
    tls = [{"secretName": "llm-tls", "hosts": ["llm.example.com"]}]
    hosts = [{"host": "llm.example.com", "paths": [{"path": "/", "pathType": "Prefix"}]}]
    override = {"gateway": {"ingress": {"enabled": True, "hosts": hosts, "tls": tls, "certManager": {"clusterIssuer": "ca"}}}}
    ingress = only(render_override(tmp_path, override), "Ingress")
    assert ingress["spec"]["tls"] == tls
    assert ingress["metadata"]["annotations"] == {"cert-manager.io/cluster-issuer": "ca"}


def test_ingress_defaults_match_every_host_on_the_default_class(tmp_path):
    ingress = only(render_override(tmp_path, {"gateway": {"ingress": {"enabled": True}}}), "Ingress")
    assert "ingressClassName" not in ingress["spec"] and "tls" not in ingress["spec"]
    assert "annotations" not in ingress["metadata"]
    [rule] = ingress["spec"]["rules"]
    assert "host" not in rule
    assert [(p["path"], p["pathType"]) for p in rule["http"]["paths"]] == [("/", "Prefix")]


@pytest.mark.parametrize(
    "ingress, message",
    [
        ({"certManager": {"issuer": "acme"}}, "needs a host"),  # the default hosts name none
        (
            {"hosts": [{"host": "llm.example.com", "paths": [{"path": "/", "pathType": "Prefix"}]}], "certManager": {"issuer": "a", "clusterIssuer": "b"}},
            "not both",
        ),
    ],
)
def test_cert_manager_mistakes_are_refused(ingress, message, tmp_path):
    with pytest.raises(HelmError, match=message):
        render_override(tmp_path, {"gateway": {"ingress": {"enabled": True, **ingress}}})


def test_a_different_service_port_follows_into_ingress_and_route(tmp_path):
    override = yaml.safe_load(TLS_SECRET.read_text())
    override["gateway"]["service"] = {"port": 8443}
    rendered = render_override(tmp_path, override)
    assert gateway_service_port(rendered) == ("hearth-gateway", 8443)
    ingress, route = only(rendered, "Ingress"), only(rendered, "HTTPRoute")
    assert {p["backend"]["service"]["port"]["number"] for r in ingress["spec"]["rules"] for p in r["http"]["paths"]} == {8443}
    assert route["spec"]["rules"][0]["backendRefs"] == [{"name": "hearth-gateway", "port": 8443}]


def test_nothing_is_exposed_without_the_gateway(tmp_path):
    override = copy.deepcopy(yaml.safe_load(TLS_SECRET.read_text()))
    override["gateway"]["enabled"] = False
    kinds = {o["kind"] for o in render_override(tmp_path, override).objects()}
    assert not kinds & {"Ingress", "HTTPRoute"}


def test_off_by_default():
    kinds = {o["kind"] for o in render(None).objects()}
    assert not kinds & {"Ingress", "HTTPRoute"}


# --------------------------------------------------------------------------------------------
# HTTPRoute


def test_httproute_attaches_the_gateway_service_to_its_parents():
    rendered = render(TLS_SECRET)
    route = only(rendered, "HTTPRoute")
    wanted = values_file(TLS_SECRET)["httpRoute"]
    name, port = gateway_service_port(rendered)
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert route["metadata"]["namespace"] == NAMESPACE
    assert route["metadata"]["annotations"] == wanted["annotations"]
    assert route["spec"]["parentRefs"] == wanted["parentRefs"]
    assert route["spec"]["hostnames"] == wanted["hostnames"]
    [rule] = route["spec"]["rules"]
    assert rule["matches"] == [{"path": {"type": "PathPrefix", "value": "/"}}]
    # A Service backend in the route's own namespace: no ReferenceGrant needed.
    assert rule["backendRefs"] == [{"name": name, "port": port}]
    validate_object(route)


def test_httproute_without_hostnames_serves_its_listeners_hostnames(tmp_path):
    parents = [{"name": "shared", "namespace": "gateway-system"}]
    route = only(render_override(tmp_path, {"gateway": {"httpRoute": {"enabled": True, "parentRefs": parents}}}), "HTTPRoute")
    assert "hostnames" not in route["spec"] and "annotations" not in route["metadata"]
    assert route["spec"]["parentRefs"] == parents


@pytest.mark.parametrize(
    "break_it, field",
    [
        (lambda spec: spec["rules"][0]["backendRefs"][0].update(port="http"), "port"),
        (lambda spec: spec["rules"][0]["matches"][0]["path"].update(type="Prefix"), "type"),
        (lambda spec: spec["parentRefs"][0].update(sectionname="https"), "sectionname"),
        (lambda spec: spec.update(hostnames=["LLM.example.com"]), "hostnames"),
        (lambda spec: spec.pop("parentRefs"), "parentRefs"),
    ],
)
def test_a_malformed_httproute_is_caught(break_it, field):
    route = copy.deepcopy(only(render(TLS_SECRET), "HTTPRoute"))
    break_it(route["spec"])
    with pytest.raises(AssertionError, match=field):
        validate_object(route)


# --------------------------------------------------------------------------------------------
# NOTES.txt


def test_notes_give_the_outside_urls():
    notes = render(TLS_SECRET).notes
    assert "https://llm.example.com/v1" in notes and "https://api.example.com/v1" in notes
    assert "through the HTTPRoute hearth-gateway" in notes and "(llm.example.com)" in notes
    assert "https://chat.example.com/v1" in render(CERT_MANAGER).notes
    assert "through the Ingress" not in render(None).notes


def test_notes_say_http_for_hosts_without_tls(tmp_path):
    hosts = [{"host": h, "paths": [{"path": "/", "pathType": "Prefix"}]} for h in ("a.example.com", "b.example.com")]
    override = {"gateway": {"ingress": {"enabled": True, "hosts": hosts, "tls": [{"secretName": "a", "hosts": ["a.example.com"]}]}}}
    notes = render_override(tmp_path, override).notes
    assert "https://a.example.com/v1" in notes and "http://b.example.com/v1" in notes
