//! Loading a folder of Tier/Tenant/InferenceModel YAML for local mode, with the same checks a
//! cluster applies (schema types, CEL rules, spec validation) and errors that name the file,
//! the document and the field.

use std::path::{Path, PathBuf};

use hearth_crds::validation::{SpecError, validate_inference_model, validate_tenant, validate_tier};
use hearth_crds::{InferenceModel, Tenant, Tier};
use serde::de::DeserializeOwned;

/// A problem with the local configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The folder or a file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// File or folder.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A document is not valid YAML or does not match its kind's schema.
    #[error("{path} (document {document}): {message}")]
    Parse {
        /// File.
        path: PathBuf,
        /// 1-based index of the document in the file.
        document: usize,
        /// The parser's message, with line, column and field.
        message: String,
    },
    /// A `${VAR}` reference names an unset environment variable.
    #[error("{path}: ${{{variable}}} is not set in the environment")]
    UnsetVariable {
        /// File.
        path: PathBuf,
        /// Variable name.
        variable: String,
    },
    /// A resource broke a validation rule.
    #[error("{path}: {kind} {name}: {error}")]
    Invalid {
        /// File.
        path: PathBuf,
        /// Kind.
        kind: &'static str,
        /// Object name.
        name: String,
        /// The rule that failed.
        error: SpecError,
    },
    /// A reference between resources does not resolve.
    #[error("{path}: Tenant {tenant}: spec.tierRef: Tier {tier:?} is not defined in the config folder")]
    UnknownTier {
        /// File.
        path: PathBuf,
        /// Tenant name.
        tenant: String,
        /// The missing tier.
        tier: String,
    },
    /// Nothing to serve.
    #[error("{0}: no InferenceModel found")]
    NoModels(PathBuf),
}

/// The resources of a local configuration, each with the file it came from.
#[derive(Debug, Default, Clone)]
pub struct LocalConfig {
    /// Tiers.
    pub tiers: Vec<(PathBuf, Tier)>,
    /// Tenants.
    pub tenants: Vec<(PathBuf, Tenant)>,
    /// InferenceModels.
    pub models: Vec<(PathBuf, InferenceModel)>,
}

