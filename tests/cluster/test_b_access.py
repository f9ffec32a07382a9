"""Scenario: only the gateway and billing reach a model. Its engine listens on the pod's loopback
only; its meter answers anyone else with 401 (forged attribution included) and serves usage only
to billing; its tokens live in a Secret the model owns, never in the pod spec; its NetworkPolicy
admits only Hearth's labelled pods."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request

from test_b_models import NAMESPACE, pods_of

MODEL = "smollm2-135m"


def call(url: str, body: dict | None = None, headers: dict | None = None) -> tuple[int, str]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"content-type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def meter_url(cluster) -> str:
    running = [p for p in pods_of(cluster, MODEL) if p.get("status", {}).get("podIP")]
    assert running, f"no running pod of {MODEL}"
    return f"http://{running[0]['status']['podIP']}:8001"


def test_a_caller_other_than_the_gateway_gets_401_even_with_forged_attribution(cluster, installed):
    url = meter_url(cluster)
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    forged = {"x-hearth-tenant": "hearth-demo/acme", "x-hearth-priority": "1000", "x-hearth-gateway-token": "guess"}
    status, body = call(f"{url}/v1/chat/completions", chat, forged)
    assert status == 401, body
    assert json.loads(body)["error"]["type"] == "authentication_error"
    # The kubelet's probe path stays open.
    assert call(f"{url}/health")[0] == 200


def test_the_engine_listens_only_on_the_pods_loopback(cluster, installed):
    url = meter_url(cluster)
    pod_ip = url.split("//")[1].split(":")[0]
    with socket.socket() as probe:
        probe.settimeout(5)
        assert probe.connect_ex((pod_ip, 8000)) != 0, "the engine port must not answer at the pod IP"
    # Probes and scrapes reach it through the meter, which passes these GETs on.
    status, metrics = call(f"{url}/metrics")
    assert status == 200 and "hearth_engine_" in metrics
    deployment = cluster.get("deployment", MODEL, "-n", NAMESPACE)
    (engine,) = deployment["spec"]["template"]["spec"]["containers"]
    assert "ports" not in engine and engine["readinessProbe"]["httpGet"]["port"] == 8001


def test_usage_records_need_billings_token(cluster, installed):
    url = meter_url(cluster)
    assert call(f"{url}/usage?after=0")[0] == 401
    assert call(f"{url}/usage/ack", {"cursor": 1000000})[0] == 401
    status, _ = call(f"{url}/usage?after=0", headers={"authorization": "Bearer not-billing"})
    assert status == 401


def test_tokens_come_from_a_secret_the_model_owns(cluster, installed):
    secret = cluster.get("secret", f"{MODEL}-meter", "-n", NAMESPACE)
    owner = secret["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner.get("controller")) == ("InferenceModel", MODEL, True)
    assert set(secret["data"]) == {"proxy-token", "usage-token"}
    deployment = cluster.get("deployment", MODEL, "-n", NAMESPACE)
    (meter,) = [c for c in deployment["spec"]["template"]["spec"]["initContainers"] if c["name"] == "meter"]
    tokens = {e["name"]: e for e in meter["env"] if e["name"].startswith("HEARTH_METER_")}
    assert set(tokens) == {"HEARTH_METER_PROXY_TOKEN", "HEARTH_METER_USAGE_TOKEN"}
    for variable in tokens.values():
        assert "value" not in variable and variable["valueFrom"]["secretKeyRef"]["name"] == f"{MODEL}-meter"
    assert "--unauthenticated" not in meter["args"]


def test_the_network_policy_admits_only_hearths_labelled_pods(cluster, installed):
    policy = cluster.get("networkpolicy", MODEL, "-n", NAMESPACE)
    spec = policy["spec"]
    assert spec["podSelector"]["matchLabels"] == {"hearth.dev/model": MODEL}
    assert spec["policyTypes"] == ["Ingress"]
    hearth_rule = spec["ingress"][0]
    (peer,) = hearth_rule["from"]
    assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "hearth-system"}
    assert peer["podSelector"]["matchLabels"] == {"hearth.dev/model-access": "true"}
    assert [p["port"] for p in hearth_rule["ports"]] == [8001]
    # The pods that must get through carry the label; the model's own pods are what it guards.
    admitted = cluster.get("pods", "-n", "hearth-system", "-l", "hearth.dev/model-access=true")["items"]
    components = {p["metadata"]["labels"]["app.kubernetes.io/component"] for p in admitted}
    assert components == {"operator", "gateway"}
