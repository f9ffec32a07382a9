//! Matching a model source URI or name to a built-in catalog entry.

use super::architecture::ModelArchitecture;
use super::catalog::{CatalogModel, model_catalog};

/// Finds the catalog entry for a model source URI or name and returns its architecture.
///
/// The matching rule, chosen so that a near miss never resolves to the wrong size:
/// 1. Drop the scheme (`hf://`, `file://`, `s3://` …), any `?query` or `#fragment`, and split
///    the rest into path segments; an `@revision` suffix on a segment is dropped.
/// 2. Try segments from the last to the first; the first segment that matches wins, so
///    `hf://meta-llama/Llama-3.1-8B-Instruct` is decided by `Llama-3.1-8B-Instruct` and
///    `s3://bucket/Qwen2.5-7B/model.safetensors` by `Qwen2.5-7B`.
/// 3. A segment is compared case-insensitively, with `_` and spaces read as `-` and a leading
///    `Meta-` ignored (`Meta-Llama-3.1-8B`).
/// 4. It matches a catalog name or alias when it *starts with* that name and the name is
///    followed by the end or by `-` or `.`. Suffixes such as `-Instruct`, `-Chat`, `-it`,
///    `-AWQ`, `-GGUF`, `-v0.3` or `.Q4_1.gguf` are thereby ignored, while `Llama-3.1-70B` does
///    not match `Llama-3.1-8B` (the name is not a prefix) and `Llama-3.1-8Bx` does not either
///    (the next character is not a separator). The longest matching name wins.
///
/// Names with a different prefix, such as `Qwen2.5-Coder-7B` or `DeepSeek-R1-Distill-Llama-8B`,
/// are deliberately not matched even where the architecture is shared: the caller should read
/// their `config.json` instead.
pub fn lookup_model(reference: &str) -> Option<ModelArchitecture> {
    lookup_catalog_model(reference).map(CatalogModel::architecture)
}

/// Like [`lookup_model`], but returns the catalog entry itself (canonical name and aliases).
pub fn lookup_catalog_model(reference: &str) -> Option<&'static CatalogModel> {
    let without_scheme = reference.split_once("://").map_or(reference, |(_, rest)| rest);
    let path = without_scheme.split(['?', '#']).next().unwrap_or_default();
    path.rsplit('/')
        .map(|segment| segment.split('@').next().unwrap_or_default())
        .filter(|segment| !segment.is_empty())
        .find_map(|segment| best_match(&normalize(segment)))
}

/// Lower-cases, reads `_` and spaces as `-`, and drops a leading `meta-`.
fn normalize(name: &str) -> String {
    let normalized: String = name
        .chars()
        .map(|character| match character {
            '_' | ' ' => '-',
            other => other.to_ascii_lowercase(),
        })
        .collect();
    match normalized.strip_prefix("meta-") {
        Some(rest) => rest.to_owned(),
        None => normalized,
    }
}

/// The catalog entry whose name or alias is the longest separator-bounded prefix of `segment`.
fn best_match(segment: &str) -> Option<&'static CatalogModel> {
    model_catalog()
        .iter()
        .flat_map(|model| {
            std::iter::once(model.name)
                .chain(model.aliases.iter().copied())
                .map(move |name| (model, name))
        })
        .filter_map(|(model, name)| {
            let name = normalize(name);
            let rest = segment.strip_prefix(name.as_str())?;
            let bounded = rest.is_empty() || rest.starts_with(['-', '.']);
            bounded.then_some((name.len(), model))
        })
        .max_by_key(|(length, _)| *length)
        .map(|(_, model)| model)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolved(reference: &str) -> Option<String> {
        lookup_model(reference).map(|model| model.name)
    }

    #[test]
    fn matches_uris_and_names_with_suffixes() {
        let cases = [
            ("hf://meta-llama/Llama-3.1-8B-Instruct", "Llama-3.1-8B"),
            ("meta-llama/Meta-Llama-3.1-8B", "Llama-3.1-8B"),
            ("Meta-Llama-3-8B-Instruct", "Llama-3.1-8B"),
            ("hf://meta-llama/Llama-3.3-70B-Instruct@main", "Llama-3.1-70B"),
            ("meta-llama/Llama-3.1-405B-Instruct-FP8", "Llama-3.1-405B"),
            ("llama-3.2-1b-instruct-q8_0.gguf", "Llama-3.2-1B"),
            ("Qwen/Qwen2.5-7B-Instruct-AWQ", "Qwen2.5-7B"),
            ("hf://Qwen/Qwen2.5-1.5B-Instruct-GGUF", "Qwen2.5-1.5B"),
            ("qwen2.5-0.5b-instruct-q4_k_m.gguf", "Qwen2.5-0.5B"),
            ("file:///models/SmolLM2-135M-Instruct.Q4_1.gguf", "SmolLM2-135M"),
            (
                "pvc://models/HuggingFaceTB/SmolLM2-1.7B-Instruct/",
                "SmolLM2-1.7B",
            ),
            (
                "s3://weights/mixtral-8x7b-instruct-v0.1/model-00001-of-00019.safetensors",
                "Mixtral-8x7B",
            ),
            ("mistral-7b-instruct-v0.2.Q4_K_M.gguf", "Mistral-7B"),
            ("microsoft/Phi-3-mini-4k-instruct", "Phi-3-mini"),
            ("microsoft/Phi-3.5-mini-instruct", "Phi-3-mini"),
            ("microsoft/Phi-3-medium-128k-instruct", "Phi-3-medium"),
            ("google/gemma-2-9b-it", "gemma-2-9b"),
            ("GEMMA-2-27B", "gemma-2-27b"),
        ];
        for (reference, expected) in cases {
            assert_eq!(resolved(reference).as_deref(), Some(expected), "{reference}");
        }
    }

    #[test]
    fn never_resolves_a_near_miss_to_the_wrong_size() {
        let unmatched = [
            "Qwen2.5-15B",
            "Qwen2.5-5B",
            "Llama-3.1-80B",
            "Llama-3.1-8Bx",
            "Mixtral-8x22B-Instruct-v0.1",
            "Qwen/Qwen2.5-Coder-7B-Instruct",
            "deepseek-ai/DeepSeek-R1-Distill-Llama-8B",
            "TinyLlama/TinyLlama-1.1B-Chat-v1.0",
            "hf://meta-llama",
            "",
        ];
        for reference in unmatched {
            assert_eq!(resolved(reference), None, "{reference}");
        }
        assert_eq!(resolved("Llama-3.1-70B").as_deref(), Some("Llama-3.1-70B"));
        assert_eq!(resolved("Qwen2.5-1.5B").as_deref(), Some("Qwen2.5-1.5B"));
    }

    #[test]
    fn every_catalog_entry_resolves_to_itself_and_is_valid() {
        for model in model_catalog() {
            assert_eq!(resolved(model.name).as_deref(), Some(model.name));
            for alias in model.aliases {
                assert_eq!(resolved(alias).as_deref(), Some(model.name), "{alias}");
            }
            assert_eq!(model.architecture().validate(), Ok(()), "{}", model.name);
        }
    }
}
