//! Server-side apply with a "compare first" guard, so a reconcile whose desired state is
//! already in place issues no write.

use kube::api::{Patch, PatchParams};
use kube::{Api, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{Error, Result};

/// Patch parameters for every apply: our field manager, forcing ownership of our fields.
pub fn apply_params() -> PatchParams {
    PatchParams::apply(hearth_crds::constants::FIELD_MANAGER).force()
}

/// True when every field set in `desired` has the same value in `existing`. Arrays must match
/// element by element; fields only `existing` has (defaults, other managers) are ignored.
pub fn is_subset(desired: &Value, existing: &Value) -> bool {
    match (desired, existing) {
        (Value::Object(want), Value::Object(have)) => want
            .iter()
            .all(|(key, value)| have.get(key).is_some_and(|other| is_subset(value, other))),
        (Value::Array(want), Value::Array(have)) => {
            want.len() == have.len() && want.iter().zip(have).all(|(a, b)| is_subset(a, b))
        }
        (Value::Null, _) => true,
        (want, have) => want == have,
    }
}

/// Applies `desired` unless `existing` already holds every field of it; returns the object as
/// the server has it and whether a write was issued.
pub async fn apply_if_changed<K>(api: &Api<K>, desired: &K, existing: Option<&K>) -> Result<(K, bool)>
where
    K: Resource + Serialize + DeserializeOwned + Clone + std::fmt::Debug,
{
    let name = desired
        .meta()
        .name
        .clone()
        .ok_or(Error::MissingMetadata("name"))?;
    let want = serde_json::to_value(desired).map_err(|source| Error::Serialize {
        kind: "object",
        source,
    })?;
    if let Some(existing) = existing {
        let have = serde_json::to_value(existing).map_err(|source| Error::Serialize {
            kind: "object",
            source,
        })?;
        if is_subset(&want, &have) {
            return Ok((existing.clone(), false));
        }
    }
    let applied = api.patch(&name, &apply_params(), &Patch::Apply(&want)).await?;
    Ok((applied, true))
}

/// Server-side applies `status` to the status subresource of `object` (kind `K`) with
/// `field_manager`. Works for namespaced and cluster-scoped kinds alike.
pub async fn apply_status<K>(
    client: &kube::Client,
    object: &K,
    status: serde_json::Value,
    field_manager: &str,
) -> Result<()>
where
    K: Resource<DynamicType = ()>,
{
    let name = object
        .meta()
        .name
        .as_deref()
        .ok_or(Error::MissingMetadata("name"))?;
    let resource = kube::api::ApiResource::erase::<K>(&());
    let api: Api<kube::api::DynamicObject> = match object.meta().namespace.as_deref() {
        Some(namespace) => Api::namespaced_with(client.clone(), namespace, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    let patch =
        serde_json::json!({"apiVersion": K::api_version(&()), "kind": K::kind(&()), "status": status});
    api.patch_status(
        name,
        &PatchParams::apply(field_manager).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::is_subset;
    use serde_json::json;

    #[test]
    fn subset_ignores_server_defaults_but_not_changes() {
        let desired = json!({"spec": {"replicas": 1, "template": {"containers": [{"name": "a"}]}}});
        let existing = json!({"spec": {"replicas": 1, "strategy": {}, "template": {"containers": [{"name": "a", "tty": false}]}}});
        assert!(is_subset(&desired, &existing));
        let changed = json!({"spec": {"replicas": 2}});
        assert!(!is_subset(&changed, &existing));
        let extra_container = json!({"spec": {"template": {"containers": [{"name": "a"}, {"name": "b"}]}}});
        assert!(!is_subset(&extra_container, &existing));
        assert!(!is_subset(&json!({"missing": 1}), &existing));
    }
}
