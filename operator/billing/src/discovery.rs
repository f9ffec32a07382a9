//! Finding meters: running pods of InferenceModels with metering on. The label only narrows
//! the search: a pod counts only if its owners lead, through its ReplicaSet and Deployment, to
//! an InferenceModel, so a pod anyone labels can neither inject usage nor receive billing's
//! token. A pod verified so once stays a meter while it exists (by uid), after its owners are
//! deleted: a model's pods outlive it while their meters hand over their last usage.

use std::collections::HashMap;

use super::sanity::RecordBounds;
use hearth_crds::InferenceModel;
use hearth_crds::constants::{LABEL_METERED, PORT_METER};
use hearth_tenancy::meter_tokens::MeterRootKey;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::ListParams;
use kube::core::{ObjectList, PartialObjectMeta};
use kube::{Api, Client};

/// A meter to pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meter {
    /// Stable id of the meter's ledger: the pod's namespace, name and uid (a new pod has a new
    /// ledger volume, so a new id).
    pub id: String,
    /// Base URL of the meter's API.
    pub url: String,
    /// Billing's bearer token toward this meter, when meters require one.
    pub token: Option<String>,
    /// The most one record of this meter's model may count, when its model is known.
    pub bounds: Option<RecordBounds>,
}

/// Meters of running, metered pods that InferenceModels own, or that were among `verified`
/// (an earlier pass's meters, by id) and still exist; each with billing's token for its model
/// when `usage_key` is set.
pub async fn metered_pods(
    client: &Client,
    usage_key: Option<&MeterRootKey>,
    verified: &HashMap<String, Meter>,
) -> kube::Result<Vec<Meter>> {
    let metered = ListParams::default().labels(&format!("{LABEL_METERED}=true"));
    let pods = Api::<Pod>::all(client.clone()).list(&metered).await?.items;
    let models = Api::<InferenceModel>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let bounds: HashMap<String, RecordBounds> = models
        .iter()
        .map(|model| {
            (
                hearth_tenancy::object_id(&model.metadata),
                RecordBounds::of(model),
            )
        })
        .collect();
    let owners = Owners {
        replica_sets: by_uid(metadata_of(
            Api::<ReplicaSet>::all(client.clone())
                .list_metadata(&metered)
                .await?,
        )),
        deployments: by_uid(metadata_of(
            Api::<Deployment>::all(client.clone())
                .list_metadata(&metered)
                .await?,
        )),
        models: by_uid(models.into_iter().map(|model| model.metadata)),
    };
    let trusted = Trusted {
        owners: &owners,
        bounds: &bounds,
        usage_key,
        verified,
    };
    Ok(pods.iter().filter_map(|pod| trusted.meter(pod)).collect())
}

/// What makes a pod's meter trusted: its owners, or an earlier pass's verdict.
struct Trusted<'a> {
    owners: &'a Owners,
    bounds: &'a HashMap<String, RecordBounds>,
    usage_key: Option<&'a MeterRootKey>,
    verified: &'a HashMap<String, Meter>,
}

impl Trusted<'_> {
    /// The meter of `pod`, if an InferenceModel owns it or an earlier pass verified it.
    fn meter(&self, pod: &Pod) -> Option<Meter> {
        let mut meter = meter_of(pod)?;
        match self.owners.model_of(&pod.metadata) {
            Some(model) => {
                meter.token = self.usage_key.map(|key| key.token_for(&model));
                meter.bounds = self.bounds.get(&model).copied();
            }
            None => {
                let earlier = self.verified.get(&meter.id)?;
                meter.token = earlier.token.clone();
                meter.bounds = earlier.bounds;
            }
        }
        Some(meter)
    }
}

fn metadata_of<K: Clone>(list: ObjectList<PartialObjectMeta<K>>) -> impl Iterator<Item = ObjectMeta> {
    list.items.into_iter().map(|item| item.metadata)
}

fn by_uid(items: impl IntoIterator<Item = ObjectMeta>) -> HashMap<String, ObjectMeta> {
    items
        .into_iter()
        .filter_map(|meta| Some((meta.uid.clone()?, meta)))
        .collect()
}

/// The objects a metered pod's ownership may pass through, by uid.
struct Owners {
    replica_sets: HashMap<String, ObjectMeta>,
    deployments: HashMap<String, ObjectMeta>,
    models: HashMap<String, ObjectMeta>,
}

/// The controller owner of `meta` of `kind` in `api_group`.
fn controller<'a>(meta: &'a ObjectMeta, api_group: &str, kind: &str) -> Option<&'a OwnerReference> {
    meta.owner_references.iter().flatten().find(|owner| {
        owner.controller == Some(true)
            && owner.kind == kind
            && owner.api_version.split('/').next() == Some(api_group)
    })
}

impl Owners {
    /// The owner in `objects` of `meta`, in the same namespace.
    fn owner<'a>(
        objects: &'a HashMap<String, ObjectMeta>,
        meta: &ObjectMeta,
        api_group: &str,
        kind: &str,
    ) -> Option<&'a ObjectMeta> {
        let owner = objects.get(&controller(meta, api_group, kind)?.uid)?;
        (owner.namespace == meta.namespace).then_some(owner)
    }

    /// `namespace/name` of the InferenceModel that owns the pod through its ReplicaSet and
    /// Deployment.
    fn model_of(&self, pod: &ObjectMeta) -> Option<String> {
        let replica_set = Self::owner(&self.replica_sets, pod, "apps", "ReplicaSet")?;
        let deployment = Self::owner(&self.deployments, replica_set, "apps", "Deployment")?;
        let model = Self::owner(&self.models, deployment, "hearth.dev", "InferenceModel")?;
        Some(hearth_tenancy::object_id(model))
    }
}

