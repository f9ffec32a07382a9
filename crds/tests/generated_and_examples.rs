//! The committed CRD YAML is fresh, and every example CR passes the generated OpenAPI schema
//! (checked by an independent JSON-schema validator) and the CRDs' CEL rules.

use std::path::{Path, PathBuf};

use hearth_crds::{InferenceModel, Tenant, Tier};
use kube::CustomResourceExt;
use serde_json::Value;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn committed_crd_yaml_is_fresh() {
    let documents = hearth_crds::crdgen::crd_documents().expect("CRDs render");
    for dir in hearth_crds::crdgen::OUTPUT_DIRS {
        for (name, expected) in &documents {
            let path = workspace_root().join(dir).join(name);
            let actual = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                actual == *expected,
                "{} is stale: run `make generate` and commit the result",
                path.display()
            );
        }
    }
}

#[test]
fn committed_crd_reference_is_fresh() {
    let expected = hearth_crds::crd_docs::render().expect("reference renders");
    let path = workspace_root().join(hearth_crds::crd_docs::CRD_DOCS_PATH);
    let actual = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        actual == expected,
        "{} is stale: run `make generate` and commit the result",
        path.display()
    );
    assert!(
        expected.contains("| `replicas.min` | integer |"),
        "field rows are rendered"
    );
}

/// The `openAPIV3Schema` of a CRD, as JSON.
fn schema_of(
    crd: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
) -> Value {
    let crd = serde_json::to_value(crd).expect("CRD serialises");
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

fn schema_errors(kind: &str, object: &Value) -> Vec<String> {
    let schema = match kind {
        "InferenceModel" => schema_of(&InferenceModel::crd()),
        "Tenant" => schema_of(&Tenant::crd()),
        "Tier" => schema_of(&Tier::crd()),
        other => panic!("unexpected kind {other}"),
    };
    let validator = jsonschema::validator_for(&schema).expect("schema compiles");
    validator
        .iter_errors(object)
        .map(|e| format!("{}: {}", e.instance_path(), e))
        .collect()
}

fn cel_errors(kind: &str, object: &Value) -> Result<(), String> {
    let result = match kind {
        "InferenceModel" => kube::core::cel::validate_cel(
            &serde_json::from_value::<InferenceModel>(object.clone()).map_err(|e| e.to_string())?,
        ),
        "Tenant" => kube::core::cel::validate_cel(
            &serde_json::from_value::<Tenant>(object.clone()).map_err(|e| e.to_string())?,
        ),
        "Tier" => kube::core::cel::validate_cel(
            &serde_json::from_value::<Tier>(object.clone()).map_err(|e| e.to_string())?,
        ),
        other => panic!("unexpected kind {other}"),
    };
    result.map_err(|e| format!("{e:?}"))
}

/// Hearth's resources in `examples/` (other kinds there, such as a model's volume, are
/// Kubernetes' own: the cluster test applies them to a real apiserver).
fn example_documents() -> Vec<(PathBuf, Value)> {
    let mut files = Vec::new();
    let mut dirs = vec![workspace_root().join("examples")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("examples dir readable") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml") {
                files.push(path);
            }
        }
    }
    files.sort();
    let mut documents = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).expect("example readable");
        for document in serde_yaml::Deserializer::from_str(&text) {
            let value: Value = serde::Deserialize::deserialize(document).expect("example is YAML");
            let api_version = value["apiVersion"].as_str().unwrap_or_default();
            if api_version.starts_with("hearth.dev/") {
                documents.push((path.clone(), value));
            }
        }
    }
    documents
}

#[test]
fn every_example_passes_schema_and_cel() {
    let documents = example_documents();
    assert!(
        documents.len() >= 8,
        "expected the example CRs, found {}",
        documents.len()
    );
    for (path, object) in documents {
        let kind = object["kind"].as_str().expect("example has a kind").to_string();
        let errors = schema_errors(&kind, &object);
        assert!(errors.is_empty(), "{}: {errors:?}", path.display());
        if let Err(error) = cel_errors(&kind, &object) {
            panic!("{}: CEL rules refused the example: {error}", path.display());
        }
    }
}

fn model(spec: Value) -> Value {
    serde_json::json!({
        "apiVersion": "hearth.dev/v1alpha1",
        "kind": "InferenceModel",
        "metadata": {"name": "m", "namespace": "ns"},
        "spec": spec,
    })
}

#[test]
fn schema_refuses_bad_fields_and_names_them() {
    let bad_type = model(
        serde_json::json!({"servedName": "m", "source": {"uri": "hf://a/b"}, "replicas": {"min": "two"}}),
    );
    let errors = schema_errors("InferenceModel", &bad_type);
    assert!(
        errors.iter().any(|e| e.starts_with("/spec/replicas/min")),
        "{errors:?}"
    );

    let bad_name = model(serde_json::json!({"servedName": "Not_DNS", "source": {"uri": "hf://a/b"}}));
    let errors = schema_errors("InferenceModel", &bad_name);
    assert!(
        errors.iter().any(|e| e.starts_with("/spec/servedName")),
        "{errors:?}"
    );

    let bad_uri = model(serde_json::json!({"servedName": "m", "source": {"uri": "ftp://x"}}));
    assert!(!schema_errors("InferenceModel", &bad_uri).is_empty());

    let bad_price = serde_json::json!({
        "apiVersion": "hearth.dev/v1alpha1", "kind": "Tier", "metadata": {"name": "t"},
        "spec": {"pricing": {"inputPerMillionTokens": "1e3", "outputPerMillionTokens": "1"}},
    });
    let errors = schema_errors("Tier", &bad_price);
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("/spec/pricing/inputPerMillionTokens")),
        "{errors:?}"
    );
}

#[test]
fn cel_rules_refuse_what_the_issue_names() {
    let inverted = model(
        serde_json::json!({"servedName": "m", "source": {"uri": "hf://a/b"}, "replicas": {"min": 3, "max": 2}}),
    );
    let error = cel_errors("InferenceModel", &inverted).expect_err("min > max refused");
    assert!(
        error.contains("replicas.min must not exceed replicas.max"),
        "{error}"
    );

    let tensor_three = model(
        serde_json::json!({"servedName": "m", "source": {"uri": "hf://a/b"}, "parallelism": {"tensor": 3}}),
    );
    let error = cel_errors("InferenceModel", &tensor_three).expect_err("tensor 3 refused");
    assert!(error.contains("power of two"), "{error}");

    let ok = model(
        serde_json::json!({"servedName": "m", "source": {"uri": "hf://a/b"}, "parallelism": {"tensor": 8}}),
    );
    assert_eq!(cel_errors("InferenceModel", &ok), Ok(()));
}

#[test]
fn source_uri_is_immutable_unless_allowed() {
    let old: InferenceModel = serde_json::from_value(model(
        serde_json::json!({"servedName": "m", "source": {"uri": "hf://a/b"}}),
    ))
    .expect("parses");
    let mut changed = old.clone();
    changed.spec.source.uri = "hf://a/c".into();
    let error = kube::core::cel::validate_cel_update(&changed, &old).expect_err("uri change refused");
    assert!(
        format!("{error:?}").contains("source.uri is immutable"),
        "{error:?}"
    );
    changed.spec.source.allow_uri_change = true;
    assert!(kube::core::cel::validate_cel_update(&changed, &old).is_ok());
    let mut other_field = old.clone();
    other_field.spec.replicas.max = 3;
    assert!(kube::core::cel::validate_cel_update(&other_field, &old).is_ok());
}
