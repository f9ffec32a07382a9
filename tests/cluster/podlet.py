"""The cluster test's kubelet: runs the pods bound to its nodes as local processes.

kwok keeps the test's nodes Ready; no container runtime exists here. For every pod scheduled on
one of its nodes the pod runner does what a kubelet does, with the binaries the images hold:
- gives the pod an address of its own (10.244.x.y, routed to loopback in the test's network
  namespace: see e2e/cluster/netns.sh) and reports it as the pod IP;
- prepares its volumes (emptyDir, a PersistentVolumeClaim's hostPath volume, ConfigMap, Secret
  and the projected ServiceAccount token with the cluster CA) and mounts them at their paths in
  a mount namespace of the container's own, with the root filesystem read-only where the
  container asks for it;
- starts the containers with exactly the command, args and env their spec names (`$(VAR)`
  expanded as the kubelet does), as the user the security context names; native sidecars first,
  then init containers, then the containers; restarts them by the pod's restart policy;
- runs startup, readiness and liveness probes and reports container and pod status;
- on deletion runs preStop hooks, sends SIGTERM, waits up to the grace period, then removes the
  pod object;
- writes a kwok PortForward object for the pod, so `kubectl port-forward` reaches its ports
  through the apiserver and kwok's kubelet API as it would on a real node.

Each container process has `podnet.so` preloaded (e2e/cluster/podnet.c): a bind to 0.0.0.0
binds the pod IP, a bind to 127.0.0.1 a loopback address only the pod's containers use, and a
connect to 127.0.0.1 reaches the pod (its declared ports at the pod IP, others on that loopback
address), so containers see the network a pod has. An image the runner has no binary for (the CUDA build
on this CPU machine) is reported as `ErrImagePull` with the reason, never run.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from kube import ApiError, Kube

HERE = Path(__file__).resolve().parent
EXEC_HELPER = HERE / "podlet_exec.py"


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Image:
    """What an image holds: its entrypoint and default arguments (the Dockerfile's)."""

    entrypoint: list[str]
    cmd: list[str] = field(default_factory=list)


@dataclass
class Probe:
    spec: dict
    successes: int = 0
    failures: int = 0
    next_at: float = 0.0


@dataclass
class ContainerRun:
    """One container of a pod: its spec, its process and what its status reports."""

    spec: dict
    sidecar: bool = False
    process: subprocess.Popen | None = None
    started_at: str | None = None
    started: bool = False
    ready: bool = False
    restarts: int = 0
    last_terminated: dict | None = None
    finished: dict | None = None
    waiting: tuple[str, str] | None = None
    restart_after: float = 0.0
    probes: dict[str, Probe] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec["name"]

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


_VAR = re.compile(r"\$\((\w+)\)|\$\$")


def expand(text: str, env: dict[str, str]) -> str:
    """The kubelet's `$(VAR)` expansion: known names are replaced, `$$` escapes, unknown stay."""

    def replace(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return _VAR.sub(replace, text)


class PodRun(threading.Thread):
    """Runs one pod until it is deleted (or the runner stops)."""

    def __init__(self, podlet: "Podlet", pod: dict, ip: str):
        meta = pod["metadata"]
        super().__init__(name=f"pod-{meta['namespace']}/{meta['name']}", daemon=True)
        self.podlet, self.kube = podlet, podlet.kube
        self.pod, self.ip = pod, ip
        self.namespace, self.pod_name, self.uid = meta["namespace"], meta["name"], meta["uid"]
        self.path = f"/api/v1/namespaces/{self.namespace}/pods/{self.pod_name}"
        self.dir = podlet.state_dir / f"{self.namespace}.{self.pod_name}.{self.uid[:8]}"
        self.deleting = threading.Event()
        self.stopped = threading.Event()
        spec = pod["spec"]
        self.init = [ContainerRun(c, sidecar=c.get("restartPolicy") == "Always") for c in spec.get("initContainers", [])]
        self.containers = [ContainerRun(c) for c in spec["containers"]]
        self.ports = sorted({p["containerPort"] for c in self.init + self.containers for p in c.spec.get("ports", [])})
        self.volumes: dict[str, Path] = {}
        self.failure: str | None = None
        self.last_status: str | None = None
        self.start_time = now()

    # ---------------------------------------------------------------------------- volumes

    def prepare_volumes(self) -> None:
        security = self.pod["spec"].get("securityContext", {})
        fs_group = security.get("fsGroup")
        for volume in self.pod["spec"].get("volumes", []):
            name = volume["name"]
            if "persistentVolumeClaim" in volume:
                self.volumes[name] = self.claim_path(volume["persistentVolumeClaim"]["claimName"])
                continue
            target = self.dir / "volumes" / name
            target.mkdir(parents=True, exist_ok=True)
            if "configMap" in volume or "secret" in volume:
                self.write_items(target, volume)
            elif "projected" in volume:
                for source in volume["projected"]["sources"]:
                    self.write_projected(target, source)
            elif "emptyDir" not in volume:
                raise RuntimeError(f"volume {name}: this pod runner supports emptyDir, PVC, ConfigMap, Secret, projected")
            self.volumes[name] = target
            if fs_group is not None:
                for path in [target, *target.rglob("*")]:
                    os.chown(path, -1, fs_group)
                    path.chmod(path.stat().st_mode | 0o070)

    def claim_path(self, claim: str) -> Path:
        pvc = self.kube.get(f"/api/v1/namespaces/{self.namespace}/persistentvolumeclaims/{claim}")
        volume_name = pvc["spec"].get("volumeName")
        if not volume_name or pvc.get("status", {}).get("phase") != "Bound":
            raise RuntimeError(f"claim {claim} is not bound")
        pv = self.kube.get(f"/api/v1/persistentvolumes/{volume_name}")
        source = pv["spec"].get("hostPath") or pv["spec"].get("local")
        if not source:
            raise RuntimeError(f"volume {volume_name}: only hostPath and local volumes can be mounted here")
        return Path(source["path"])

    def write_items(self, target: Path, volume: dict) -> None:
        if "configMap" in volume:
            source = volume["configMap"]
            data = self.kube.get(f"/api/v1/namespaces/{self.namespace}/configmaps/{source['name']}").get("data", {})
            data = {k: v.encode() for k, v in data.items()}
        else:
            source = volume["secret"]
            data = self.kube.get(f"/api/v1/namespaces/{self.namespace}/secrets/{source['secretName']}").get("data", {})
            data = {k: base64.b64decode(v) for k, v in data.items()}
        items = source.get("items") or [{"key": k, "path": k} for k in data]
        for item in items:
            path = target / item["path"]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data[item["key"]])

    def write_projected(self, target: Path, source: dict) -> None:
        if "serviceAccountToken" in source:
            token_source = source["serviceAccountToken"]
            account = self.pod["spec"].get("serviceAccountName", "default")
            request = {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {
                    "audiences": [token_source["audience"]] if token_source.get("audience") else None,
                    "expirationSeconds": token_source.get("expirationSeconds", 3607),
                    "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": self.pod_name, "uid": self.uid},
                },
            }
            answer = self.kube.request(
                "POST", f"/api/v1/namespaces/{self.namespace}/serviceaccounts/{account}/token", request
            )
            (target / token_source["path"]).write_text(answer["status"]["token"])
        elif "configMap" in source:
            self.write_items(target, {"configMap": source["configMap"]})
        elif "downwardAPI" in source:
            for item in source["downwardAPI"]["items"]:
                (target / item["path"]).write_text(self.field_value(item["fieldRef"]["fieldPath"]))
        elif "secret" in source:
            self.write_items(target, {"secret": {**source["secret"], "secretName": source["secret"]["name"]}})

    def publish_port_forward(self) -> None:
        if not self.ports:
            return
        forward = {
            "apiVersion": "kwok.x-k8s.io/v1alpha1",
            "kind": "PortForward",
            "metadata": {
                "name": self.pod_name,
                "namespace": self.namespace,
                "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": self.pod_name, "uid": self.uid}],
            },
            "spec": {"forwards": [{"ports": [p], "target": {"port": p, "address": self.ip}} for p in self.ports]},
        }
        self.kube.request(
            "PATCH",
            f"/apis/kwok.x-k8s.io/v1alpha1/namespaces/{self.namespace}/portforwards/{self.pod_name}",
            forward,
            content_type="application/apply-patch+yaml",
            query={"fieldManager": "hearth-podlet", "force": "true"},
        )

    # ---------------------------------------------------------------------------- processes

    def field_value(self, path: str) -> str:
        meta, spec = self.pod["metadata"], self.pod["spec"]
        values = {
            "metadata.name": self.pod_name,
            "metadata.namespace": self.namespace,
            "metadata.uid": self.uid,
            "spec.nodeName": spec.get("nodeName", ""),
            "spec.serviceAccountName": spec.get("serviceAccountName", "default"),
            "status.podIP": self.ip,
            "status.hostIP": "127.0.0.1",
        }
        if path in values:
            return values[path]
        label = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
        if label:
            return meta.get(label.group(1), {}).get(label.group(2), "")
        raise RuntimeError(f"fieldRef {path} is not supported by this pod runner")

    def environment(self, container: dict) -> dict[str, str]:
        env = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOSTNAME": self.pod_name,
            "KUBERNETES_SERVICE_HOST": self.podlet.api_host,
            "KUBERNETES_SERVICE_PORT": str(self.podlet.api_port),
        }
        for source in container.get("envFrom", []):
            kind = "configMapRef" if "configMapRef" in source else "secretRef"
            name = source[kind]["name"]
            resource = "configmaps" if kind == "configMapRef" else "secrets"
            data = self.kube.get(f"/api/v1/namespaces/{self.namespace}/{resource}/{name}").get("data", {})
            for key, value in data.items():
                env[source.get("prefix", "") + key] = base64.b64decode(value).decode() if kind == "secretRef" else value
        for item in container.get("env", []):
            if "value" in item:
                env[item["name"]] = expand(item["value"], env)
            elif "valueFrom" in item:
                env[item["name"]] = self.env_from(item["valueFrom"])
            else:
                env[item["name"]] = ""
        env["HEARTH_POD_IP"] = self.ip
        env["HEARTH_POD_PORTS"] = ",".join(str(p) for p in self.ports)
        # The pod's own loopback: 127.x.y.z for pod IP 10.x.y.z (127.0.0.0/8 is all loopback).
        env["HEARTH_POD_LOOPBACK"] = "127." + self.ip.split(".", 1)[1]
        env["HEARTH_HOST_PORTS"] = str(self.podlet.api_port)
        env["LD_PRELOAD"] = str(self.podlet.podnet)
        return env

    def env_from(self, source: dict) -> str:
        if "fieldRef" in source:
            return self.field_value(source["fieldRef"]["fieldPath"])
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            secret = self.kube.get(f"/api/v1/namespaces/{self.namespace}/secrets/{ref['name']}")
            return base64.b64decode(secret["data"][ref["key"]]).decode()
        if "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            return self.kube.get(f"/api/v1/namespaces/{self.namespace}/configmaps/{ref['name']}")["data"][ref["key"]]
        raise RuntimeError(f"env source {source} is not supported by this pod runner")

    def start_container(self, run: ContainerRun) -> None:
        spec = run.spec
        image = self.podlet.image(spec["image"])
        if image is None:
            run.waiting = ("ErrImagePull", f"no binary for image {spec['image']} on this machine")
            return
        env = self.environment(spec)
        command = spec.get("command") or image.entrypoint
        args = spec.get("args") if "args" in spec or "command" in spec else image.cmd
        argv = [expand(part, env) for part in [*command, *(args or [])]]
        security = {**self.pod["spec"].get("securityContext", {}), **spec.get("securityContext", {})}
        plan = {
            "argv": argv,
            "env": env,
            "mounts": [
                {"source": str(self.volumes[m["name"]] / m.get("subPath", "")), "target": m["mountPath"],
                 "readOnly": bool(m.get("readOnly"))}
                for m in spec.get("volumeMounts", [])
            ],
            "readOnlyRoot": bool(security.get("readOnlyRootFilesystem")),
            "uid": security.get("runAsUser"),
            "gid": security.get("runAsGroup"),
            "groups": [security["fsGroup"]] if security.get("fsGroup") is not None else [],
            "workingDir": spec.get("workingDir", "/"),
        }
        plan_path = self.dir / f"{run.name}.plan.json"
        plan_path.write_text(json.dumps(plan))
        log = open(self.dir / f"{run.name}.log", "ab")
        log.write(f"--- {now()} podlet: starting {argv}\n".encode())
        log.flush()
        run.process = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "--", sys.executable, str(EXEC_HELPER), str(plan_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        run.started_at, run.started, run.ready, run.waiting, run.finished = now(), False, False, None, None
        run.probes = {kind: Probe(spec[kind]) for kind in ("startupProbe", "readinessProbe", "livenessProbe") if kind in spec}
        run.started = "startupProbe" not in run.probes
        self.podlet.record("start", self, run.name, argv)

    # ---------------------------------------------------------------------------- probes

    def probe_ok(self, run: ContainerRun, probe: dict) -> bool:
        timeout = probe.get("timeoutSeconds", 1)
        if "httpGet" in probe:
            action = probe["httpGet"]
            port = self.resolve_port(run, action["port"])
            url = f"http://{self.ip}:{port}{action.get('path', '/')}"
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    return 200 <= response.status < 400
            except Exception:
                return False
        if "tcpSocket" in probe:
            try:
                socket.create_connection((self.ip, self.resolve_port(run, probe["tcpSocket"]["port"])), timeout).close()
                return True
            except OSError:
                return False
        raise RuntimeError(f"probe {probe} is not supported by this pod runner")

    def resolve_port(self, run: ContainerRun, port: int | str) -> int:
        if isinstance(port, int) or str(port).isdigit():
            return int(port)
        return next(p["containerPort"] for p in run.spec.get("ports", []) if p.get("name") == port)

    def run_probes(self, run: ContainerRun) -> None:
        clock = time.monotonic()
        for kind, probe in run.probes.items():
            if kind != "startupProbe" and not run.started:
                continue
            if kind == "startupProbe" and run.started:
                continue
            spec = probe.spec
            if probe.next_at == 0.0:
                probe.next_at = clock + spec.get("initialDelaySeconds", 0)
            if clock < probe.next_at:
                continue
            probe.next_at = clock + spec.get("periodSeconds", 10)
            if self.probe_ok(run, spec):
                probe.successes, probe.failures = probe.successes + 1, 0
                if probe.successes >= spec.get("successThreshold", 1):
                    if kind == "startupProbe":
                        run.started = True
                    elif kind == "readinessProbe":
                        run.ready = True
            else:
                probe.successes, probe.failures = 0, probe.failures + 1
                if probe.failures >= spec.get("failureThreshold", 3):
                    if kind == "readinessProbe":
                        run.ready = False
                    elif kind in ("livenessProbe", "startupProbe"):
                        self.podlet.record("probe-kill", self, run.name, kind)
                        self.signal(run, signal.SIGKILL)
        if "readinessProbe" not in run.probes:
            run.ready = run.started and run.running()

    # ---------------------------------------------------------------------------- lifecycle

    def check_exit(self, run: ContainerRun, policy: str) -> None:
        if run.process is None or run.process.poll() is None:
            return
        code = run.process.returncode
        terminated = {"exitCode": code, "reason": "Completed" if code == 0 else "Error",
                      "startedAt": run.started_at, "finishedAt": now()}
        self.podlet.record("exit", self, run.name, code)
        run.process, run.ready, run.started = None, False, False
        if policy == "Always" or (policy == "OnFailure" and code != 0):
            run.last_terminated = terminated
            run.restarts += 1
            backoff = min(10 * 2 ** (run.restarts - 1), 300) if run.restarts > 1 else 1
            run.restart_after = time.monotonic() + backoff
            run.waiting = ("CrashLoopBackOff", f"back-off {backoff}s restarting failed container {run.name}")
        else:
            run.finished = terminated

    def signal(self, run: ContainerRun, sig: int) -> None:
        if run.running():
            try:
                os.killpg(run.process.pid, sig)
            except ProcessLookupError:
                pass

    def run(self) -> None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            self.prepare_volumes()
            self.publish_port_forward()
        except Exception as error:  # a volume that cannot be had: the pod stays Pending, said why
            self.failure = str(error)
            self.podlet.record("volume-failed", self, "", str(error))
            self.report()
            while not self.deleting.wait(2):
                pass
            self.finish()
            return
        policy = self.pod["spec"].get("restartPolicy", "Always")
        init_done = 0
        while not self.deleting.is_set() and not self.podlet.stopping.is_set():
            # Init containers in order: a sidecar counts once started, the others once they exit 0.
            while init_done < len(self.init):
                run = self.init[init_done]
                if run.process is None and run.finished is None and run.waiting is None:
                    self.start_container(run)
                if run.sidecar and run.started and run.running():
                    init_done += 1
                elif not run.sidecar and run.finished and run.finished["exitCode"] == 0:
                    init_done += 1
                else:
                    break
            if init_done == len(self.init):
                for run in self.containers:
                    if run.process is None and run.finished is None and run.waiting is None:
                        self.start_container(run)
            for run in self.init + self.containers:
                self.check_exit(run, "Always" if run.sidecar else ("OnFailure" if run in self.init and policy == "Always" else policy))
                if run.waiting and run.waiting[0] == "CrashLoopBackOff" and time.monotonic() >= run.restart_after:
                    run.waiting = None
                    self.start_container(run)
                if run.running():
                    self.run_probes(run)
            self.report()
            self.deleting.wait(0.25)
        if self.podlet.stopping.is_set():
            self.kill_all()
        else:
            self.terminate()
        self.finish()

    def kill_all(self) -> None:
        """The runner is stopping: SIGTERM every container, SIGKILL what is left after 5 s."""
        self.stop_processes(self.containers + self.init, time.monotonic() + 5)

    def stop_processes(self, runs: list[ContainerRun], deadline: float) -> None:
        """SIGTERM to `runs`, SIGKILL to those still running at `deadline`; waits for each."""
        for run in runs:
            self.signal(run, signal.SIGTERM)
        for run in runs:
            while run.running() and time.monotonic() < deadline:
                time.sleep(0.05)
            self.signal(run, signal.SIGKILL)
            if run.process is not None:
                run.process.wait()
                self.podlet.record("stopped", self, run.name, run.process.returncode)

    def terminate(self) -> None:
        """preStop hooks, SIGTERM to the containers, then to the sidecars (in reverse), within
        the grace period; SIGKILL after it."""
        grace = self.pod["metadata"].get("deletionGracePeriodSeconds")
        if grace is None:
            grace = self.pod["spec"].get("terminationGracePeriodSeconds", 30)
        deadline = time.monotonic() + grace
        for run in self.containers + self.init:
            run.ready = False
        self.report()

        def pre_stop(run: ContainerRun) -> None:
            handler = run.spec.get("lifecycle", {}).get("preStop", {})
            if "sleep" in handler:
                time.sleep(min(handler["sleep"]["seconds"], max(0.0, deadline - time.monotonic())))
            elif "httpGet" in handler:
                self.probe_ok(run, handler)

        def stop(runs: list[ContainerRun]) -> None:
            hooks = [threading.Thread(target=pre_stop, args=(r,)) for r in runs if r.running()]
            for hook in hooks:
                hook.start()
            for hook in hooks:
                hook.join()
            self.stop_processes(runs, deadline)

        stop(self.containers)
        stop(list(reversed([r for r in self.init if r.sidecar])))

    def finish(self) -> None:
        if self.deleting.is_set() and not self.podlet.stopping.is_set():
            try:
                self.kube.request(
                    "DELETE", self.path, {"gracePeriodSeconds": 0, "preconditions": {"uid": self.uid}}
                )
            except ApiError as error:
                if error.status not in (404, 409):
                    raise
        self.stopped.set()

    # ---------------------------------------------------------------------------- status

    def container_status(self, run: ContainerRun) -> dict:
        status = {
            "name": run.name,
            "image": run.spec["image"],
            "imageID": "",
            "ready": run.ready,
            "started": run.started,
            "restartCount": run.restarts,
        }
        if run.running():
            status["containerID"] = f"podlet://{run.process.pid}"
            status["state"] = {"running": {"startedAt": run.started_at}}
        elif run.finished:
            status["state"] = {"terminated": run.finished}
        else:
            reason, message = run.waiting or ("ContainerCreating", "")
            status["state"] = {"waiting": {"reason": reason, "message": message}}
        if run.last_terminated:
            status["lastState"] = {"terminated": run.last_terminated}
        return status

    def report(self) -> None:
        everything = self.init + self.containers
        initialized = all(r.started if r.sidecar else r.finished is not None for r in self.init)
        containers_ready = all(r.ready for r in self.containers) and all(r.ready or not r.sidecar for r in self.init)
        running = any(r.running() for r in self.containers)
        phase = "Running" if running else "Pending"
        if self.containers and all(r.finished for r in self.containers):
            phase = "Succeeded" if all(r.finished["exitCode"] == 0 for r in self.containers) else "Failed"

        def condition(kind: str, ok: bool, reason: str = "") -> dict:
            item = {"type": kind, "status": "True" if ok else "False", "lastProbeTime": None}
            if reason and not ok:
                item["reason"] = reason
            return item

        conditions = [
            c for c in self.pod.get("status", {}).get("conditions", []) if c["type"] == "PodScheduled"
        ] + [
            condition("PodReadyToStartContainers", self.failure is None),
            condition("Initialized", initialized, "ContainersNotInitialized"),
            condition("ContainersReady", containers_ready, "ContainersNotReady"),
            condition("Ready", containers_ready, "ContainersNotReady"),
        ]
        status = {
            "phase": phase,
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": self.ip,
            "podIPs": [{"ip": self.ip}],
            "startTime": self.start_time,
            "conditions": conditions,
            "containerStatuses": [self.container_status(r) for r in self.containers],
            "initContainerStatuses": [self.container_status(r) for r in self.init],
            "message": self.failure,
        }
        # Transition times only move when the status does.
        key = json.dumps(status, sort_keys=True)
        if key == self.last_status:
            return
        self.last_status = key
        stamp = now()
        for item in conditions:
            item.setdefault("lastTransitionTime", stamp)
        try:
            self.kube.merge_patch(f"{self.path}/status", {"status": status})
        except ApiError as error:
            if error.status != 404:
                self.podlet.record("status-failed", self, "", str(error))
                self.last_status = None
        except OSError as error:  # the apiserver is away (stopping, restarting): report again later
            self.podlet.record("status-failed", self, "", str(error))
            self.last_status = None


class Podlet:
    """Watches pods bound to `nodes` and runs each one (see the module's description)."""

    def __init__(
        self,
        kube: Kube,
        nodes: set[str],
        images: Callable[[str], Image | None],
        state_dir: Path,
        podnet: Path,
        api_host: str,
        api_port: int,
    ):
        self.kube, self.nodes, self.image = kube, nodes, images
        self.state_dir, self.podnet = state_dir, podnet
        self.api_host, self.api_port = api_host, api_port
        self.pods: dict[str, PodRun] = {}
        self.next_ip = 0
        self.stopping = threading.Event()
        self.events: list[tuple[float, str, str, str, object]] = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self.watch_loop, name="podlet", daemon=True)

    def record(self, what: str, pod: PodRun, container: str, detail: object) -> None:
        with self.lock:
            self.events.append((time.time(), what, f"{pod.namespace}/{pod.pod_name}", container, detail))

    def allocate_ip(self) -> str:
        self.next_ip += 1
        return f"10.244.{self.next_ip // 250}.{self.next_ip % 250 + 2}"

    def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.thread.start()

    def watch_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                listing = self.kube.get("/api/v1/pods")
                for pod in listing["items"]:
                    self.handle(pod)
                for event in self.kube.watch("/api/v1/pods", listing["metadata"]["resourceVersion"], 60):
                    if self.stopping.is_set():
                        return
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self.handle(event["object"])
                    elif event["type"] == "DELETED":
                        run = self.pods.get(event["object"]["metadata"]["uid"])
                        if run:
                            run.deleting.set()
            except Exception as error:  # the watch broke (apiserver restart, timeout): list again
                print(f"podlet: watch restarted: {error}", file=sys.stderr)
                time.sleep(0.5)

    def handle(self, pod: dict) -> None:
        if pod["spec"].get("nodeName") not in self.nodes:
            return
        uid = pod["metadata"]["uid"]
        run = self.pods.get(uid)
        if run is None:
            if pod["metadata"].get("deletionTimestamp") or pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
                return
            run = PodRun(self, pod, self.allocate_ip())
            self.pods[uid] = run
            run.start()
            return
        run.pod["metadata"] = pod["metadata"]
        if pod["metadata"].get("deletionTimestamp"):
            run.deleting.set()

    def stop(self) -> None:
        """Stops every pod's processes (SIGTERM, then SIGKILL) without touching the API."""
        self.stopping.set()
        for run in list(self.pods.values()):
            run.join(timeout=30)

    def pod_logs(self, namespace: str, name: str) -> str:
        """Every container log of the pods named `name` (all their incarnations)."""
        out = []
        for path in sorted(self.state_dir.glob(f"{namespace}.{name}.*/*.log")):
            out.append(f"==> {path.relative_to(self.state_dir)}\n{path.read_text(errors='replace')[-6000:]}")
        return "\n".join(out)

    def cleanup(self) -> None:
        shutil.rmtree(self.state_dir, ignore_errors=True)
