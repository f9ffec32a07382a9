"""Scenario: a spec change rolls the model's pods while clients keep asking, and no request
fails: the new pod serves before the old one goes, and the old one drains (preStop, SIGTERM,
in-flight requests finished) after the endpoints controller has taken it out of rotation."""

from __future__ import annotations

import json
import threading
import time

from test_a_quickstart import gateway_client, tenant_key

NAMESPACE = "hearth-demo"


def test_spec_change_rolls_out_with_no_failed_request(cluster, installed):
    client = gateway_client(cluster, tenant_key(cluster, NAMESPACE, "acme", "production"))
    before = {p["metadata"]["name"] for p in cluster.get("pods", "-n", NAMESPACE, "-l", "hearth.dev/model=smollm2-135m")["items"]}
    assert len(before) == 1
    results: list[str] = []
    stop = threading.Event()

    def ask() -> None:
        while not stop.is_set():
            try:
                reply = client.chat.completions.create(
                    model="smollm2-135m", messages=[{"role": "user", "content": "One word."}], max_tokens=4
                )
                results.append("ok" if reply.usage.completion_tokens > 0 else "empty")
            except Exception as error:  # every failure is recorded and fails the test below
                results.append(f"{type(error).__name__}: {error}")
            time.sleep(0.2)

    clients = [threading.Thread(target=ask) for _ in range(2)]
    for thread in clients:
        thread.start()
    try:
        time.sleep(2)
        patch = {"spec": {"engine": {"maxBatchSize": 6}}}
        cluster.kubectl("patch", "inferencemodel", "smollm2-135m", "-n", NAMESPACE, "--type=merge", "-p", json.dumps(patch))

        def rolled() -> bool:
            pods = cluster.get("pods", "-n", NAMESPACE, "-l", "hearth.dev/model=smollm2-135m")["items"]
            names = {p["metadata"]["name"] for p in pods}
            ready = [p for p in pods if any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))]
            return bool(names) and not (names & before) and len(ready) == 1

        cluster.wait_for("the old pod replaced by a ready new one", rolled, timeout=240, interval=1)
        time.sleep(2)
    finally:
        stop.set()
        for thread in clients:
            thread.join()
    failures = [r for r in results if r != "ok"]
    assert results.count("ok") >= 10, results
    assert not failures, f"{len(failures)} of {len(results)} requests failed during the rollout: {failures[:5]}"
    deployment = cluster.get("deployment", "smollm2-135m", "-n", NAMESPACE)
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--max-batch-size") + 1] == "6"
    ready = cluster.condition("inferencemodel", "smollm2-135m", NAMESPACE, "Ready")
    assert ready and ready["status"] == "True"
