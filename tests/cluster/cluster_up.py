"""`make cluster`: the cluster test's control plane, nodes and pod runner, kept up for a person
to explore until Ctrl-C (state in the folder given, default .hearth-cluster/)."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from conftest import start_cluster, stop_cluster


def main() -> None:
    state = Path(sys.argv[1] if len(sys.argv) > 1 else ".hearth-cluster").resolve()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    cluster = start_cluster(state)
    print(
        "The plane lives in a network namespace of its own; enter it from another shell with\n"
        f"  nsenter --target {os.getpid()} --net\nthen:",
        flush=True,
    )
    print(f"export KUBECONFIG={cluster.kubeconfig} PATH={cluster.bin}:$PATH", flush=True)
    print(
        "Nodes cpu-node, gpu-node (8 H100) and gpu-a100-node (8 A100) are up; their pods run as local "
        f"processes (logs in {state / 'pods'}). Ctrl-C stops the plane.",
        file=sys.stderr,
        flush=True,
    )
    try:
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        stop_cluster(cluster)


if __name__ == "__main__":
    main()