/// The meter of a pod that is running and has an IP.
pub fn meter_of(pod: &Pod) -> Option<Meter> {
    let status = pod.status.as_ref()?;
    if status.phase.as_deref() != Some("Running") {
        return None;
    }
    let ip = status.pod_ip.as_deref()?;
    let meta = &pod.metadata;
    let host = if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip.to_string()
    };
    Some(Meter {
        id: format!(
            "{}/{}/{}",
            meta.namespace.as_deref()?,
            meta.name.as_deref()?,
            meta.uid.as_deref()?
        ),
        url: format!("http://{host}:{PORT_METER}"),
        token: None,
        bounds: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(kind: &str, name: &str, uid: &str, owner: Option<(&str, &str, &str)>) -> ObjectMeta {
        let owners = owner.map(|(api_version, kind, uid)| {
            serde_json::json!([{"apiVersion": api_version, "kind": kind, "name": "x", "uid": uid, "controller": true}])
        });
        serde_json::from_value(serde_json::json!({
            "name": name, "namespace": "ml", "uid": uid, "ownerReferences": owners, "labels": {"kind": kind}
        }))
        .expect("meta")
    }

    fn owners() -> Owners {
        let one = |m: ObjectMeta| HashMap::from([(m.uid.clone().expect("uid"), m)]);
        Owners {
            replica_sets: one(meta(
                "rs",
                "llama-abc",
                "rs-1",
                Some(("apps/v1", "Deployment", "dep-1")),
            )),
            deployments: one(meta(
                "dep",
                "llama",
                "dep-1",
                Some(("hearth.dev/v1alpha1", "InferenceModel", "model-1")),
            )),
            models: one(meta("model", "llama", "model-1", None)),
        }
    }

    #[test]
    fn only_pods_an_inference_model_owns_are_meters() {
        let owners = owners();
        let pod = meta(
            "pod",
            "llama-abc-1",
            "p1",
            Some(("apps/v1", "ReplicaSet", "rs-1")),
        );
        assert_eq!(owners.model_of(&pod).as_deref(), Some("ml/llama"));
        // A labelled pod of its own, or one claiming an owner that does not exist, is not.
        assert_eq!(owners.model_of(&meta("pod", "rogue", "p2", None)), None);
        let forged = meta(
            "pod",
            "rogue",
            "p3",
            Some(("apps/v1", "ReplicaSet", "rs-unknown")),
        );
        assert_eq!(owners.model_of(&forged), None);
        // A ReplicaSet of a Deployment no model owns.
        let mut orphan = owners;
        orphan
            .deployments
            .values_mut()
            .for_each(|d| d.owner_references = None);
        assert_eq!(orphan.model_of(&pod), None);
    }

    #[test]
    fn a_verified_meter_stays_trusted_after_its_owners_are_deleted_and_no_other_pod_is() {
        let orphaned = Owners {
            replica_sets: HashMap::new(),
            deployments: HashMap::new(),
            models: HashMap::new(),
        };
        let pod = |uid: &str| -> Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "llama-abc-1", "namespace": "ml", "uid": uid,
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "llama-abc", "uid": "rs-1", "controller": true}]},
                "status": {"phase": "Running", "podIP": "10.0.0.7"}
            }))
            .expect("pod")
        };
        let earlier = Meter {
            id: "ml/llama-abc-1/p1".into(),
            url: "http://10.0.0.7:8001".into(),
            token: Some("usage-token".into()),
            bounds: None,
        };
        let verified = HashMap::from([(earlier.id.clone(), earlier.clone())]);
        let trusted = Trusted {
            owners: &orphaned,
            bounds: &HashMap::new(),
            usage_key: None,
            verified: &verified,
        };
        assert_eq!(trusted.meter(&pod("p1")), Some(earlier));
        assert_eq!(
            trusted.meter(&pod("p2")),
            None,
            "a new pod claiming the same owners"
        );
    }

    #[test]
    fn an_owner_in_another_namespace_does_not_count() {
        let owners = owners();
        let mut pod = meta(
            "pod",
            "llama-abc-1",
            "p1",
            Some(("apps/v1", "ReplicaSet", "rs-1")),
        );
        pod.namespace = Some("elsewhere".into());
        assert_eq!(owners.model_of(&pod), None);
    }

    #[test]
    fn only_running_pods_with_an_ip_are_meters() {
        let pod = |phase: &str, ip: Option<&str>| -> Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "llama-1", "namespace": "ml", "uid": "u1"},
                "status": {"phase": phase, "podIP": ip}
            }))
            .expect("pod")
        };
        assert_eq!(
            meter_of(&pod("Running", Some("10.0.0.7"))),
            Some(Meter {
                id: "ml/llama-1/u1".into(),
                url: "http://10.0.0.7:8001".into(),
                token: None,
                bounds: None,
            })
        );
        assert_eq!(
            meter_of(&pod("Running", Some("fd00::7"))).map(|m| m.url),
            Some("http://[fd00::7]:8001".into())
        );
        assert_eq!(meter_of(&pod("Pending", Some("10.0.0.7"))), None);
        assert_eq!(meter_of(&pod("Running", None)), None);
    }
}
