//! Condition types and reasons, as constants in one place, plus a helper that keeps a
//! condition list stable (a condition whose status did not change keeps its transition time).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// The object is serving (InferenceModel) or usable (Tenant, Tier).
pub const READY: &str = "Ready";
/// A rollout is under way.
pub const PROGRESSING: &str = "Progressing";
/// Some replicas are unavailable, or part of what the object asks for could not be applied.
pub const DEGRADED: &str = "Degraded";
/// The memory plan fits the requested GPU type.
pub const FITS: &str = "Fits";
/// The object failed to parse or validate; it is skipped until it changes.
pub const INVALID_OBJECT: &str = "InvalidObject";
/// The Tenant's `tierRef` resolves to an existing Tier.
pub const TIER_RESOLVED: &str = "TierResolved";
/// Every `apiKeys[]` entry has a usable key.
pub const KEYS_READY: &str = "KeysReady";
/// The Tenant has crossed its monthly budget or quota.
pub const BUDGET_EXCEEDED: &str = "BudgetExceeded";

/// Reasons, in CamelCase as Kubernetes expects.
pub mod reason {
    /// Everything the reconcile applied is in place.
    pub const RECONCILED: &str = "Reconciled";
    /// The spec failed validation; the message names the field.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// The object could not be deserialized at all.
    pub const DESERIALIZATION_FAILED: &str = "DeserializationFailed";
    /// The planned memory fits the GPU.
    pub const MEMORY_FITS: &str = "MemoryFits";
    /// The planned memory exceeds the GPU.
    pub const INSUFFICIENT_GPU_MEMORY: &str = "InsufficientGpuMemory";
    /// The model's architecture is unknown, so no plan could be made.
    pub const ARCHITECTURE_UNKNOWN: &str = "ArchitectureUnknown";
    /// The model runs without GPUs, so there is nothing to fit.
    pub const NO_GPU: &str = "NoGpuRequested";
    /// Pods are being created or updated.
    pub const ROLLING_OUT: &str = "RollingOut";
    /// All desired replicas are available.
    pub const REPLICAS_AVAILABLE: &str = "ReplicasAvailable";
    /// Fewer replicas are available than desired.
    pub const REPLICAS_UNAVAILABLE: &str = "ReplicasUnavailable";
    /// Zero replicas are desired (scaled to zero).
    pub const SCALED_TO_ZERO: &str = "ScaledToZero";
    /// The referenced Tier does not exist.
    pub const TIER_NOT_FOUND: &str = "TierNotFound";
    /// The referenced Tier exists.
    pub const TIER_FOUND: &str = "TierFound";
    /// A referenced key Secret is missing or has no key.
    pub const SECRET_MISSING: &str = "SecretMissing";
    /// Every key is present and hashed.
    pub const KEYS_AVAILABLE: &str = "KeysAvailable";
    /// The tenant is suspended by its spec.
    pub const SUSPENDED: &str = "Suspended";
    /// `autoscaling.mode: keda`, but the cluster does not serve KEDA's ScaledObject API: the
    /// model is deployed without its ScaledObject.
    pub const KEDA_NOT_INSTALLED: &str = "KedaNotInstalled";
    /// The API server refused or failed a write of a child; the message names the child.
    pub const APPLY_FAILED: &str = "ApplyFailed";
    /// An older InferenceModel in another namespace holds the `servedName`: this one is not
    /// served until the name is free or changed.
    pub const SERVED_NAME_CONFLICT: &str = "ServedNameConflict";
}

/// Builds a condition for `generation`, keeping `lastTransitionTime` from `previous` when the
/// status did not change, so an unchanged reconcile produces an identical status.
pub fn condition(
    previous: &[Condition],
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: Time,
) -> Condition {
    let status = if status { "True" } else { "False" }.to_string();
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(now);
    Condition {
        type_: type_.to_string(),
        status,
        reason: reason.to_string(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time,
    }
}

/// Finds a condition by type.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// True when the condition of `type_` is present with status `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == "True")
}
