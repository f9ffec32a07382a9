//! Who may serve a `servedName`. The gateway's model ids are one namespace for the whole
//! install, so a name belongs to one Kubernetes namespace: the one of its oldest InferenceModel
//! (ties broken by `namespace/name`). Canaries and A/B variants share a name only within that
//! namespace; an InferenceModel elsewhere that asks for it is not served and is told why.

use std::collections::BTreeMap;

use hearth_crds::InferenceModel;

use crate::object_id;

/// The InferenceModel that holds a served name, as `namespace/name`, with its namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// `namespace/name` of the oldest InferenceModel asking for the name.
    pub model: String,
    /// Its namespace: the only one whose InferenceModels serve the name.
    pub namespace: String,
}

impl Holder {
    /// Whether `model` may serve its served name under this holder.
    pub fn admits(&self, model: &InferenceModel) -> bool {
        model.metadata.namespace.as_deref() == Some(self.namespace.as_str())
    }
}

/// The holder of each served name among `models`.
pub fn holders<'a>(models: impl IntoIterator<Item = &'a InferenceModel>) -> BTreeMap<String, Holder> {
    let mut oldest: BTreeMap<&str, &InferenceModel> = BTreeMap::new();
    for model in models {
        if model.metadata.namespace.is_none() {
            continue;
        }
        oldest
            .entry(model.spec.served_name.as_str())
            .and_modify(|held| {
                if claim_order(model) < claim_order(held) {
                    *held = model;
                }
            })
            .or_insert(model);
    }
    oldest
        .into_iter()
        .map(|(name, model)| {
            let holder = Holder {
                model: object_id(&model.metadata),
                namespace: namespace_of(model).to_string(),
            };
            (name.to_string(), holder)
        })
        .collect()
}

fn namespace_of(model: &InferenceModel) -> &str {
    model.metadata.namespace.as_deref().unwrap_or_default()
}

/// Sorts claims: created earlier first, an object without a creation time last, then by
/// `namespace/name`.
fn claim_order(model: &InferenceModel) -> (bool, Option<i64>, &str, &str) {
    let created = model
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|time| time.0.as_second());
    (
        created.is_none(),
        created,
        namespace_of(model),
        model.metadata.name.as_deref().unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(namespace: &str, name: &str, served: &str, created: Option<i64>) -> InferenceModel {
        let created = created.map(|s| {
            k8s_openapi::jiff::Timestamp::from_second(s)
                .expect("time")
                .to_string()
        });
        serde_json::from_value(serde_json::json!({
            "apiVersion": "hearth.dev/v1alpha1", "kind": "InferenceModel",
            "metadata": {"name": name, "namespace": namespace, "creationTimestamp": created},
            "spec": {"servedName": served, "source": {"uri": "file:///m.gguf"}}
        }))
        .expect("model")
    }

    #[test]
    fn the_oldest_model_s_namespace_holds_the_name() {
        let models = [
            model("team-b", "llama", "llama", Some(200)),
            model("team-a", "llama", "llama", Some(100)),
            model("team-a", "llama-canary", "llama", Some(300)),
            model("team-c", "qwen", "qwen", None),
        ];
        let holders = holders(&models);
        assert_eq!(holders["llama"].model, "team-a/llama");
        assert!(
            holders["llama"].admits(&models[2]),
            "a canary in the holder's namespace"
        );
        assert!(!holders["llama"].admits(&models[0]), "another namespace");
        assert_eq!(holders["qwen"].namespace, "team-c");
    }

    #[test]
    fn ties_and_missing_times_are_broken_the_same_way_in_any_order() {
        let mut models = vec![
            model("team-b", "x", "llama", Some(100)),
            model("team-a", "x", "llama", Some(100)),
            model("team-0", "x", "llama", None),
        ];
        assert_eq!(holders(&models)["llama"].namespace, "team-a");
        models.reverse();
        assert_eq!(holders(&models)["llama"].namespace, "team-a");
    }
}
