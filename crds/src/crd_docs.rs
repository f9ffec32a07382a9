//! Renders `docs/crds.md`, the CRD reference, from the same OpenAPI schemas the CRDs carry, so
//! the reference cannot drift from the API (a test fails when the committed file is stale).

use std::fmt::Write;

use kube::CustomResourceExt;
use serde_json::Value;

use crate::{InferenceModel, Tenant, Tier};

/// Where the reference is written, relative to the workspace root.
pub const CRD_DOCS_PATH: &str = "docs/crds.md";

fn type_of(schema: &Value) -> String {
    if schema.get("x-kubernetes-int-or-string").is_some() {
        return "int or string".into();
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("array") => format!("[]{}", schema.get("items").map(type_of).unwrap_or_default()),
        Some(other) => other.to_string(),
        None if schema.get("properties").is_some() => "object".into(),
        None => "any".into(),
    }
}

fn constraints(schema: &Value) -> String {
    let mut parts = Vec::new();
    for (key, label) in [
        ("minimum", "min"),
        ("maximum", "max"),
        ("minLength", "min length"),
        ("maxLength", "max length"),
        ("maxItems", "max items"),
    ] {
        if let Some(value) = schema.get(key) {
            // Schemars writes integer bounds as floats (1.0); print whole numbers as such.
            let text = match value.as_f64() {
                Some(number) if number.fract() == 0.0 && number.abs() < 1e15 => format!("{}", number as i64),
                _ => value.to_string(),
            };
            parts.push(format!("{label} {text}"));
        }
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        let values: Vec<String> = values
            .iter()
            .filter_map(Value::as_str)
            .map(|v| format!("`{v}`"))
            .collect();
        parts.push(format!("one of {}", values.join(", ")));
    }
    if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
        parts.push(format!("pattern `{}`", pattern.replace('|', "\\|")));
    }
    if let Some(default) = schema.get("default") {
        parts.push(format!("default `{default}`"));
    }
    for rule in schema
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(text) = rule.get("rule").and_then(Value::as_str) {
            parts.push(format!("rule `{}`", text.replace('|', "\\|")));
        }
    }
    parts.join("; ")
}

fn one_line(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

/// Rows for every field under `schema`, depth-first, stopping at Kubernetes core types
/// (affinity, tolerations, resources) whose reference lives upstream.
fn rows(out: &mut String, path: &str, schema: &Value, required: &[String], depth: usize) {
    let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
        return;
    };
    for (name, child) in properties {
        let field = if path.is_empty() {
            name.clone()
        } else {
            format!("{path}.{name}")
        };
        let required_mark = if required.contains(name) {
            " (required)"
        } else {
            ""
        };
        let description = child
            .get("description")
            .and_then(Value::as_str)
            .map(one_line)
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "| `{field}`{required_mark} | {} | {} | {} |",
            type_of(child),
            description,
            constraints(child)
        );
        let upstream = ["affinity", "tolerations", "resources", "conditions"].contains(&name.as_str());
        if depth < 4 && !upstream {
            let nested = match child.get("type").and_then(Value::as_str) {
                Some("array") => child.get("items").cloned().unwrap_or(Value::Null),
                _ => child.clone(),
            };
            let nested_required: Vec<String> = nested
                .get("required")
                .and_then(Value::as_array)
                .map(|r| r.iter().filter_map(Value::as_str).map(String::from).collect())
                .unwrap_or_default();
            let nested_path = if child.get("type").and_then(Value::as_str) == Some("array") {
                format!("{field}[]")
            } else {
                field
            };
            rows(out, &nested_path, &nested, &nested_required, depth + 1);
        }
    }
}

/// The Markdown reference of all three CRDs.
pub fn render() -> Result<String, serde_json::Error> {
    let mut out = String::from(
        "# CRD reference\n\nGenerated from the CRD schemas by `make generate` (`crdgen`); do not edit by hand.\n\
         Group `hearth.dev`, version `v1alpha1`.\n",
    );
    for crd in [Tier::crd(), Tenant::crd(), InferenceModel::crd()] {
        let crd = serde_json::to_value(&crd)?;
        let spec = &crd["spec"];
        let kind = spec["names"]["kind"].as_str().unwrap_or_default();
        let short: Vec<&str> = spec["names"]["shortNames"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let _ = writeln!(
            out,
            "\n## {kind}\n\nScope: {}; short name: `{}`.\n",
            spec["scope"].as_str().unwrap_or_default(),
            short.join("`, `")
        );
        let schema = &spec["versions"][0]["schema"]["openAPIV3Schema"];
        for section in ["spec", "status"] {
            let part = &schema["properties"][section];
            let required: Vec<String> = part
                .get("required")
                .and_then(Value::as_array)
                .map(|r| r.iter().filter_map(Value::as_str).map(String::from).collect())
                .unwrap_or_default();
            let _ = writeln!(out, "### {kind}.{section}\n");
            if let Some(rules) = part.get("x-kubernetes-validations").and_then(Value::as_array) {
                for rule in rules {
                    let _ = writeln!(
                        out,
                        "Rule: `{}` — {}\n",
                        rule["rule"].as_str().unwrap_or_default(),
                        rule["message"].as_str().unwrap_or_default()
                    );
                }
            }
            let _ = writeln!(
                out,
                "| field | type | description | constraints |\n|---|---|---|---|"
            );
            rows(&mut out, "", part, &required, 0);
            out.push('\n');
        }
    }
    Ok(out)
}