/// Replaces `${NAME}` with the environment variable's value.
fn expand_variables(
    path: &Path,
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let variable = &after[..end];
        let value = lookup(variable).ok_or_else(|| ConfigError::UnsetVariable {
            path: path.to_path_buf(),
            variable: variable.to_string(),
        })?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Splits a multi-document YAML text on `---` lines; returns each document with the 1-based
/// line it starts on, so parser positions can be related to the file.
fn split_documents(text: &str) -> Vec<(usize, &str)> {
    let mut documents = Vec::new();
    let mut start = 0;
    let mut start_line = 1;
    let mut offset = 0;
    for (index, line) in text.split_inclusive('\n').enumerate() {
        if line.trim_end() == "---" {
            documents.push((start_line, &text[start..offset]));
            start = offset + line.len();
            start_line = index + 2;
        }
        offset += line.len();
    }
    documents.push((start_line, &text[start..]));
    documents
}

/// Parses a typed resource straight from the document text, so errors carry the field path
/// and the line and column.
fn parse_as<K: DeserializeOwned>(document: &str) -> Result<K, String> {
    serde_yaml::from_str(document).map_err(|e| e.to_string())
}

fn check_cel<K: kube::CustomResourceExt + serde::Serialize>(object: &K) -> Result<(), String> {
    kube::core::cel::validate_cel(object)
        .map_err(|errors| format!("rejected by the CRD's validation rules: {errors:?}"))
}

/// Loads and validates every `*.yaml`/`*.yml` file in `dir` (sorted by name), expanding
/// `${VAR}` from the environment.
pub fn load(dir: &Path) -> Result<LocalConfig, ConfigError> {
    load_with(dir, &|name| std::env::var(name).ok())
}

/// [`load`] with an explicit variable lookup (for tests).
pub fn load_with(dir: &Path, lookup: &dyn Fn(&str) -> Option<String>) -> Result<LocalConfig, ConfigError> {
    let read_dir = |source| ConfigError::Read {
        path: dir.to_path_buf(),
        source,
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(read_dir)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    let mut config = LocalConfig::default();
    for path in files {
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        let text = expand_variables(&path, &text, lookup)?;
        for (index, (first_line, document)) in split_documents(&text).into_iter().enumerate() {
            let number = index + 1;
            let parse_error = |message: String| ConfigError::Parse {
                path: path.clone(),
                document: number,
                message: format!("{message} (document starts at line {first_line})"),
            };
            let value: serde_yaml::Value =
                serde_yaml::from_str(document).map_err(|e| parse_error(e.to_string()))?;
            if value.is_null() {
                continue;
            }
            let kind = value
                .get("kind")
                .and_then(|k| k.as_str())
                .unwrap_or_default()
                .to_string();
            match kind.as_str() {
                "Tier" => {
                    let tier: Tier = parse_as(document).map_err(parse_error)?;
                    check_cel(&tier).map_err(parse_error)?;
                    config.tiers.push((path.clone(), tier));
                }
                "Tenant" => {
                    let mut tenant: Tenant = parse_as(document).map_err(parse_error)?;
                    check_cel(&tenant).map_err(parse_error)?;
                    tenant.metadata.namespace.get_or_insert_with(|| "default".into());
                    config.tenants.push((path.clone(), tenant));
                }
                "InferenceModel" => {
                    let mut model: InferenceModel = parse_as(document).map_err(parse_error)?;
                    check_cel(&model).map_err(parse_error)?;
                    model.metadata.namespace.get_or_insert_with(|| "default".into());
                    config.models.push((path.clone(), model));
                }
                other => {
                    return Err(parse_error(format!(
                        "kind {other:?} is not one of Tier, Tenant, InferenceModel"
                    )));
                }
            }
        }
    }
    validate(&config)?;
    if config.models.is_empty() {
        return Err(ConfigError::NoModels(dir.to_path_buf()));
    }
    Ok(config)
}

fn name_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    meta.name.clone().unwrap_or_default()
}

fn validate(config: &LocalConfig) -> Result<(), ConfigError> {
    for (path, tier) in &config.tiers {
        if let Some(error) = validate_tier(&tier.spec).into_iter().next() {
            return Err(ConfigError::Invalid {
                path: path.clone(),
                kind: "Tier",
                name: name_of(&tier.metadata),
                error,
            });
        }
    }
    for (path, tenant) in &config.tenants {
        if let Some(error) = validate_tenant(&tenant.spec).into_iter().next() {
            return Err(ConfigError::Invalid {
                path: path.clone(),
                kind: "Tenant",
                name: name_of(&tenant.metadata),
                error,
            });
        }
        if !config
            .tiers
            .iter()
            .any(|(_, t)| t.metadata.name.as_deref() == Some(tenant.spec.tier_ref.as_str()))
        {
            return Err(ConfigError::UnknownTier {
                path: path.clone(),
                tenant: name_of(&tenant.metadata),
                tier: tenant.spec.tier_ref.clone(),
            });
        }
    }
    for (path, model) in &config.models {
        if let Some(error) = validate_inference_model(&model.spec).into_iter().next() {
            return Err(ConfigError::Invalid {
                path: path.clone(),
                kind: "InferenceModel",
                name: name_of(&model.metadata),
                error,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(files: &[(&str, &str)]) -> tempdir::TempDir {
        let dir = tempdir::TempDir::new();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).expect("write fixture");
        }
        dir
    }

    /// A throwaway directory removed on drop (std only).
    mod tempdir {
        pub struct TempDir(std::path::PathBuf);
        impl TempDir {
            pub fn new() -> Self {
                let path = std::env::temp_dir().join(format!(
                    "hearth-local-test-{}-{}",
                    std::process::id(),
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_nanos())
                        .unwrap_or(0)
                ));
                std::fs::create_dir_all(&path).expect("temp dir");
                Self(path)
            }
            pub fn path(&self) -> &std::path::Path {
                &self.0
            }
        }
        impl Drop for TempDir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn the_shipped_local_example_loads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/local");
        let config = load_with(&dir, &|_| Some("/models/smollm2.gguf".into())).expect("example is valid");
        assert_eq!(
            (config.tiers.len(), config.tenants.len(), config.models.len()),
            (1, 1, 1)
        );
        assert_eq!(config.models[0].1.spec.source.uri, "file:///models/smollm2.gguf");
    }

    #[test]
    fn wrong_field_type_names_file_document_line_and_field() {
        let dir = folder(&[(
            "m.yaml",
            "apiVersion: hearth.dev/v1alpha1\nkind: InferenceModel\nmetadata: {name: m}\nspec:\n  servedName: m\n  source: {uri: 'file:///x.gguf'}\n  replicas:\n    min: two\n",
        )]);
        let error = load_with(dir.path(), &|_| None).expect_err("refused").to_string();
        assert!(error.contains("m.yaml (document 1)"), "{error}");
        assert!(error.contains("spec.replicas.min"), "{error}");
        assert!(error.contains("line"), "{error}");
    }

    #[test]
    fn cel_rules_apply_without_an_api_server() {
        let dir = folder(&[(
            "m.yaml",
            "apiVersion: hearth.dev/v1alpha1\nkind: InferenceModel\nmetadata: {name: m}\nspec:\n  servedName: m\n  source: {uri: 'file:///x.gguf'}\n  replicas: {min: 3, max: 1}\n",
        )]);
        let error = load_with(dir.path(), &|_| None).expect_err("refused").to_string();
        assert!(
            error.contains("replicas.min must not exceed replicas.max"),
            "{error}"
        );
    }

    #[test]
    fn unset_variable_and_unknown_tier_are_named() {
        let dir = folder(&[(
            "m.yaml",
            "kind: InferenceModel\nmetadata: {name: m}\nspec: {servedName: m, source: {uri: 'file://${NOPE}'}}\n",
        )]);
        let error = load_with(dir.path(), &|_| None).expect_err("refused").to_string();
        assert!(
            error.ends_with("${NOPE} is not set in the environment"),
            "{error}"
        );

        let dir = folder(&[
            (
                "m.yaml",
                "kind: InferenceModel\nmetadata: {name: m}\nspec: {servedName: m, source: {uri: 'file:///x'}}\n",
            ),
            (
                "t.yaml",
                "kind: Tenant\nmetadata: {name: t}\nspec: {tierRef: gold}\n",
            ),
        ]);
        let error = load_with(dir.path(), &|_| None).expect_err("refused").to_string();
        assert!(
            error.contains("Tenant t: spec.tierRef: Tier \"gold\" is not defined"),
            "{error}"
        );
    }
}
