"""`helm lint --strict` passes with the chart's defaults and with every charts/hearth/ci/*.yaml, and
Helm enforces the chart's kubeVersion."""

from __future__ import annotations

import pytest

from conftest import CHART, CI_VALUES, ROOT, values_id
from helm import HelmError, lint, template

LINT_CASES = [None, *CI_VALUES]


@pytest.mark.parametrize("values_file", LINT_CASES, ids=[values_id(p) for p in LINT_CASES])
def test_helm_lint_strict_passes(values_file):
    report = lint(CHART, [values_file] if values_file else [], strict=True)
    assert "0 chart(s) failed" in report
    assert "[WARNING]" not in report and "[ERROR]" not in report, report


def test_helm_lint_fails_on_a_broken_chart(tmp_path):
    """The lint above can fail: a template that is not YAML is an error."""
    broken = tmp_path / "hearth"
    broken.mkdir()
    (broken / "Chart.yaml").write_text((CHART / "Chart.yaml").read_text())
    (broken / "templates").mkdir()
    (broken / "templates" / "bad.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n data: [\n")
    with pytest.raises(HelmError, match="bad.yaml"):
        lint(broken)


def test_kubeversion_requires_1_30():
    """The runtime pods use `lifecycle.preStop.sleep`, on by default from Kubernetes 1.30."""
    assert "sleep: Some(SleepAction" in (ROOT / "operator/controller/src/model/build/deployment.rs").read_text()
    template(CHART, kube_version="1.30.0")
    template(CHART, kube_version="1.36.0")
    with pytest.raises(HelmError, match="kubeVersion"):
        template(CHART, kube_version="1.29.9")
