"""Every pod the chart or the kustomize manifests create meets the Pod Security Standard
"restricted" (Kubernetes 1.33 profile, which includes "baseline"), plus a read-only root
filesystem."""

from __future__ import annotations

import copy

import pytest

from conftest import OVERLAYS, kustomize, pod_templates, render

RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}
BASELINE_CAPABILITIES = {
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE",
    "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
}
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}


def violations(pod: dict) -> list[str]:
    """Why `pod` (a PodSpec) is not "restricted"; empty when it is."""
    found: list[str] = []
    pod_ctx = pod.get("securityContext") or {}
    containers = [*pod.get("initContainers", []), *pod.get("containers", []), *pod.get("ephemeralContainers", [])]
    # baseline
    for host in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(host):
            found.append(f"{host} is set")
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        if "hostPath" in kinds:
            found.append(f"volume {volume['name']} is a hostPath")
        if not kinds <= RESTRICTED_VOLUMES:
            found.append(f"volume {volume['name']} has type {sorted(kinds - RESTRICTED_VOLUMES)}")
    for sysctl in pod_ctx.get("sysctls", []):
        if sysctl["name"] not in SAFE_SYSCTLS:
            found.append(f"sysctl {sysctl['name']}")
    if (pod_ctx.get("seLinuxOptions") or {}).get("user") or (pod_ctx.get("seLinuxOptions") or {}).get("role"):
        found.append("pod seLinuxOptions user/role")
    pod_seccomp = (pod_ctx.get("seccompProfile") or {}).get("type")
    pod_non_root = pod_ctx.get("runAsNonRoot")
    if pod_ctx.get("runAsUser") == 0:
        found.append("pod runAsUser 0")
    if pod_seccomp == "Unconfined":
        found.append("pod seccomp Unconfined")
    if (pod_ctx.get("appArmorProfile") or {}).get("type") == "Unconfined":
        found.append("pod AppArmor Unconfined")
    for container in containers:
        name = container["name"]
        ctx = container.get("securityContext") or {}
        if ctx.get("privileged"):
            found.append(f"{name}: privileged")
        for port in container.get("ports", []):
            if port.get("hostPort"):
                found.append(f"{name}: hostPort {port['hostPort']}")
        if ctx.get("procMount", "Default") != "Default":
            found.append(f"{name}: procMount {ctx['procMount']}")
        if (ctx.get("appArmorProfile") or {}).get("type") == "Unconfined":
            found.append(f"{name}: AppArmor Unconfined")
        if (ctx.get("seLinuxOptions") or {}).get("user") or (ctx.get("seLinuxOptions") or {}).get("role"):
            found.append(f"{name}: seLinuxOptions user/role")
        capabilities = ctx.get("capabilities") or {}
        added = set(capabilities.get("add", []))
        if not added <= BASELINE_CAPABILITIES:
            found.append(f"{name}: adds capabilities {sorted(added - BASELINE_CAPABILITIES)}")
        # restricted
        if ctx.get("allowPrivilegeEscalation") is not False:
            found.append(f"{name}: allowPrivilegeEscalation is not false")
        non_root = ctx.get("runAsNonRoot", pod_non_root)
        if non_root is not True:
            found.append(f"{name}: runAsNonRoot is not true")
        if ctx.get("runAsUser", pod_ctx.get("runAsUser")) == 0:
            found.append(f"{name}: runAsUser 0")
        seccomp = (ctx.get("seccompProfile") or {}).get("type", pod_seccomp)
        if seccomp not in ("RuntimeDefault", "Localhost"):
            found.append(f"{name}: seccompProfile is {seccomp}")
        if "ALL" not in capabilities.get("drop", []):
            found.append(f"{name}: capabilities do not drop ALL")
        if not added <= {"NET_BIND_SERVICE"}:
            found.append(f"{name}: adds capabilities beyond NET_BIND_SERVICE")
        # Hearth's own rule: nothing writes to the image.
        if ctx.get("readOnlyRootFilesystem") is not True:
            found.append(f"{name}: readOnlyRootFilesystem is not true")
        if "resources" not in container or "requests" not in container["resources"]:
            found.append(f"{name}: no resource requests")
    return found


def test_chart_pods_are_restricted(rendered):
    pods = pod_templates(rendered.objects())
    assert pods
    for name, spec in pods:
        assert violations(spec) == [], name


@pytest.mark.parametrize("target", ["base", *(f"overlays/{o}" for o in OVERLAYS)])
def test_kustomize_pods_are_restricted(target):
    pods = pod_templates(kustomize(target))
    assert len(pods) == 2
    for name, spec in pods:
        assert violations(spec) == [], f"{target} {name}"


def test_the_release_namespace_enforces_restricted():
    namespace = next(o for o in kustomize("base") if o["kind"] == "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.parametrize(
    "break_it, message",
    [
        (lambda p: p["containers"][0]["securityContext"].pop("allowPrivilegeEscalation"), "allowPrivilegeEscalation"),
        (lambda p: p["securityContext"].pop("runAsNonRoot") and p["containers"][0]["securityContext"].pop("runAsNonRoot"), "runAsNonRoot"),
        (lambda p: p["containers"][0]["securityContext"].update(seccompProfile={"type": "Unconfined"}), "seccompProfile"),
        (lambda p: p["containers"][0]["securityContext"]["capabilities"].update(drop=["NET_RAW"]), "drop ALL"),
        (lambda p: p["containers"][0]["securityContext"]["capabilities"].update(add=["SYS_ADMIN"]), "SYS_ADMIN"),
        (lambda p: p.update(hostNetwork=True), "hostNetwork"),
        (lambda p: p["volumes"].append({"name": "h", "hostPath": {"path": "/"}}), "hostPath"),
        (lambda p: p["containers"][0]["securityContext"].update(readOnlyRootFilesystem=False), "readOnlyRootFilesystem"),
        (lambda p: p["containers"][0]["securityContext"].update(privileged=True), "privileged"),
    ],
)
def test_a_violation_is_detected(break_it, message):
    _, spec = pod_templates(render(None).objects())[0]
    spec = copy.deepcopy(spec)
    break_it(spec)
    assert any(message in v for v in violations(spec)), violations(spec)
