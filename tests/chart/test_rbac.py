"""Least privilege: the operator's and the gateway's roles grant exactly the API calls their code makes.

CALLS (the operator) and GATEWAY_CALLS (the gateway, operator/gateway/) are tables written by
reading the operator's crates: one row per call site, naming the file, a pattern found at the call (a
window of two lines either side), and the permissions the call needs. The tests check, both ways:
- every Kubernetes API call site found in the crates under operator/ (outside tests and local mode) is a row of
  the table: a new call without a row fails, so does a call that moved or changed;
- every row still matches a call: a row (and so a rule) without a call fails;
- each component's chart rules are exactly the union of its rows' permissions: no rule without a
  call, no call without a rule.

Server-side apply (`Patch::Apply`) of an object that may not exist yet needs `create` as well as
`patch`: the API server authorises an apply that creates as a create
(k8s.io/apiserver/pkg/endpoints/handlers/patch.go, `createAuthorizerAttributes`). Status
subresources are only ever patched on objects that exist. kube-runtime watchers (Controller::new,
.owns, .watches) list and then watch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import ROOT, render

OPERATOR_SRC = ROOT / "operator"
# Local mode runs without a cluster; the binary's own src only dispatches; integration tests and
# benches talk to mocks.
EXCLUDED = [OPERATOR_SRC / name for name in ("local", "src", "tests", "benches")]

# Lines that are Kubernetes API calls. Heuristic by design: kube's Api methods, kube-runtime's
# watchers, and the crate's apply/status helpers (whose generic bodies are listed in GENERIC).
CALL = re.compile(
    r"""(
        \.get_opt\( | \.get\(\s*&?(?:self\.)?name\b | \.get_metadata(?:_opt)?\( | \.get_status\( | \.get_scale\(
      | \.list\(\s*& | \.list_metadata\( | \bwatcher\( | \bmetadata_watcher\( | \breflector\(
      | \.create\(\s*&PostParams | \.create_subresource\(
      | \.replace\([^)]*PostParams | \.replace_status\( | \.replace_scale\(
      | \.patch\(\s* | \.patch_status\( | \.patch_scale\( | \.patch_subresource\( | \.patch_metadata\(
      | \.delete\([^)]*DeleteParams | \.delete_collection\( | \.evict\( | \.entry\(\s*&
      | Controller::new\( | \.owns\( | \.watches\( | \.owns_stream\( | \.watches_stream\(
      | \bapply_if_changed\( | \bapply_status\( | \bget_optional\( | \breport_invalid_object::< | \binvalid::accept\(
      | \breflect\( | \.apply_or_remove\(
    )""",
    re.VERBOSE,
)


@dataclass(frozen=True)
class Perm:
    group: str
    resource: str
    verb: str
    scope: str = "cluster"  # "cluster" (ClusterRole) or "namespace" (Role in the release namespace)


def perms(group: str, resource: str, *verbs: str, scope: str = "cluster") -> tuple[Perm, ...]:
    return tuple(Perm(group, resource, verb, scope) for verb in verbs)


WATCH = ("list", "watch")
APPLY = ("create", "patch")  # server-side apply that may create

# (file under operator/, pattern at the call site, permissions it needs)
CALLS: list[tuple[str, str, tuple[Perm, ...]]] = [
    # controller/src/lib.rs: one Controller per CRD, owning or watching related kinds.
    ("controller/src/lib.rs", r"Controller::new\(\s*Api::<DeserializeGuard<InferenceModel>>", perms("hearth.dev", "inferencemodels", *WATCH)),
    ("controller/src/lib.rs", r"\.owns\(Api::<Deployment>", perms("apps", "deployments", *WATCH)),
    ("controller/src/lib.rs", r"\.owns\(Api::<Service>", perms("", "services", *WATCH)),
    ("controller/src/lib.rs", r"\.owns\(Api::<PodDisruptionBudget>", perms("policy", "poddisruptionbudgets", *WATCH)),
    ("controller/src/lib.rs", r"\.owns\(Api::<HorizontalPodAutoscaler>", perms("autoscaling", "horizontalpodautoscalers", *WATCH)),
    ("controller/src/lib.rs", r"Controller::new\(\s*Api::<DeserializeGuard<Tenant>>", perms("hearth.dev", "tenants", *WATCH)),
    ("controller/src/lib.rs", r"\.owns\(\s*Api::<Secret>", perms("", "secrets", *WATCH)),
    ("controller/src/lib.rs", r"\.watches\(\s*Api::<DeserializeGuard<Tier>>", perms("hearth.dev", "tiers", *WATCH)),
    ("controller/src/lib.rs", r"Controller::new\(\s*Api::<DeserializeGuard<Tier>>", perms("hearth.dev", "tiers", *WATCH)),
    ("controller/src/lib.rs", r"\.watches\(\s*Api::<DeserializeGuard<Tenant>>", perms("hearth.dev", "tenants", *WATCH)),
    # model/dereference.rs: one GET per child.
    ("controller/src/model/dereference.rs", r"apis\.deployments\.get_opt\(", perms("apps", "deployments", "get")),
    ("controller/src/model/dereference.rs", r"apis\.services\.get_opt\(", perms("", "services", "get")),
    ("controller/src/model/dereference.rs", r"apis\.pdbs\.get_opt\(", perms("policy", "poddisruptionbudgets", "get")),
    ("controller/src/model/dereference.rs", r"apis\.hpas\.get_opt\(", perms("autoscaling", "horizontalpodautoscalers", "get")),
    ("controller/src/model/dereference.rs", r"get_optional\(&apis\.scaled_objects", perms("keda.sh", "scaledobjects", "get")),
    ("controller/src/model/dereference.rs", r"apis\.secrets\.get_opt\(", perms("", "secrets", "get")),
    ("controller/src/model/dereference.rs", r"apis\.network_policies\.get_opt\(", perms("networking.k8s.io", "networkpolicies", "get")),
    # model/apply.rs: server-side apply of each child, deletion of unwanted optional ones.
    ("controller/src/model/apply.rs", r"apply_if_changed\(&apis\.services", perms("", "services", *APPLY)),
    ("controller/src/model/apply.rs", r"apply_if_changed\(&apis\.pdbs", perms("policy", "poddisruptionbudgets", *APPLY)),
    ("controller/src/model/apply.rs", r"apply_if_changed\(&apis\.deployments", perms("apps", "deployments", *APPLY)),
    ("controller/src/model/apply.rs", r"apply_or_remove\(\s*&apis\.hpas", perms("autoscaling", "horizontalpodautoscalers", *APPLY, "delete")),
    ("controller/src/model/apply.rs", r"apply_or_remove\(\s*&apis\.secrets", perms("", "secrets", *APPLY, "delete")),
    ("controller/src/model/apply.rs", r"apply_or_remove\(\s*&apis\.network_policies", perms("networking.k8s.io", "networkpolicies", *APPLY, "delete")),
    ("controller/src/model/apply.rs", r"apply_if_changed\(&apis\.scaled_objects", perms("keda.sh", "scaledobjects", *APPLY)),
    ("controller/src/model/apply.rs", r"apis\.scaled_objects\s*\.delete\(", perms("keda.sh", "scaledobjects", "delete")),
    # Status writes.
    # Status writes, and the InvalidObject condition on an object that fails to deserialise
    # (invalid::accept, called by each reconciler with its own kind).
    ("controller/src/model/status.rs", r"patch_status\(|apply_status\(", perms("hearth.dev", "inferencemodels/status", "patch")),
    ("controller/src/model/mod.rs", r"invalid::accept\(", perms("hearth.dev", "inferencemodels/status", "patch")),
    ("controller/src/tenant/status.rs", r"patch_status\(|apply_status\(", perms("hearth.dev", "tenants/status", "patch")),
    ("controller/src/tenant/mod.rs", r"invalid::accept\(", perms("hearth.dev", "tenants/status", "patch")),
    ("controller/src/tier/mod.rs", r"patch_status\(|apply_status\(", perms("hearth.dev", "tiers/status", "patch")),
    ("controller/src/tier/mod.rs", r"invalid::accept\(", perms("hearth.dev", "tiers/status", "patch")),
    ("billing/src/usage_status.rs", r"patch_status\(|apply_status\(", perms("hearth.dev", "tenants/status", "patch")),
    # tenant/mod.rs: the Tier and key Secrets, and generated keys (create, never update).
    ("controller/src/tenant/mod.rs", r"tiers\.get_opt\(", perms("hearth.dev", "tiers", "get")),
    ("controller/src/tenant/mod.rs", r"secrets\.get_opt\(", perms("", "secrets", "get")),
    ("controller/src/tenant/mod.rs", r"secret_api\.create\(&PostParams", perms("", "secrets", "create")),
    # tier/mod.rs: counts the Tenants of a Tier.
    ("controller/src/tier/mod.rs", r"tenants\s*\.list\(&ListParams", perms("hearth.dev", "tenants", "list")),
    # billing: meters are pods labelled metered; prices come from Tenants and Tiers.
    ("billing/src/discovery.rs", r"Api::<Pod>::all\(client\.clone\(\)\)\.list\(", perms("", "pods", "list")),
    # ... and counts a pod only if an InferenceModel owns it through its ReplicaSet and Deployment.
    ("billing/src/discovery.rs", r"Api::<ReplicaSet>::all", perms("apps", "replicasets", "list")),
    ("billing/src/discovery.rs", r"Api::<Deployment>::all", perms("apps", "deployments", "list")),
    ("billing/src/discovery.rs", r"Api::<InferenceModel>::all", perms("hearth.dev", "inferencemodels", "list")),
    ("billing/src/aggregator.rs", r"Api::<Tenant>::all\(client\.clone\(\)\)\s*\.list\(", perms("hearth.dev", "tenants", "list")),
    ("billing/src/aggregator.rs", r"Api::<Tier>::all\(client\.clone\(\)\)\s*\.list\(", perms("hearth.dev", "tiers", "list")),
    # leader.rs: the leader-election Lease in the release namespace.
    ("kube/src/leader.rs", r"self\.api\.get_opt\(&self\.name\)", perms("coordination.k8s.io", "leases", "get", scope="namespace")),
    ("kube/src/leader.rs", r"self\.api\.create\(&PostParams", perms("coordination.k8s.io", "leases", "create", scope="namespace")),
    ("kube/src/leader.rs", r"self\.api\.replace\(&self\.name", perms("coordination.k8s.io", "leases", "update", scope="namespace")),
]

# Generic helpers: the call inside is accounted for by the rows of their callers.
GENERIC: list[tuple[str, str]] = [
    ("kube/src/ssa.rs", r"api\.patch\(&name, &apply_params\(\), &Patch::Apply"),  # apply_if_changed<K>
    ("kube/src/ssa.rs", r"api\.patch_status\("),  # apply_status<K>
    ("controller/src/model/dereference.rs", r"match api\.get\(name\)"),  # get_optional<K>
    ("controller/src/model/apply.rs", r"apply_if_changed\(api, &desired"),  # Optional::apply_or_remove<K>
    ("controller/src/model/apply.rs", r"api\.delete\(name, &DeleteParams"),  # Optional::apply_or_remove<K>
    ("controller/src/invalid.rs", r"api\.patch_status\(name"),  # report_invalid_object<K>
    ("controller/src/invalid.rs", r"report_invalid_object::<K>"),  # accept<K>
    ("gateway/src/cluster.rs", r"reflector::reflector\(writer, watcher\(api"),  # reflect<K>
]

# gateway/: reflectors (list + watch) feeding the Config snapshot, and the scale-from-zero patch
# (granted only with gateway.scaleFromZero.enabled).
GATEWAY_CALLS: list[tuple[str, str, tuple[Perm, ...]]] = [
    ("gateway/src/cluster.rs", r"reflect\(\s*Api::<DeserializeGuard<Tier>>", perms("hearth.dev", "tiers", *WATCH)),
    ("gateway/src/cluster.rs", r"reflect\(\s*api::<DeserializeGuard<Tenant>>", perms("hearth.dev", "tenants", *WATCH)),
    ("gateway/src/cluster.rs", r"reflect\(\s*api::<DeserializeGuard<InferenceModel>>", perms("hearth.dev", "inferencemodels", *WATCH)),
    ("gateway/src/cluster.rs", r"reflect\(\s*api::<EndpointSlice>", perms("discovery.k8s.io", "endpointslices", *WATCH)),
    ("gateway/src/wake.rs", r"api\.patch_scale\(&target\.deployment", perms("apps", "deployments/scale", "patch")),
]
SCALE_FROM_ZERO = {Perm("apps", "deployments/scale", "patch")}


@dataclass
class Site:
    file: str
    line: int
    text: str
    window: str


def call_sites() -> list[Site]:
    """Every line of the operator's crates (outside tests and local mode) that calls the Kubernetes API."""
    sites = []
    for path in sorted(OPERATOR_SRC.rglob("*.rs")):
        if any(excluded in path.parents for excluded in EXCLUDED):
            continue
        lines = path.read_text().split("\n")
        end = next((i for i, line in enumerate(lines) if line.strip() == "#[cfg(test)]"), len(lines))
        for i, line in enumerate(lines[:end]):
            stripped = line.strip()
            if stripped.startswith("//") or re.search(r"\bfn \w+", stripped):
                continue
            if CALL.search(line):
                window = "\n".join(lines[max(i - 2, 0) : i + 3])
                sites.append(Site(str(path.relative_to(OPERATOR_SRC)), i + 1, stripped, window))
    return sites


def row_matches(row_file: str, pattern: str, site: Site) -> bool:
    return site.file == row_file and re.search(pattern, site.window, re.DOTALL) is not None and (
        re.search(pattern, site.text) is not None or CALL.search(site.text) is not None
    )


def test_the_scan_finds_the_calls_it_should():
    files = {site.file for site in call_sites()}
    assert {
        "controller/src/lib.rs",
        "kube/src/leader.rs",
        "controller/src/model/apply.rs",
        "controller/src/tenant/mod.rs",
        "billing/src/discovery.rs",
    } <= files
    assert not any(site.file.startswith("local/") for site in call_sites())


def test_every_api_call_in_the_operator_has_a_row():
    unlisted = [
        f"operator/{s.file}:{s.line}: {s.text}"
        for s in call_sites()
        if not any(row_matches(f, p, s) for f, p, _ in CALLS + GATEWAY_CALLS)
        and not any(row_matches(f, p, s) for f, p in GENERIC)
    ]
    assert not unlisted, (
        "API calls with no row in tests/chart/test_rbac.py CALLS (add the row and the RBAC rule "
        "in charts/hearth/templates/operator-rbac.yaml):\n" + "\n".join(unlisted)
    )


def test_every_row_is_still_a_call():
    sites = call_sites()
    stale = [f"{f}: {p}" for f, p, _ in CALLS + GATEWAY_CALLS if not any(row_matches(f, p, s) for s in sites)]
    assert not stale, "rows of CALLS that match no call any more (remove them and their rules):\n" + "\n".join(stale)
    stale_generic = [f"{f}: {p}" for f, p in GENERIC if not any(row_matches(f, p, s) for s in sites)]
    assert not stale_generic, "GENERIC rows that match no call any more:\n" + "\n".join(stale_generic)
    # Each table stays with its component: gateway rows name gateway files and no others.
    assert all(f.startswith("gateway/") for f, _, _ in GATEWAY_CALLS)
    assert not any(f.startswith("gateway/") for f, _, _ in CALLS)


def granted(role: dict, scope: str) -> set[Perm]:
    found = set()
    for rule in role["rules"]:
        assert "nonResourceURLs" not in rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    assert "*" not in (group, resource, verb), f"wildcard in {role['metadata']['name']}"
                    found.add(Perm(group, resource, verb, scope))
    return found


def objects_by_kind(values_file=None) -> dict[tuple[str, str], dict]:
    return {(o["kind"], o["metadata"]["name"]): o for o in render(values_file).objects(include_crds=False)}


def test_operator_rules_are_exactly_the_calls():
    objects = objects_by_kind()
    needed = {perm for _, _, row in CALLS for perm in row}
    have = granted(objects[("ClusterRole", "hearth-operator")], "cluster") | granted(
        objects[("Role", "hearth-operator-leader-election")], "namespace"
    )
    assert sorted(have - needed, key=str) == [], "rules without a call"
    assert sorted(needed - have, key=str) == [], "calls without a rule"


def test_the_lease_rule_is_limited_to_our_lease():
    role = objects_by_kind()[("Role", "hearth-operator-leader-election")]
    deployment = objects_by_kind()[("Deployment", "hearth-operator")]
    lease = next(a for a in deployment["spec"]["template"]["spec"]["containers"][0]["args"] if a.startswith("--lease-name="))
    for rule in role["rules"]:
        if set(rule["verbs"]) & {"get", "update"}:
            assert rule["resourceNames"] == [lease.split("=", 1)[1]]
        else:
            assert rule["verbs"] == ["create"] and "resourceNames" not in rule
    # The Lease namespace is the pod's own (POD_NAMESPACE), where the Role lives.
    assert 'default_value = "hearth-system", env = "POD_NAMESPACE"' in (OPERATOR_SRC / "controller" / "src" / "args.rs").read_text()


def test_bindings_give_each_role_to_its_own_service_account():
    objects = objects_by_kind()
    for kind, role_kind in (("ClusterRoleBinding", "ClusterRole"), ("RoleBinding", "Role")):
        for (k, name), binding in objects.items():
            if k != kind:
                continue
            assert binding["roleRef"]["kind"] == role_kind and (role_kind, binding["roleRef"]["name"]) in objects
            (subject,) = binding["subjects"]
            assert subject["kind"] == "ServiceAccount" and ("ServiceAccount", subject["name"]) in objects
            component = "gateway" if "gateway" in name else "operator"
            assert subject["name"] == f"hearth-{component}"
    for deployment in ("hearth-operator", "hearth-gateway"):
        spec = objects[("Deployment", deployment)]["spec"]["template"]["spec"]
        assert spec["serviceAccountName"] == deployment


def test_gateway_rules_are_exactly_the_calls():
    needed = {perm for _, _, row in GATEWAY_CALLS for perm in row}
    role = objects_by_kind()[("ClusterRole", "hearth-gateway")]
    have = granted(role, "cluster")
    assert sorted(have - needed, key=str) == [], "gateway rules without a call"
    assert sorted(needed - have, key=str) == [], "gateway calls without a rule"
    # Without scale from zero the role is read-only, and the gateway is told not to patch.
    off = objects_by_kind(Path(__file__).parent / "values" / "scale-from-zero-off.yaml")
    assert granted(off[("ClusterRole", "hearth-gateway")], "cluster") == needed - SCALE_FROM_ZERO
    args = off[("Deployment", "hearth-gateway")]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--scale-from-zero=false" in args
    # The gateway never reads Secrets: key hashes come from Tenant status.
    assert not any(p.resource == "secrets" for p in have)


def test_the_chart_starts_the_gateway_on_the_cluster_source():
    deployment = objects_by_kind()[("Deployment", "hearth-gateway")]
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[0] == "gateway"
    assert "--source=cluster" in args and "--scale-from-zero=true" in args
    # The flag's values are the enum the binary parses.
    source = (OPERATOR_SRC / "gateway" / "src" / "lib.rs").read_text()
    assert "pub enum SourceKind {" in source and "    Cluster,\n" in source


def test_a_missing_or_extra_rule_is_detected():
    needed = {perm for _, _, row in CALLS for perm in row}
    role = objects_by_kind()[("ClusterRole", "hearth-operator")]
    fewer = {**role, "rules": [r for r in role["rules"] if r["resources"] != ["pods"]]}
    assert needed - granted(fewer, "cluster") - {p for p in needed if p.scope == "namespace"} == {Perm("", "pods", "list")}
    more = {**role, "rules": [*role["rules"], {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]}
    assert granted(more, "cluster") - needed == {Perm("", "configmaps", "get")}
    with pytest.raises(AssertionError, match="wildcard"):
        granted({**role, "rules": [{"apiGroups": ["*"], "resources": ["pods"], "verbs": ["get"]}]}, "cluster")


def test_a_new_call_without_a_row_is_detected(tmp_path, monkeypatch):
    source = tmp_path / "operator"
    (source / "controller" / "src" / "model").mkdir(parents=True)
    (source / "controller" / "src" / "model" / "extra.rs").write_text("async fn f(api: Api<ConfigMap>) {\n    api.delete(name, &DeleteParams::default()).await?;\n}\n")
    monkeypatch.setattr(__import__(__name__), "OPERATOR_SRC", source)
    monkeypatch.setattr(__import__(__name__), "EXCLUDED", [])
    (site,) = call_sites()
    assert site.file == "controller/src/model/extra.rs" and not any(row_matches(f, p, site) for f, p, _ in CALLS)
