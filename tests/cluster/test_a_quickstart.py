"""Scenario: the README's quickstart on a real control plane — Helm installs the chart, the
examples' tiers and tenants and a CPU model serving SmolLM2 — then the official openai client
through the gateway, and the usage in the Tenant's status and its invoice."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request

import openai


def endpoint_ips(cluster, namespace: str, service: str) -> list[str]:
    """Ready addresses of a Service, from its EndpointSlices (as in-cluster clients reach it)."""
    slices = cluster.get("endpointslices", "-n", namespace, "-l", f"kubernetes.io/service-name={service}")
    return [
        address
        for item in slices["items"]
        for endpoint in item.get("endpoints") or []
        if endpoint.get("conditions", {}).get("ready", True)
        for address in endpoint["addresses"]
    ]


def tenant_key(cluster, namespace: str, tenant: str, key: str) -> str:
    secret = cluster.get("secret", f"{tenant}.apikey.{key}", "-n", namespace)
    return base64.b64decode(secret["data"]["api-key"]).decode()


def gateway_client(cluster, key: str) -> openai.OpenAI:
    (ip,) = cluster.wait_for("one ready gateway endpoint", lambda: endpoint_ips(cluster, "hearth-system", "hearth-gateway"))
    return openai.OpenAI(base_url=f"http://{ip}:8080/v1", api_key=key, max_retries=0, timeout=120)


def test_quickstart_answers_with_usage(cluster, installed):
    answer = json.loads(installed.strip().splitlines()[-1])
    assert answer["object"] == "chat.completion"
    assert answer["choices"][0]["message"]["content"].strip()
    assert answer["usage"]["completion_tokens"] > 0


def test_openai_client_through_the_gateway_is_metered_and_billed(cluster, installed):
    client = gateway_client(cluster, tenant_key(cluster, "hearth-demo", "hobbyist", "default"))
    models = [m.id for m in client.models.list()]
    assert "smollm2-135m" in models
    completion = client.chat.completions.create(
        model="smollm2-135m",
        messages=[{"role": "user", "content": "Name a colour."}],
        max_tokens=8,
        temperature=0,
    )
    assert completion.usage.prompt_tokens > 0 and completion.usage.completion_tokens > 0
    stream = client.chat.completions.create(
        model="smollm2-135m",
        messages=[{"role": "user", "content": "Count to three."}],
        max_tokens=8,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0

    # The billing aggregator pulls the meters and publishes the period's usage on the Tenant.
    def usage():
        tenant = cluster.get("tenant", "hobbyist", "-n", "hearth-demo")
        usage = tenant.get("status", {}).get("usage") or {}
        return usage if usage.get("requests", 0) >= 3 else None

    published = cluster.wait_for("Tenant hobbyist's status.usage to count 3 requests", usage, timeout=150, interval=2)
    assert published["completionTokens"] > 0 and published["promptTokens"] > 0

    (operator_ip,) = endpoint_ips(cluster, "hearth-system", "hearth-billing")
    url = f"http://{operator_ip}:8090/billing/invoices/hearth-demo/hobbyist"
    try:
        urllib.request.urlopen(url, timeout=10)
    except urllib.error.HTTPError as error:
        assert error.code == 401, "invoices need the billing token"
    else:
        raise AssertionError("an invoice was served without the billing token")
    token = base64.b64decode(cluster.get("secret", "hearth-billing-token", "-n", "hearth-system")["data"]["token"]).decode()
    request = urllib.request.Request(url, headers={"authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as reply:
        invoice = json.loads(reply.read())
    assert json.dumps(invoice).count("smollm2-135m") >= 1, invoice


def test_gateway_metrics_are_on_their_own_port_only(cluster, installed):
    (ip,) = endpoint_ips(cluster, "hearth-system", "hearth-gateway")
    try:
        urllib.request.urlopen(f"http://{ip}:8080/metrics", timeout=10)
    except urllib.error.HTTPError as error:
        assert error.code == 404
    else:
        raise AssertionError("the public port serves /metrics")
    with urllib.request.urlopen(f"http://{ip}:9090/metrics", timeout=10) as reply:
        assert "hearth_gateway_requests_total" in reply.read().decode()
    service = cluster.get("service", "hearth-gateway", "-n", "hearth-system")
    assert [p["port"] for p in service["spec"]["ports"]] == [80], "no metrics port on the Service"


def test_a_wrong_key_gets_an_openai_shaped_401(cluster, installed):
    client = gateway_client(cluster, "hth_not-a-key")
    try:
        client.models.list()
    except openai.AuthenticationError as error:
        assert error.status_code == 401
        assert error.body and "message" in error.body
    else:
        raise AssertionError("a wrong key was accepted")
