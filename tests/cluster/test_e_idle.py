"""Scenario: an idle Hearth leaves the cluster alone. Over 60 s with no change, no object Hearth
manages changes its resourceVersion, the apiserver's audit log shows no write by Hearth's
ServiceAccounts (but the leader's Lease renewals) and a bounded number of reads; and a field
the server never returns (a mutating admission policy rewrites it) causes no write loop."""

from __future__ import annotations

import datetime
import json
import time
from collections import Counter

NAMESPACE = "hearth-demo"
HEARTH_USERS = "system:serviceaccount:hearth-system:"
WRITES = {"create", "update", "patch", "delete", "deletecollection"}
IDLE_SECONDS = 60


def audit_events(cluster, since: float, until: float) -> list[dict]:
    events = []
    with open(cluster.state / "audit.log") as log:
        for line in log:
            event = json.loads(line)
            stamp = datetime.datetime.fromisoformat(event["requestReceivedTimestamp"].replace("Z", "+00:00")).timestamp()
            if since <= stamp <= until and event["user"]["username"].startswith(HEARTH_USERS):
                events.append(event)
    return events


def describe(event: dict) -> str:
    ref = event.get("objectRef", {})
    return f"{event['user']['username'].removeprefix(HEARTH_USERS)} {event['verb']} {ref.get('resource')}/{ref.get('name', '')}"


def versions(cluster) -> dict[str, str]:
    kinds = "inferencemodels,tenants,deployments,services,poddisruptionbudgets,horizontalpodautoscalers,secrets"
    items = cluster.get(kinds, "-n", NAMESPACE)["items"] + cluster.get("tiers")["items"]
    return {f"{i['kind']}/{i['metadata']['name']}": i["metadata"]["resourceVersion"] for i in items}


# Longer than a billing pass (the chart's default 30 s): usage of the earlier scenarios' requests
# reaches the Tenants' status within one pass.
QUIET_SECONDS = 40


def settle(cluster) -> None:
    """Waits until Hearth has written nothing for QUIET_SECONDS (earlier scenarios have landed)."""

    def quiet() -> bool:
        now = time.time()
        writes = [e for e in audit_events(cluster, now - QUIET_SECONDS, now)
                  if e["verb"] in WRITES and e["objectRef"].get("resource") != "leases"]
        return not writes

    cluster.wait_for("Hearth to go quiet", quiet, timeout=240, interval=2)


def test_idle_hearth_writes_nothing_and_reads_little(cluster, installed):
    settle(cluster)
    before = versions(cluster)
    since = time.time()
    time.sleep(IDLE_SECONDS)
    until = time.time()
    after = versions(cluster)
    changed = {k: (before.get(k), v) for k, v in after.items() if before.get(k) != v}
    events = audit_events(cluster, since, until)
    writes = [describe(e) for e in events if e["verb"] in WRITES and e["objectRef"].get("resource") != "leases"]
    assert not writes, f"Hearth wrote while idle: {Counter(writes).most_common(10)}"
    # Quiet because idle, not because stopped: the leader renewed its Lease throughout.
    renewals = [e for e in events if e["verb"] == "update" and e["objectRef"].get("resource") == "leases"]
    assert len(renewals) >= IDLE_SECONDS // 10, f"the operator renewed its Lease {len(renewals)} times in {IDLE_SECONDS} s"
    assert not changed, f"objects changed while idle: {changed}"
    # Watches stay open; what remains is the leader's renewals and periodic resyncs.
    per_minute = len(events) * 60 / (until - since)
    assert per_minute < 150, f"{per_minute:.0f} API calls a minute while idle: {Counter(map(describe, events)).most_common(10)}"


def test_a_field_the_server_never_returns_causes_no_write_loop(cluster, installed):
    # The policy rewrites a field of every Deployment the operator applies: what the server
    # keeps never equals what the operator sent.
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingAdmissionPolicy",
        "metadata": {"name": "hearth-test-rewrite-grace"},
        "spec": {
            "failurePolicy": "Fail",
            "reinvocationPolicy": "Never",
            "matchConstraints": {"resourceRules": [{"apiGroups": ["apps"], "apiVersions": ["v1"],
                                                    "operations": ["CREATE", "UPDATE"], "resources": ["deployments"]}]},
            "matchConditions": [{"name": "hearth", "expression": "object.metadata.?labels[?'app.kubernetes.io/managed-by'].orValue('') == 'hearth-operator'"}],
            "mutations": [{"patchType": "ApplyConfiguration", "applyConfiguration": {"expression":
                "Object{spec: Object.spec{template: Object.spec.template{spec: Object.spec.template.spec{terminationGracePeriodSeconds: 119}}}}"}}],
        },
    }
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingAdmissionPolicyBinding",
        "metadata": {"name": "hearth-test-rewrite-grace"},
        "spec": {"policyName": "hearth-test-rewrite-grace"},
    }
    for manifest in (policy, binding):
        cluster.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(manifest))
    probe = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "policy-probe", "namespace": NAMESPACE, "labels": {"app.kubernetes.io/managed-by": "hearth-operator"}},
        "spec": {"selector": {"matchLabels": {"app": "probe"}}, "template": {
            "metadata": {"labels": {"app": "probe"}}, "spec": {"containers": [{"name": "c", "image": "probe"}]}}},
    }

    def policy_active() -> bool:
        dry_run = cluster.kubectl("create", "--dry-run=server", "-o", "json", "-f", "-", input=json.dumps(probe))
        return json.loads(dry_run)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 119

    cluster.wait_for("the mutating admission policy to take effect", policy_active, timeout=30)
    try:
        # A spec change makes the operator apply the Deployment; the policy then rewrites it.
        since = time.time()
        cluster.kubectl("patch", "inferencemodel", "smollm2-135m", "-n", NAMESPACE, "--type=merge", "-p",
                        '{"spec": {"engine": {"maxContextTokens": 1280}}}')
        cluster.wait_for(
            "the rewritten Deployment",
            lambda: cluster.get("deployment", "smollm2-135m", "-n", NAMESPACE)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 119,
            timeout=60,
        )
        time.sleep(45)
        patches = [
            e for e in audit_events(cluster, since, time.time())
            if e["verb"] in WRITES and e["objectRef"].get("resource") == "deployments"
            and e["objectRef"].get("subresource") is None
        ]
        assert len(patches) <= 3, f"{len(patches)} writes of the Deployment in 45 s: {[describe(e) for e in patches]}"
    finally:
        cluster.kubectl("delete", "mutatingadmissionpolicybinding,mutatingadmissionpolicy", "hearth-test-rewrite-grace", check=False)
