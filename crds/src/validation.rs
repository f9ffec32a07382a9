//! Pure validation of specs beyond what the OpenAPI schema can say, and a repeat of the
//! schema's CEL rules for paths where no API server checks them (local mode reads YAML files).
//! Every error names the field and the limit.

use crate::inference_model::InferenceModelSpec;
use crate::tenant::TenantSpec;
use crate::tier::TierSpec;

/// A spec field that breaks a rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("spec.{field}: {message}")]
pub struct SpecError {
    /// Dotted path under `spec`, e.g. `replicas.min`.
    pub field: String,
    /// What is wrong and what the limit is.
    pub message: String,
}

fn error(field: impl Into<String>, message: impl Into<String>) -> SpecError {
    SpecError {
        field: field.into(),
        message: message.into(),
    }
}

/// True for a non-empty lowercase DNS-style name of at most `max` characters
/// (`[a-z0-9]`, inner `-` and, when `allow_dots`, `.`).
pub fn is_dns_name(value: &str, max: usize, allow_dots: bool) -> bool {
    let bytes = value.as_bytes();
    let inner_ok =
        |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-' || (allow_dots && *b == b'.');
    let edge_ok = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    !bytes.is_empty()
        && bytes.len() <= max
        && bytes.iter().all(inner_ok)
        && bytes.first().is_some_and(edge_ok)
        && bytes.last().is_some_and(edge_ok)
}

/// True for a decimal string such as `0.50` (digits, optional fraction, no sign or exponent).
pub fn is_decimal(value: &str) -> bool {
    let (whole, fraction) = value.split_once('.').unwrap_or((value, "0"));
    (1..=12).contains(&whole.len())
        && (1..=9).contains(&fraction.len())
        && whole.bytes().all(|b| b.is_ascii_digit())
        && fraction.bytes().all(|b| b.is_ascii_digit())
}

/// Validates an InferenceModel spec; returns every problem found.
pub fn validate_inference_model(spec: &InferenceModelSpec) -> Vec<SpecError> {
    let mut errors = Vec::new();
    if !is_dns_name(&spec.served_name, 63, true) {
        errors.push(error(
            "servedName",
            format!(
                "{:?} must be 1-63 lowercase letters, digits, '-' or '.', starting and ending alphanumeric",
                spec.served_name
            ),
        ));
    }
    let scheme_ok = ["hf://", "pvc://", "s3://", "http://", "https://", "file://"]
        .iter()
        .any(|scheme| spec.source.uri.starts_with(scheme) && spec.source.uri.len() > scheme.len());
    if !scheme_ok {
        errors.push(error(
            "source.uri",
            format!(
                "{:?} must start with hf://, pvc://, s3://, http(s):// or file:// and name a model",
                spec.source.uri
            ),
        ));
    }
    if spec.replicas.min > spec.replicas.max {
        errors.push(error(
            "replicas.min",
            format!(
                "{} must not exceed replicas.max ({})",
                spec.replicas.min, spec.replicas.max
            ),
        ));
    }
    if spec.replicas.max == 0 {
        errors.push(error("replicas.max", "must be at least 1"));
    }
    if ![1, 2, 4, 8].contains(&spec.parallelism.tensor) {
        errors.push(error(
            "parallelism.tensor",
            format!("{} must be 1, 2, 4 or 8", spec.parallelism.tensor),
        ));
    }
    if !(1..=16).contains(&spec.parallelism.pipeline) {
        errors.push(error(
            "parallelism.pipeline",
            format!("{} must be between 1 and 16", spec.parallelism.pipeline),
        ));
    }
    let engine = &spec.engine;
    if !(1..=1024).contains(&engine.max_batch_size) {
        errors.push(error(
            "engine.maxBatchSize",
            format!("{} must be between 1 and 1024", engine.max_batch_size),
        ));
    }
    if !(16..=1_048_576).contains(&engine.max_context_tokens) {
        errors.push(error(
            "engine.maxContextTokens",
            format!("{} must be between 16 and 1048576", engine.max_context_tokens),
        ));
    }
    if !(0.05..=0.98).contains(&engine.kv_cache_fraction) {
        errors.push(error(
            "engine.kvCacheFraction",
            format!("{} must be between 0.05 and 0.98", engine.kv_cache_fraction),
        ));
    }
    if !["auto", "float16", "bfloat16", "float32"].contains(&engine.dtype.as_str()) {
        errors.push(error(
            "engine.dtype",
            format!("{:?} must be auto, float16, bfloat16 or float32", engine.dtype),
        ));
    }
    if spec.autoscaling.target == 0 {
        errors.push(error("autoscaling.target", "must be at least 1"));
    }
    if let Some(gpu) = &spec.gpu
        && crate::planner::lookup_gpu(&gpu.type_).is_none()
        && gpu.memory_gib.is_none()
    {
        let known: Vec<&str> = crate::planner::gpu_catalog().iter().map(|g| g.name).collect();
        errors.push(error(
            "gpu.type",
            format!(
                "{:?} is not in the GPU catalog ({}); set gpu.memoryGiB to use it anyway",
                gpu.type_,
                known.join(", ")
            ),
        ));
    }
    errors
}

