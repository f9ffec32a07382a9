"""The cluster test's fixtures: a real control plane (e2e/cluster/plane.sh), kwok nodes (one
with 8 GPUs, one CPU node), the pod runner that plays their kubelet (podlet.py), and Hearth
installed by the README's cluster quickstart, run as written.

One plane serves the whole session; `HEARTH_CLUSTER_STATE` keeps its folder (logs, audit log,
pod logs) after the run for a person to read."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from kube import Kube
from podlet import Image, Podlet

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CLUSTER = ROOT / "e2e" / "cluster"
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "debug"
# Where the README's quickstart expects the model file on the node (a hostPath volume).
NODE_MODEL_DIR = Path("/var/lib/hearth/models")
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GPU_PRODUCT = "NVIDIA-H100-80GB-HBM3"
# The user Hearth's images run as (their Dockerfiles' USER).
RUNTIME_UID = 65532


def images(reference: str) -> Image | None:
    """The binary each Hearth image holds (its Dockerfile's ENTRYPOINT and CMD), built by cargo.
    The CUDA image has no binary here: this machine has no GPU and no CUDA build."""
    name, _, tag = reference.rpartition("/")[2].partition(":")
    if tag.endswith("-cuda"):
        return None
    if name == "hearth-operator":
        return Image([str(TARGET / "hearth-operator")], ["controller"])
    if name == "runtime-node":
        return Image([str(TARGET / "runtime-node")], ["serve", "--help"])
    return None


@dataclass
class Cluster:
    """A running plane: its folder, binaries and a client; helpers run kubectl and Helm in it."""

    state: Path
    bin: Path
    kubeconfig: Path
    kube: Kube
    podlet: Podlet
    timings: dict[str, float]

    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig), "PATH": f"{self.bin}:{os.environ['PATH']}"}

    def run(self, *args: str, check: bool = True, timeout: float = 300, input: str | None = None) -> subprocess.CompletedProcess:
        result = subprocess.run(
            list(args), env=self.env(), capture_output=True, text=True, timeout=timeout, cwd=ROOT, input=input
        )
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return result

    def kubectl(self, *args: str, **kwargs) -> str:
        return self.run(str(self.bin / "kubectl"), *args, **kwargs).stdout

    def get(self, *args: str) -> dict:
        return json.loads(self.kubectl("get", *args, "-o", "json"))

    def wait_for(self, what: str, predicate, timeout: float = 120, interval: float = 0.5):
        """Polls `predicate` until it returns something truthy and returns that; fails naming
        `what` and the last answer (an AssertionError inside `predicate` counts as "not yet")."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                last = predicate()
            except AssertionError as error:
                last = error
            else:
                if last:
                    return last
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")

    def condition(self, kind: str, name: str, namespace: str, condition: str) -> dict | None:
        obj = json.loads(self.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False) or "{}")
        for item in obj.get("status", {}).get("conditions") or []:
            if item["type"] == condition:
                return item
        return None

    def pod_logs(self, namespace: str, prefix: str) -> str:
        return self.podlet.pod_logs(namespace, f"{prefix}*")


def node_manifest(name: str, labels: dict, taints: list) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {"kubernetes.io/hostname": name, "type": "kwok", **labels},
            "annotations": {"kwok.x-k8s.io/node": "fake"},
        },
        "spec": {"taints": taints},
    }


def add_node(cluster: Cluster, name: str, capacity: dict, labels: dict, taints: list) -> None:
    """Creates a node kwok keeps Ready, then gives it its capacity (kwok's stage keeps it)."""
    cluster.kubectl("apply", "-f", "-", input=json.dumps(node_manifest(name, labels, taints)))
    status = {"status": {"capacity": capacity, "allocatable": capacity}}
    cluster.kubectl("patch", "node", name, "--subresource=status", "--type=merge", "-p", json.dumps(status))


def build_podnet(out: Path) -> Path:
    library = out / "podnet.so"
    subprocess.run(
        ["cc", "-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-o", str(library), str(CLUSTER / "podnet.c"), "-ldl"],
        check=True,
    )
    return library


def add_storage(cluster: Cluster, name: str, size: str, owner: int) -> None:
    """A pre-provisioned hostPath volume without a class, as a cluster's storage offers: the
    chart's billing claim (no storageClassName) binds to it."""
    path = cluster.state / "storage" / name
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, owner, owner)
    volume = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name},
        "spec": {
            "capacity": {"storage": size},
            "accessModes": ["ReadWriteOnce", "ReadWriteMany"],
            "persistentVolumeReclaimPolicy": "Retain",
            "hostPath": {"path": str(path), "type": "Directory"},
        },
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(volume))


