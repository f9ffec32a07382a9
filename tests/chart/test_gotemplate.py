"""The template engine the chart tests render with follows Go text/template and Helm where the
difference would hide a chart bug."""

from __future__ import annotations

import pytest

from gotemplate import Engine, FailError, Files, Struct, TemplateError, coalesce, go_float, helm_numbers


def run(source: str, values: dict | None = None, **extra) -> str:
    engine = Engine()
    engine.add("t", source)
    data = {"Values": helm_numbers(values or {}), "Release": Struct("chart.Release", Name="r", Namespace="ns"), **extra}
    return engine.render("t", data).replace("<no value>", "")


@pytest.mark.parametrize(
    "value, printed",
    [(2.0, "2"), (8080.0, "8080"), (123456.0, "123456"), (1e6, "1e+06"), (1234567.0, "1.234567e+06"), (0.5, "0.5"), (1.5, "1.5"), (0.0001, "0.0001"), (0.00001, "1e-05"), (-3.0, "-3")],
)
def test_floats_print_as_go_prints_float64(value, printed):
    assert go_float(value) == printed


def test_values_numbers_are_float64_as_in_helm():
    assert run("{{ .Values.n }}", {"n": 1000000}) == "1e+06"
    assert run("{{ .Values.n }}", {"n": 3}) == "3"
    with pytest.raises(TemplateError, match="incompatible types"):
        run("{{ if gt .Values.n 1 }}x{{ end }}", {"n": 3})
    assert run("{{ if gt (int .Values.n) 1 }}x{{ end }}", {"n": 3}) == "x"
    assert run("{{ toYaml .Values }}", {"n": 3, "f": 1.5}) == "f: 1.5\nn: 3"


def test_missing_keys_print_nothing_but_fields_of_nil_fail():
    assert run("[{{ .Values.missing }}]") == "[]"
    with pytest.raises(TemplateError, match="nil pointer"):
        run("{{ .Values.missing.deeper }}")
    with pytest.raises(TemplateError, match="can't evaluate field namespace"):
        run("{{ .Release.namespace }}")


def test_trim_markers_eat_all_adjacent_whitespace():
    assert run("a  \n  {{- 1 -}}  \n  b") == "a1b"
    assert run("a\n{{ 1 }}\nb") == "a\n1\nb"
    assert run("a\n{{- /* a comment */}}\nb") == "a\nb"


def test_control_structures():
    values = {"m": {"b": 2, "a": 1}, "l": ["x", "y"], "e": [], "s": "v"}
    assert run("{{ range $k, $v := .Values.m }}{{ $k }}={{ $v }};{{ end }}", values) == "a=1;b=2;"
    assert run("{{ range $i, $v := .Values.l }}{{ $i }}{{ . }}{{ end }}", values) == "0x1y"
    assert run("{{ range .Values.e }}x{{ else }}empty{{ end }}", values) == "empty"
    assert run("{{ with .Values.s }}[{{ . }}]{{ end }}{{ with .Values.e }}no{{ else }}else{{ end }}", values) == "[v]else"
    assert run("{{ if .Values.e }}a{{ else if .Values.s }}b{{ else }}c{{ end }}", values) == "b"
    assert run("{{ $x := 1 }}{{ if true }}{{ $x = 2 }}{{ end }}{{ $x }}") == "2"


def test_and_or_short_circuit_and_return_operands():
    assert run("{{ or .Values.a .Values.b }}", {"b": "B"}) == "B"
    assert run("{{ and .Values.a .Values.a.deeper }}") == ""
    assert run("{{ or .Values.b .Values.a.deeper }}", {"b": "B"}) == "B"


def test_functions():
    assert run('{{ "x" | quote }} {{ default "d" .Values.no }} {{ default "d" "set" }}') == '"x" d set'
    assert run('{{ printf "%s-%s" "a" "b" | trunc 3 | trimSuffix "-" }}') == "a-b"
    assert run('{{ "ab-" | trimSuffix "-" }}{{ contains "b" "abc" }}{{ replace "+" "_" "1+2" }}') == "abtrue1_2"
    assert run('{{ list "a" "b" | toYaml | nindent 2 }}') == "\n  - a\n  - b"
    assert run('{{ $d := dict "k" "v" }}{{ $d.k }}') == "v"
    assert run("{{ `{{ raw }}` }}") == "{{ raw }}"
    with pytest.raises(FailError, match="boom"):
        run('{{ fail "boom" }}')
    with pytest.raises(TemplateError, match='function "nope" not defined'):
        run("{{ if false }}{{ nope 1 }}{{ end }}")


def test_define_include_and_files(tmp_path):
    (tmp_path / "f.json").write_text('{"a": 1}')
    engine = Engine()
    engine.add("_helpers.tpl", '{{- define "x" -}}[{{ .k }}|{{ $.k }}]{{- end -}}')
    engine.add("t", '{{ include "x" (dict "k" "v") | indent 2 }} {{ .Files.Get "f.json" }}')
    assert engine.render("t", {"Files": Files(tmp_path)}) == '  [v|v] {"a": 1}'
    with pytest.raises(TemplateError, match="no template"):
        engine.add("u", '{{ include "y" . }}')
        engine.render("u", {})


def test_coalesce_merges_maps_and_null_deletes():
    assert coalesce({"a": {"b": 1, "c": 2}, "l": [1]}, {"a": {"b": 3, "c": None}, "l": [2]}) == {"a": {"b": 3}, "l": [2]}
