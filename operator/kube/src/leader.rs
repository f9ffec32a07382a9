//! Leader election through a `coordination.k8s.io/v1` Lease, so two operator replicas never
//! both write. Updates use the Lease's resourceVersion: a racing writer gets a conflict.
//!
//! No replica compares the Lease's `renewTime` with its own wall clock (clocks differ between
//! nodes). A candidate counts a holder's Lease as lapsed once the Lease has not changed for its
//! own `leaseDurationSeconds`, timed on the candidate's monotonic clock from when it saw the
//! last change; the leader steps down when no renewal has succeeded within two thirds of that
//! duration, timed from when the last successful renewal was sent, so it stops before any
//! candidate may take over.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client};
use tokio::time::Instant;

use crate::error::Result;

/// A Lease-based lock held by one identity at a time.
pub struct LeaseLock {
    api: Api<Lease>,
    name: String,
    identity: String,
    lease_duration: Duration,
    annotations: BTreeMap<String, String>,
    observed: Mutex<Option<Observed>>,
}

/// The Lease version this replica last saw, and when it first saw it.
struct Observed {
    version: Option<String>,
    at: Instant,
}

/// The two clocks a lease decision reads: the wall clock whose time is written into the
/// Lease, and the monotonic clock lapses are timed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseClock {
    /// Written as `renewTime` and `acquireTime`.
    pub wall: Timestamp,
    /// Times how long a Lease has gone unchanged.
    pub monotonic: Instant,
}

impl LeaseClock {
    /// Both clocks now.
    pub fn now() -> Self {
        Self {
            wall: Timestamp::now(),
            monotonic: Instant::now(),
        }
    }
}

/// Why a leader stopped leading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeadershipLost {
    /// Another replica holds the Lease now.
    TakenOver,
    /// No renewal succeeded within the renew deadline; the last error, if any.
    RenewDeadlinePassed(Option<String>),
}

fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
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
            observed: Mutex::new(None),
        }
    }

    /// Whether the holder of `lease` has let it lapse: it names no holder or duration, or it
    /// has not changed for its `leaseDurationSeconds` since this replica first saw it as it is.
    fn lapsed(&self, lease: &Lease, now: Instant) -> bool {
        let Some(spec) = lease.spec.as_ref() else {
            return true;
        };
        let (Some(_), Some(_), Some(seconds)) = (
            &spec.holder_identity,
            &spec.renew_time,
            spec.lease_duration_seconds,
        ) else {
            return true;
        };
        let version = lease.metadata.resource_version.clone();
        let mut observed = self.observed.lock().unwrap_or_else(|p| p.into_inner());
        match &*observed {
            Some(seen) if seen.version == version => {
                now.duration_since(seen.at) >= Duration::from_secs(u64::try_from(seconds).unwrap_or(0))
            }
            _ => {
                *observed = Some(Observed { version, at: now });
                false
            }
        }
    }

    /// How long a leader may go without a successful renewal: two thirds of the lease
    /// duration, so it stops before a candidate's lease duration runs out.
    pub fn renew_deadline(&self) -> Duration {
        self.lease_duration * 2 / 3
    }

    /// Also writes `key: value` on the Lease while holding it (e.g. where the leader serves
    /// what only the leader can).
    pub fn with_annotation(mut self, key: &str, value: &str) -> Self {
        self.annotations.insert(key.to_string(), value.to_string());
        self
    }

    /// The annotation `key` of the Lease while a holder is live; `None` when there is no
    /// Lease, it has lapsed, or the holder did not set `key`.
    pub async fn live_holder_annotation(&self, key: &str, now: Instant) -> Result<Option<String>> {
        let Some(lease) = self.api.get_opt(&self.name).await? else {
            return Ok(None);
        };
        let live = !self.lapsed(&lease, now);
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
    pub async fn try_acquire_or_renew(&self, clock: LeaseClock) -> Result<bool> {
        let now = clock.wall;
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
        if !ours && !self.lapsed(&current, clock.monotonic) {
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

    /// Renews the Lease every renew interval while this replica leads (it took the Lease at
    /// `acquired`) and returns when it must stop: another replica took the Lease, or no renewal
    /// succeeded within [`Self::renew_deadline`], a renewal that hangs included.
    pub async fn keep_renewing(&self, acquired: Instant) -> LeadershipLost {
        let mut renewed = acquired;
        let mut last_error = None;
        loop {
            let deadline = renewed + self.renew_deadline();
            tokio::time::sleep_until((Instant::now() + self.renew_interval()).min(deadline)).await;
            let sent = Instant::now();
            if sent >= deadline {
                return LeadershipLost::RenewDeadlinePassed(last_error);
            }
            let renewal = self.try_acquire_or_renew(LeaseClock::now());
            match tokio::time::timeout_at(deadline, renewal).await {
                Ok(Ok(true)) => renewed = sent,
                Ok(Ok(false)) => return LeadershipLost::TakenOver,
                Ok(Err(error)) => last_error = Some(error.to_string()),
                Err(_) => return LeadershipLost::RenewDeadlinePassed(last_error),
            }
        }
    }
}
