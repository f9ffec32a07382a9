"""Writes manifests/base/ from the chart's default render by real Helm (`helm template`, found as
tests/chart/helm.py says), so the kustomize install and the Helm install are the same objects by
construction (tests/chart/test_kustomize.py checks they stay so).

    python tests/chart/sync_manifests.py          # rewrite manifests/base/
    python tests/chart/sync_manifests.py --check  # exit 1 when manifests/base/ is stale

The CRDs are not copied here: crdgen writes them to manifests/crds/ (see manifests/README.md).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from helm import template  # noqa: E402

ROOT = HERE.parent.parent
CHART = ROOT / "charts" / "hearth"
BASE = ROOT / "manifests" / "base"
RELEASE = "hearth"
NAMESPACE = "hearth-system"

HEADER = (
    "# Rendered from charts/hearth/{source} with the chart's default values by\n"
    "# tests/chart/sync_manifests.py; do not edit: change the chart and run that script.\n"
)

# Chart templates left out of the base: the meters' root keys and the invoice token are random
# per install, so a kustomize user creates those Secrets (manifests/README.md) instead of sharing
# ones committed here.
NOT_IN_BASE = {"meter-keys-secret.yaml", "billing-token-secret.yaml"}

NAMESPACE_YAML = f"""# The namespace of the Hearth control plane (Helm users pass --namespace instead).
apiVersion: v1
kind: Namespace
metadata:
  name: {NAMESPACE}
  labels:
    app.kubernetes.io/part-of: hearth
    # Hearth's own pods meet the "restricted" Pod Security Standard.
    pod-security.kubernetes.io/enforce: restricted
"""


def base_files() -> dict[str, str]:
    """File name -> content of every file of manifests/base/."""
    rendered = template(CHART, release=RELEASE, namespace=NAMESPACE)
    files: dict[str, str] = {"namespace.yaml": NAMESPACE_YAML}
    for source, text in sorted(rendered.manifests.items()):
        if Path(source).name in NOT_IN_BASE:
            continue
        # Helm's chart-version label has no meaning outside Helm, and kustomize manages these.
        body = re.sub(r"(?m)^[ \t]*helm\.sh/chart: .*\n", "", text)
        body = re.sub(r"(?m)^([ \t]*app\.kubernetes\.io/managed-by:) Helm$", r"\1 kustomize", body)
        body = body.strip("\n") + "\n"
        files[Path(source).name] = HEADER.format(source=source) + body
    resources = ["../crds", *sorted(files)]
    files["kustomization.yaml"] = (
        "# The Hearth install without Helm: the chart's default objects, plus the namespace.\n"
        "# Rendered by tests/chart/sync_manifests.py; overlays in ../overlays.\n"
        "apiVersion: kustomize.config.k8s.io/v1beta1\n"
        "kind: Kustomization\n"
        "resources:\n" + "".join(f"  - {name}\n" for name in resources)
    )
    return files


def main(argv: list[str]) -> int:
    files = base_files()
    stale = sorted(
        name for name, content in files.items() if not (BASE / name).is_file() or (BASE / name).read_text() != content
    )
    extra = sorted(p.name for p in BASE.glob("*") if p.is_file() and p.name not in files) if BASE.is_dir() else []
    if "--check" in argv:
        if stale or extra:
            print(f"manifests/base is stale: {stale + extra}; run python tests/chart/sync_manifests.py")
            return 1
        return 0
    BASE.mkdir(parents=True, exist_ok=True)
    for name in extra:
        (BASE / name).unlink()
    for name, content in files.items():
        (BASE / name).write_text(content)
    print(f"wrote {len(files)} files to {BASE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
