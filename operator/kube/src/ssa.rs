//! Server-side apply with a "compare what we own" guard: each child carries a hash of the
//! object we last applied, so a reconcile whose desired state has not changed issues no write,
//! whatever the server did to the fields (dropped, normalised, mutated by a webhook).

use std::collections::BTreeMap;

use hearth_crds::constants::ANNOTATION_APPLIED_HASH;
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Patch parameters for every apply: our field manager, forcing ownership of our fields.
pub fn apply_params() -> PatchParams {
    PatchParams::apply(hearth_crds::constants::FIELD_MANAGER).force()
}

/// Hex SHA-256 of `desired` as JSON. Stable: it is hashed through `serde_json::Value`, whose
/// objects keep their keys sorted, so equal objects hash equally whatever built them.
pub fn applied_hash(desired: &Value) -> Result<String> {
    let bytes = serde_json::to_vec(desired).map_err(|source| Error::Serialize {
        kind: "object",
        source,
    })?;
    Ok(hex::encode(Sha256::digest(bytes)))
}

/// The applied-hash annotation of `object`, if it has one.
fn hash_annotation<K: Resource>(object: &K) -> Option<&str> {
    object
        .meta()
        .annotations
        .as_ref()?
        .get(ANNOTATION_APPLIED_HASH)
        .map(String::as_str)
}

/// Applies `desired` unless `existing` carries the hash of the very same desired object (see
/// [`applied_hash`]); returns the object as the server has it and whether a write was issued.
/// The hash goes on the applied object as the `hearth.dev/applied-hash` annotation.
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
    let hash = applied_hash(&want)?;
    if let Some(existing) = existing
        && hash_annotation(existing) == Some(hash.as_str())
    {
        return Ok((existing.clone(), false));
    }
    let mut stamped = desired.clone();
    stamped
        .meta_mut()
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(ANNOTATION_APPLIED_HASH.to_string(), hash);
    let applied = api.patch(&name, &apply_params(), &Patch::Apply(&stamped)).await?;
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
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http::{Method, Request, Response};
    use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    use kube::Client;
    use kube::client::Body;

    use super::*;

    fn pdb(max_unavailable: i32) -> PodDisruptionBudget {
        PodDisruptionBudget {
            metadata: ObjectMeta {
                name: Some("llama".into()),
                namespace: Some("ml".into()),
                ..ObjectMeta::default()
            },
            spec: Some(PodDisruptionBudgetSpec {
                max_unavailable: Some(IntOrString::Int(max_unavailable)),
                unhealthy_pod_eviction_policy: Some("AlwaysAllow".into()),
                ..PodDisruptionBudgetSpec::default()
            }),
            status: None,
        }
    }

    /// An API whose server answers every PATCH with the body it was sent, counting them.
    fn echoing_api() -> (Api<PodDisruptionBudget>, Arc<AtomicUsize>) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let patches = Arc::new(AtomicUsize::new(0));
        let counted = patches.clone();
        tokio::spawn(async move {
            while let Some((request, send)) = handle.next_request().await {
                assert_eq!(request.method(), Method::PATCH, "only applies are expected");
                counted.fetch_add(1, Ordering::SeqCst);
                let body = request.into_body().collect_bytes().await.expect("body");
                send.send_response(Response::new(Body::from(body.to_vec())));
            }
        });
        (Api::namespaced(Client::new(service, "ml"), "ml"), patches)
    }

    #[tokio::test]
    async fn a_child_whose_server_copy_lacks_a_field_is_not_reapplied_when_the_hash_matches() {
        let (api, patches) = echoing_api();
        let desired = pdb(1);
        let (applied, written) = apply_if_changed(&api, &desired, None).await.expect("applies");
        assert!(written);
        assert_eq!(patches.load(Ordering::SeqCst), 1);
        // An older server (or a policy) drops a field we set; the annotation comes back as sent.
        let mut stored = applied.clone();
        if let Some(spec) = stored.spec.as_mut() {
            spec.unhealthy_pod_eviction_policy = None;
        }
        for _ in 0..3 {
            let (_, written) = apply_if_changed(&api, &desired, Some(&stored))
                .await
                .expect("compares");
            assert!(!written, "the same desired object is never applied twice");
        }
        assert_eq!(patches.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_changed_spec_changes_the_hash_and_is_applied() {
        let (api, patches) = echoing_api();
        let (stored, _) = apply_if_changed(&api, &pdb(1), None).await.expect("applies");
        let (changed, written) = apply_if_changed(&api, &pdb(2), Some(&stored))
            .await
            .expect("applies");
        assert!(written);
        assert_eq!(patches.load(Ordering::SeqCst), 2);
        assert_ne!(hash_annotation(&stored), hash_annotation(&changed));
        assert_eq!(
            changed.spec.and_then(|s| s.max_unavailable),
            Some(IntOrString::Int(2))
        );
    }

    #[tokio::test]
    async fn a_child_without_our_hash_is_applied_once() {
        // Children written before the hash existed carry none: they are applied once, then settle.
        let (api, patches) = echoing_api();
        let (_, written) = apply_if_changed(&api, &pdb(1), Some(&pdb(1)))
            .await
            .expect("applies");
        assert!(written);
        assert_eq!(patches.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn the_hash_does_not_depend_on_key_order() {
        let a: Value = serde_json::from_str(r#"{"a": 1, "b": {"c": 2, "d": [1, 2]}}"#).expect("json");
        let b: Value = serde_json::from_str(r#"{"b": {"d": [1, 2], "c": 2}, "a": 1}"#).expect("json");
        assert_eq!(applied_hash(&a).expect("hash"), applied_hash(&b).expect("hash"));
        let c: Value = serde_json::from_str(r#"{"b": {"d": [2, 1], "c": 2}, "a": 1}"#).expect("json");
        assert_ne!(applied_hash(&a).expect("hash"), applied_hash(&c).expect("hash"));
    }
}
