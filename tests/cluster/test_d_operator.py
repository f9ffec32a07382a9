"""Scenarios: the operator killed with SIGKILL and restarted by its pod leaves no duplicate
child and the statuses as they were; with two replicas (a `helm upgrade`) one leads, a standby
stops within 2 s of SIGTERM, and the standby takes over when the leader's pod goes."""

from __future__ import annotations

import os
import signal
import time

NAMESPACE = "hearth-demo"


def operator_runs(cluster) -> dict[str, object]:
    """The running operator containers by pod name (the pod runner's processes)."""
    return {
        run.pod_name: container
        for run in list(cluster.podlet.pods.values())
        if run.namespace == "hearth-system" and run.pod_name.startswith("hearth-operator-") and not run.deleting.is_set()
        for container in run.containers
        if container.name == "operator" and container.running()
    }


def children(cluster) -> dict[str, int]:
    counts = {}
    for kind in ("deployments", "services", "poddisruptionbudgets"):
        items = cluster.get(kind, "-n", NAMESPACE, "-l", "app.kubernetes.io/managed-by=hearth-operator")["items"]
        counts[kind] = len(items)
        names = [i["metadata"]["name"] for i in items]
        assert len(names) == len(set(names))
    return counts


def lease_holder(cluster) -> str:
    return cluster.get("lease", "hearth-operator-leader", "-n", "hearth-system")["spec"]["holderIdentity"]


def test_sigkill_and_restart_leave_no_duplicate_and_status_intact(cluster, installed):
    before_children = children(cluster)
    before_status = cluster.get("inferencemodel", "smollm2-135m", "-n", NAMESPACE)["status"]
    (name, container), = operator_runs(cluster).items()
    restarts = container.restarts
    os.kill(container.process.pid, signal.SIGKILL)
    cluster.wait_for("the operator restarted by its pod", lambda: container.restarts > restarts and container.running(), timeout=60)
    cluster.wait_for("the restarted operator leading", lambda: lease_holder(cluster) == name, timeout=60)
    # Give the new leader a full pass over every object.
    time.sleep(5)
    assert children(cluster) == before_children
    after = cluster.get("inferencemodel", "smollm2-135m", "-n", NAMESPACE)["status"]
    ready = lambda status: next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready(after)["status"] == "True"
    assert ready(after)["lastTransitionTime"] == ready(before_status)["lastTransitionTime"]


def test_two_replicas_one_leads_a_standby_stops_fast_and_takes_over(cluster, installed):
    cluster.run(
        str(cluster.bin / "helm"), "upgrade", "hearth", "charts/hearth", "--namespace", "hearth-system",
        "--reuse-values", "--set", "operator.replicas=2", "--set", "billing.persistence.enabled=false",
        "--wait", "--timeout", "5m", timeout=400,
    )
    runs = cluster.wait_for("two operator replicas running", lambda: r if len(r := operator_runs(cluster)) == 2 else None, timeout=120)
    leader = cluster.wait_for("a leader among the replicas", lambda: (h := lease_holder(cluster)) in runs and h)
    (standby,) = [name for name in runs if name != leader]

    container = runs[standby]
    started = time.monotonic()
    os.kill(container.process.pid, signal.SIGTERM)
    while container.process is not None and container.process.poll() is None and time.monotonic() - started < 10:
        time.sleep(0.02)
    assert time.monotonic() - started < 2.0, "a standby operator took more than 2 s to stop on SIGTERM"
    cluster.wait_for("the standby restarted by its pod", lambda: standby in operator_runs(cluster), timeout=60)

    # The leader's pod goes (a node drain, a rollout): the standby takes the lease once it expires.
    cluster.kubectl("delete", "pod", leader, "-n", "hearth-system", "--wait=false")
    cluster.wait_for("the standby leading", lambda: lease_holder(cluster) == standby, timeout=90)
    # The new leader reconciles: a spec change reaches the Deployment.
    cluster.kubectl("patch", "inferencemodel", "smollm2-135m", "-n", NAMESPACE, "--type=merge", "-p",
                    '{"spec": {"engine": {"maxContextTokens": 1536}}}')

    def applied() -> bool:
        args = cluster.get("deployment", "smollm2-135m", "-n", NAMESPACE)["spec"]["template"]["spec"]["containers"][0]["args"]
        return args[args.index("--max-context-tokens") + 1] == "1536"

    cluster.wait_for("the new leader to apply the change", applied, timeout=60)
    cluster.wait_for("the model Ready again", lambda: (c := cluster.condition("inferencemodel", "smollm2-135m", NAMESPACE, "Ready")) and c["status"] == "True" and c, timeout=240)
