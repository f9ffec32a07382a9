"""Real Helm for the chart tests and sync_manifests.py: where the binary is, `helm template` split
into the documents each template rendered, the release notes, and `helm lint`.

Helm is `$HEARTH_HELM` when set, else the one e2e/cluster/build.sh builds from Go modules (it
prints the folder of its binaries; the first build takes minutes, later calls reuse it).
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent.parent
BUILD_SCRIPT = ROOT / "e2e" / "cluster" / "build.sh"
# Every document of `helm template` starts with this header, naming `<chart>/<path in the chart>`.
SOURCE_HEADER = re.compile(r"(?m)^---\n# Source: [^/\n]+/(.+)\n")


class HelmError(Exception):
    """Helm exited with an error; the message is what it printed."""


@functools.cache
def helm_binary() -> str:
    """Path of the helm binary: `$HEARTH_HELM`, or `<folder printed by build.sh>/helm`."""
    configured = os.environ.get("HEARTH_HELM")
    if configured:
        if not os.access(configured, os.X_OK):
            raise HelmError(f"HEARTH_HELM={configured} is not an executable file")
        return configured
    built = subprocess.run(["bash", str(BUILD_SCRIPT)], capture_output=True, text=True)
    if built.returncode != 0:
        raise HelmError(f"{BUILD_SCRIPT.relative_to(ROOT)} failed (set HEARTH_HELM to use another helm):\n{built.stderr}")
    helm = Path(built.stdout.strip().splitlines()[-1]) / "helm"
    if not os.access(helm, os.X_OK):
        raise HelmError(f"{BUILD_SCRIPT.relative_to(ROOT)} printed {helm.parent}, which has no helm")
    return str(helm)


def _environment() -> dict[str, str]:
    """This process's environment without Helm's own settings, and with no cluster to reach:
    what is rendered depends on the arguments alone."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELM_") and k != "KUBECONFIG"}
    env["KUBECONFIG"] = os.devnull
    return env


def run_helm(*args: str) -> str:
    """Runs helm with `args`; its standard output, or HelmError with everything it printed."""
    result = subprocess.run([helm_binary(), *args], capture_output=True, text=True, env=_environment(), timeout=120)
    if result.returncode != 0:
        raise HelmError(f"helm {' '.join(args)}:\n{result.stdout}{result.stderr}".rstrip())
    return result.stdout


def _chart_args(
    chart: Path, values_files: list[Path] | tuple[Path, ...], release: str, namespace: str, kube_version: str | None
) -> list[str]:
    args = [release, str(chart), "--namespace", namespace]
    for path in values_files:
        args += ["--values", str(path)]
    if kube_version:
        args += ["--kube-version", kube_version]
    return args


@dataclass
class Rendered:
    """A chart as `helm template --include-crds` renders it: its documents in Helm's install
    order (CRDs first, then by kind), each with the chart file it came from."""

    documents: list[tuple[str, str]]  # (path in the chart, e.g. templates/billing.yaml; document text)
    _notes_args: list[str] = field(repr=False)

    @property
    def manifests(self) -> dict[str, str]:
        """Template path -> its documents, joined by `---` (templates that rendered nothing are absent)."""
        grouped: dict[str, list[str]] = {}
        for source, text in self.documents:
            if not source.startswith("crds/"):
                grouped.setdefault(source, []).append(text)
        return {source: "---\n".join(texts) for source, texts in grouped.items()}

    @property
    def crds(self) -> dict[str, str]:
        """crds/ files, installed as they are."""
        return {source: text for source, text in self.documents if source.startswith("crds/")}

    @functools.cached_property
    def notes(self) -> str:
        """NOTES.txt as Helm renders it for this install (`helm template` leaves notes out; a
        client-side dry-run install renders them without a cluster)."""
        release = json.loads(run_helm("install", *self._notes_args, "--dry-run=client", "--output", "json"))
        return release["info"].get("notes", "")

    def sourced(self, include_crds: bool = True) -> list[tuple[str, dict]]:
        """Every object with the file it came from, in Helm's order."""
        docs: list[tuple[str, dict]] = []
        for path, text in self.documents:
            if not include_crds and path.startswith("crds/"):
                continue
            for doc in yaml.safe_load_all(text):
                if doc is None:
                    continue
                if not isinstance(doc, dict):
                    raise HelmError(f"{path}: a rendered document is not a mapping: {doc!r}")
                docs.append((path, doc))
        return docs

    def objects(self, include_crds: bool = True) -> list[dict]:
        """Every object Helm would install."""
        return [doc for _, doc in self.sourced(include_crds)]


def parse_template_output(output: str) -> list[tuple[str, str]]:
    """(source, text) of every document of `helm template`'s output, in its order."""
    headers = list(SOURCE_HEADER.finditer(output))
    if output.strip() and (not headers or output[: headers[0].start()].strip()):
        raise HelmError(f"unexpected helm template output:\n{output[:500]}")
    documents = []
    for header, following in zip(headers, [*headers[1:], None]):
        end = following.start() if following else len(output)
        documents.append((header.group(1), output[header.end() : end].strip("\n") + "\n"))
    return documents


def template(
    chart: Path,
    values_files: list[Path] | tuple[Path, ...] = (),
    release: str = "hearth",
    namespace: str = "hearth-system",
    kube_version: str | None = None,
) -> Rendered:
    """`helm template <release> <chart> --namespace <namespace> --include-crds [--values ...]`.
    Raises HelmError when Helm refuses (values.schema.json, a `fail`, kubeVersion, bad YAML)."""
    args = _chart_args(chart, values_files, release, namespace, kube_version)
    output = run_helm("template", *args, "--include-crds")
    return Rendered(parse_template_output(output), args)


def lint(chart: Path, values_files: list[Path] | tuple[Path, ...] = (), strict: bool = True, namespace: str = "hearth-system") -> str:
    """`helm lint [--strict] <chart> [--values ...]`: its report, or HelmError when it fails."""
    args = ["lint", str(chart), "--namespace", namespace]
    for path in values_files:
        args += ["--values", str(path)]
    if strict:
        args.append("--strict")
    return run_helm(*args)