def start_cluster(state: Path) -> Cluster:
    """Builds the tools (once per machine), starts a plane in `state`, adds the nodes and
    storage, and starts the pod runner."""
    if os.environ.get("HEARTH_CLUSTER_NETNS") != "inside":
        raise RuntimeError("the cluster test runs in a network namespace of its own: e2e/cluster/netns.sh COMMAND")
    timings: dict[str, float] = {}
    started = time.monotonic()
    bin_dir = Path(subprocess.run([str(CLUSTER / "build.sh")], capture_output=True, text=True, check=True).stdout.strip())
    timings["tools (build.sh)"] = time.monotonic() - started
    state.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    subprocess.run([str(CLUSTER / "plane.sh"), "start", str(state)], check=True, capture_output=True, text=True)
    timings["plane start"] = time.monotonic() - started
    kubeconfig = state / "kubeconfig"
    kube = Kube(kubeconfig)
    server = re.search(r"https://([\d.]+):(\d+)", kubeconfig.read_text())
    podlet = Podlet(
        kube,
        {"cpu-node", "gpu-node", "gpu-a100-node"},
        images,
        state / "pods",
        build_podnet(state),
        server.group(1),
        int(server.group(2)),
    )
    cluster = Cluster(state, bin_dir, kubeconfig, kube, podlet, timings)
    add_node(cluster, "cpu-node", {"cpu": "16", "memory": "64Gi", "pods": "110"}, {}, [])
    add_node(
        cluster,
        "gpu-node",
        {"cpu": "96", "memory": "1Ti", "pods": "110", "nvidia.com/gpu": "8"},
        {"nvidia.com/gpu.product": GPU_PRODUCT, "nvidia.com/gpu.count": "8"},
        [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}],
    )
    add_node(
        cluster,
        "gpu-a100-node",
        {"cpu": "64", "memory": "512Gi", "pods": "110", "nvidia.com/gpu": "8"},
        {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB", "nvidia.com/gpu.count": "8"},
        [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}],
    )
    for index in range(2):
        add_storage(cluster, f"local-volume-{index}", "10Gi", RUNTIME_UID)
    cluster.kubectl("wait", "node", "--all", "--for=condition=Ready", "--timeout=60s")
    podlet.start()
    return cluster


def stop_cluster(cluster: Cluster) -> None:
    cluster.podlet.stop()
    subprocess.run([str(CLUSTER / "plane.sh"), "stop", str(cluster.state)], check=False)


@pytest.fixture(scope="session")
def cluster():
    keep = os.environ.get("HEARTH_CLUSTER_STATE")
    state = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="hearth-cluster-"))
    cluster = start_cluster(state)
    try:
        yield cluster
    finally:
        stop_cluster(cluster)
        print("\ncluster test timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in cluster.timings.items()))
        if not keep:
            shutil.rmtree(state, ignore_errors=True)


def smollm2_gguf() -> Path:
    path = os.environ.get("HEARTH_SMOLLM2_GGUF")
    if not path or not Path(path).is_file():
        pytest.fail("HEARTH_SMOLLM2_GGUF must name the SmolLM2 GGUF file (the Makefile sets it)")
    return Path(path)


def quickstart_script() -> str:
    """The README's cluster quickstart: the shell block after the `<!-- cluster-quickstart -->` mark."""
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- cluster-quickstart -->\s*```sh\n(.*?)```", readme, re.S)
    assert match, "README.md has no cluster quickstart block"
    return match.group(1)


@pytest.fixture(scope="session")
def installed(cluster):
    """Hearth installed and serving by the README's quickstart, run as written. The node's model
    folder (a hostPath the quickstart's volume names) gets the SmolLM2 file first, as a person
    copies it onto their node."""
    created_dir = not NODE_MODEL_DIR.exists()
    NODE_MODEL_DIR.mkdir(parents=True, exist_ok=True)
    copy = NODE_MODEL_DIR / GGUF_NAME
    placed = not copy.exists()
    if placed:
        try:
            os.link(smollm2_gguf(), copy)
        except OSError:  # another filesystem
            shutil.copyfile(smollm2_gguf(), copy)
    started = time.monotonic()
    result = cluster.run("bash", "-euo", "pipefail", "-c", quickstart_script(), check=False, timeout=900)
    cluster.timings["quickstart"] = time.monotonic() - started
    if result.returncode != 0:
        raise AssertionError(
            f"the README quickstart failed ({result.returncode}):\n{result.stdout}\n{result.stderr}\n"
            + cluster.pod_logs("hearth-system", "")
            + cluster.pod_logs("hearth-demo", "")
        )
    try:
        yield result.stdout
    finally:
        if placed:
            copy.unlink()
        if created_dir:
            shutil.rmtree(NODE_MODEL_DIR, ignore_errors=True)