/// Validates a Tier spec; returns every problem found.
pub fn validate_tier(spec: &TierSpec) -> Vec<SpecError> {
    let mut errors = Vec::new();
    if spec.weight == 0 {
        errors.push(error("weight", "must be at least 1"));
    }
    if let Some(pricing) = &spec.pricing {
        let prices = [
            (
                "pricing.inputPerMillionTokens",
                Some(&pricing.input_per_million_tokens),
            ),
            (
                "pricing.outputPerMillionTokens",
                Some(&pricing.output_per_million_tokens),
            ),
            ("pricing.gpuHour", pricing.gpu_hour.as_ref()),
        ];
        for (field, value) in prices {
            if let Some(value) = value.filter(|v| !is_decimal(v)) {
                errors.push(error(
                    field,
                    format!("{value:?} must be a decimal such as \"0.50\" (at most 12 integer and 9 fraction digits)"),
                ));
            }
        }
    }
    for (index, model) in spec.models.iter().enumerate() {
        if !is_dns_name(model, 63, true) {
            errors.push(error(
                format!("models[{index}]"),
                format!("{model:?} is not a valid servedName"),
            ));
        }
    }
    errors
}

/// Validates a Tenant spec; returns every problem found.
pub fn validate_tenant(spec: &TenantSpec) -> Vec<SpecError> {
    let mut errors = Vec::new();
    if spec.tier_ref.is_empty() {
        errors.push(error("tierRef", "must name a Tier"));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (index, key) in spec.api_keys.iter().enumerate() {
        if !is_dns_name(&key.name, 40, false) {
            errors.push(error(
                format!("apiKeys[{index}].name"),
                format!("{:?} must be 1-40 lowercase letters, digits or '-'", key.name),
            ));
        }
        if !seen.insert(key.name.as_str()) {
            errors.push(error(
                format!("apiKeys[{index}].name"),
                format!("{:?} is listed twice", key.name),
            ));
        }
    }
    if spec.api_keys.len() > 32 {
        errors.push(error(
            "apiKeys",
            format!("{} keys exceed the limit of 32", spec.api_keys.len()),
        ));
    }
    if let Some(budget) = &spec.budget
        && !is_decimal(&budget.monthly_limit)
    {
        errors.push(error(
            "budget.monthlyLimit",
            format!("{:?} must be a decimal such as \"250.00\"", budget.monthly_limit),
        ));
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names() {
        assert!(is_dns_name("llama-3.1-8b", 63, true));
        assert!(!is_dns_name("llama-3.1-8b", 63, false));
        assert!(!is_dns_name("Llama", 63, true));
        assert!(!is_dns_name("-a", 63, true));
        assert!(!is_dns_name("a-", 63, true));
        assert!(!is_dns_name("", 63, true));
        assert!(!is_dns_name(&"a".repeat(64), 63, true));
    }

    #[test]
    fn decimals() {
        assert!(is_decimal("0.50"));
        assert!(is_decimal("12"));
        assert!(!is_decimal("1e3"));
        assert!(!is_decimal("-1"));
        assert!(!is_decimal(".5"));
        assert!(!is_decimal("1."));
        assert!(!is_decimal("0.1234567890"));
    }

    fn model(yaml: &str) -> InferenceModelSpec {
        serde_yaml::from_str(yaml).expect("test spec parses")
    }

    #[test]
    fn inference_model_rules_name_the_field_and_limit() {
        let spec = model(
            "servedName: Bad_Name\nsource: {uri: ftp://x}\nreplicas: {min: 3, max: 2}\nparallelism: {tensor: 3}\n",
        );
        let fields: Vec<String> = validate_inference_model(&spec)
            .into_iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(fields.len(), 4, "{fields:?}");
        assert!(fields[0].starts_with("spec.servedName: \"Bad_Name\""));
        assert!(fields[1].starts_with("spec.source.uri"));
        assert_eq!(fields[2], "spec.replicas.min: 3 must not exceed replicas.max (2)");
        assert_eq!(fields[3], "spec.parallelism.tensor: 3 must be 1, 2, 4 or 8");
    }

    #[test]
    fn unknown_gpu_needs_memory() {
        let spec = model("servedName: m\nsource: {uri: hf://a/b}\ngpu: {type: acme-x1}\n");
        let errors = validate_inference_model(&spec);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "gpu.type");
        let spec = model("servedName: m\nsource: {uri: hf://a/b}\ngpu: {type: acme-x1, memoryGiB: 32}\n");
        assert!(validate_inference_model(&spec).is_empty());
    }

    #[test]
    fn tier_prices_must_be_decimals() {
        let spec: TierSpec =
            serde_yaml::from_str("pricing: {inputPerMillionTokens: '0.5', outputPerMillionTokens: '1e3'}\n")
                .expect("parses");
        let errors = validate_tier(&spec);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "pricing.outputPerMillionTokens");
    }

    #[test]
    fn tenant_duplicate_keys_are_refused() {
        let spec: TenantSpec =
            serde_yaml::from_str("tierRef: gold\napiKeys: [{name: a}, {name: a}]\n").expect("parses");
        let errors = validate_tenant(&spec);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "apiKeys[1].name");
    }
}
