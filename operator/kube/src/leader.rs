//! Leader election through a `coordination.k8s.io/v1` Lease, so two operator replicas never
//! both write. Updates use the Lease's resourceVersion: a racing writer gets a conflict.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::PostParams;
use kube::{Api, Client};

use crate::error::Result;

/// A Lease-based lock held by one identity at a time.
pub struct LeaseLock {
    api: Api<Lease>,
    name: String,
    identity: String,
    lease_duration: Duration,
    annotations: BTreeMap<String, String>,
}

fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}

/// True when the holder has not renewed within the lease duration.
fn expired(spec: &LeaseSpec, now: Timestamp) -> bool {
    match (&spec.renew_time, spec.lease_duration_seconds) {
        (Some(MicroTime(renewed)), Some(seconds)) => renewed
            .checked_add(SignedDuration::from_secs(i64::from(seconds)))
            .map_or(true, |end| end < now),
        _ => true,
    }
}

impl LeaseLock {
    /// A lock on Lease `name` in `namespace` for `identity`, valid `lease_duration` after each renewal.
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        lease_duration: Duration,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            identity: identity.to_string(),
            lease_duration,
            annotations: BTreeMap::new(),
        }
    }

    /// Also writes `key: value` on the Lease while holding it (e.g. where the leader serves
    /// what only the leader can).
    pub fn with_annotation(mut self, key: &str, value: &str) -> Self {
        self.annotations.insert(key.to_string(), value.to_string());
        self
    }

    /// The annotation `key` of the Lease while a holder is live; `None` when there is no
    /// Lease, it has expired, or the holder did not set `key`.
    pub async fn live_holder_annotation(&self, key: &str, now: Timestamp) -> Result<Option<String>> {
        let Some(lease) = self.api.get_opt(&self.name).await? else {
            return Ok(None);
        };
        let live = lease.spec.as_ref().is_some_and(|spec| !expired(spec, now));
        Ok(live
            .then(|| lease.metadata.annotations.and_then(|mut a| a.remove(key)))
            .flatten())
    }

    /// How often a holder should renew: a third of the lease duration.
    pub fn renew_interval(&self) -> Duration {
        self.lease_duration / 3
    }

    /// Takes the lease if it is free, expired or already ours, renewing it; returns whether we
    /// hold it now. Losing a race (409) is not an error: it means someone else holds it.
    pub async fn try_acquire_or_renew(&self, now: Timestamp) -> Result<bool> {
        let duration_seconds = i32::try_from(self.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let Some(current) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    annotations: (!self.annotations.is_empty()).then(|| self.annotations.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(duration_seconds),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(error) if is_conflict(&error) => Ok(false),
                Err(error) => Err(error.into()),
            };
        };
        let spec = current.spec.clone().unwrap_or_default();
        let ours = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        if !ours && !expired(&spec, now) {
            return Ok(false);
        }
        let mut lease = current;
        if !self.annotations.is_empty() {
            lease
                .metadata
                .annotations
                .get_or_insert_with(BTreeMap::new)
                .extend(self.annotations.clone());
        }
        lease.spec = Some(LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(duration_seconds),
            acquire_time: if ours {
                spec.acquire_time.clone()
            } else {
                Some(MicroTime(now))
            },
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(spec.lease_transitions.unwrap_or(0) + i32::from(!ours)),
            ..spec
        });
        match self.api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(error) if is_conflict(&error) => Ok(false),
            Err(error) => Err(error.into()),
        }
    }
}
