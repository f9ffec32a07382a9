//! The status step: conditions computed from what was applied, written only when they change.

use hearth_crds::conditions::{self, DEGRADED, FITS, PROGRESSING, READY, reason};
use hearth_crds::inference_model::{InferenceModelStatus, MemoryPlanStatus};
use hearth_crds::planner::format_gib;
use hearth_crds::validation::SpecError;
use hearth_crds::{InferenceModel, constants::FIELD_MANAGER};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::Client;

use super::build::endpoint_url;
use super::validate::Fit;
use hearth_kube::error::{Error, Result};
use hearth_tenancy::served_names::Holder;

/// What the reconcile learned, for the status computation.
pub enum Outcome<'a> {
    /// The spec failed validation.
    InvalidSpec(&'a [SpecError]),
    /// The plan says the model does not fit; nothing was deployed.
    DoesNotFit(&'a Fit),
    /// Another namespace holds the served name; nothing was deployed.
    ServedNameConflict(&'a Holder),
    /// Children are applied, or some of them (see `shortfall`).
    Deployed {
        /// The memory plan outcome.
        fit: &'a Fit,
        /// The Deployment as the server has it (a default one when it does not exist).
        deployment: &'a Deployment,
        /// What the model lacks of its spec, reported as `Degraded`.
        shortfall: Option<&'a Shortfall>,
    },
}

/// Why a deployed model is less than its spec asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Shortfall {
    /// `autoscaling.mode: keda`, but the cluster does not serve KEDA's API: everything else is
    /// deployed, without autoscaling.
    KedaNotInstalled,
    /// Writing a child failed; the reconcile is retried with backoff.
    ApplyFailed {
        /// Kind of the child.
        kind: &'static str,
        /// Why, as the API server said it.
        message: String,
    },
}

impl Shortfall {
    /// The shortfall of a failed write of `kind`. The message is the API server's own, without
    /// anything that changes between attempts, so a retry that fails the same way writes no
    /// new status.
    pub fn apply_failed(kind: &'static str, error: &kube::Error) -> Self {
        let message = match error {
            kube::Error::Api(status) if status.message.is_empty() => {
                format!("HTTP {} {}", status.code, status.reason)
            }
            kube::Error::Api(status) => format!("HTTP {}: {}", status.code, status.message),
            other => other.to_string(),
        };
        Self::ApplyFailed { kind, message }
    }
}

fn fits_condition(previous: &[Condition], fit: &Fit, generation: Option<i64>, now: &Time) -> Condition {
    let (status, why, message) = match fit {
        Fit::NoGpu => (
            true,
            reason::NO_GPU,
            "no GPU requested; the model is served on CPU".to_string(),
        ),
        Fit::Unknown => (
            true,
            reason::ARCHITECTURE_UNKNOWN,
            "architecture not in the catalog; deployed without a memory plan".to_string(),
        ),
        Fit::Planned {
            gpu_type,
            plan,
            architecture,
        } => {
            let summary = format!(
                "{architecture}: planned {} GiB per GPU (weights {} GiB + KV cache {} GiB across the GPUs, activations and runtime {} GiB) vs {} GiB on {gpu_type}",
                format_gib(plan.per_gpu_bytes),
                format_gib(plan.weight_bytes),
                format_gib(plan.kv_cache_bytes),
                format_gib(plan.activation_bytes + plan.runtime_overhead_bytes),
                format_gib(plan.gpu_memory_bytes),
            );
            if plan.fits {
                (true, reason::MEMORY_FITS, summary)
            } else {
                (
                    false,
                    reason::INSUFFICIENT_GPU_MEMORY,
                    format!("does not fit: {summary}"),
                )
            }
        }
    };
    conditions::condition(previous, FITS, status, why, message, generation, now.clone())
}

fn memory_plan_status(fit: &Fit) -> Option<MemoryPlanStatus> {
    let Fit::Planned {
        architecture, plan, ..
    } = fit
    else {
        return None;
    };
    let signed_gib = |bytes: i64| {
        let magnitude = format_gib(bytes.unsigned_abs());
        if bytes < 0 {
            format!("-{magnitude}")
        } else {
            magnitude
        }
    };
    Some(MemoryPlanStatus {
        architecture: architecture.clone(),
        weights_gi_b: format_gib(plan.weight_bytes),
        kv_cache_gi_b: format_gib(plan.kv_cache_bytes),
        activation_gi_b: format_gib(plan.activation_bytes + plan.runtime_overhead_bytes),
        per_gpu_gi_b: format_gib(plan.per_gpu_bytes),
        gpu_gi_b: format_gib(plan.gpu_memory_bytes),
        headroom_gi_b: signed_gib(plan.headroom_bytes),
    })
}

/// `Degraded`: a shortfall if there is one, otherwise whether every desired replica is ready.
fn degraded_condition(
    shortfall: Option<&Shortfall>,
    ready: i32,
    desired: i32,
    condition: impl Fn(&str, bool, &str, String) -> Condition,
) -> Condition {
    let replicas = format!("{ready}/{desired} replicas ready");
    match shortfall {
        Some(Shortfall::KedaNotInstalled) => condition(
            DEGRADED,
            true,
            reason::KEDA_NOT_INSTALLED,
            format!(
                "autoscaling.mode is keda, but this cluster does not serve KEDA's ScaledObject API (keda.sh/v1alpha1): install KEDA (https://keda.sh, Helm chart kedacore/keda) or choose another autoscaling.mode; deployed without autoscaling, {replicas}"
            ),
        ),
        Some(Shortfall::ApplyFailed { kind, message }) => condition(
            DEGRADED,
            true,
            reason::APPLY_FAILED,
            format!("writing the {kind} failed: {message}"),
        ),
        None if ready < desired => condition(DEGRADED, true, reason::REPLICAS_UNAVAILABLE, replicas),
        None => condition(DEGRADED, false, reason::REPLICAS_AVAILABLE, replicas),
    }
}

/// Computes the status for `outcome`, keeping transition times of unchanged conditions.
pub fn compute_status(model: &InferenceModel, outcome: Outcome<'_>, now: Time) -> InferenceModelStatus {
    let previous = model.status.clone().unwrap_or_default();
    let generation = model.metadata.generation;
    let old = previous.conditions.as_slice();
    let condition = |type_: &str, status: bool, why: &str, message: String| {
        conditions::condition(old, type_, status, why, message, generation, now.clone())
    };
    let mut status = InferenceModelStatus {
        observed_generation: generation,
        endpoint: endpoint_url(model),
        ..InferenceModelStatus::default()
    };
    match outcome {
        Outcome::InvalidSpec(errors) => {
            let message = errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ");
            status.conditions = vec![condition(READY, false, reason::INVALID_SPEC, message)];
            status.endpoint = None;
        }
        Outcome::ServedNameConflict(holder) => {
            let message = format!(
                "servedName {:?} is held by {} (the oldest InferenceModel asking for it) and only its namespace {:?} may serve it; this model is not served: choose another servedName",
                model.spec.served_name, holder.model, holder.namespace
            );
            status.conditions = vec![condition(READY, false, reason::SERVED_NAME_CONFLICT, message)];
            status.endpoint = None;
        }
        Outcome::DoesNotFit(fit) => {
            let fits = fits_condition(old, fit, generation, &now);
            status.conditions = vec![
                condition(
                    READY,
                    false,
                    reason::INSUFFICIENT_GPU_MEMORY,
                    fits.message.clone(),
                ),
                fits,
            ];
            status.memory_plan = memory_plan_status(fit);
            status.endpoint = None;
        }
        Outcome::Deployed {
            fit,
            deployment,
            shortfall,
        } => {
            let observed = deployment.status.clone().unwrap_or_default();
            let desired = deployment
                .spec
                .as_ref()
                .and_then(|s| s.replicas)
                .unwrap_or(observed.replicas.unwrap_or(1));
            let ready = observed.ready_replicas.unwrap_or(0);
            let updated = observed.updated_replicas.unwrap_or(0);
            let rolled_out = deployment.metadata.generation.is_some()
                && observed.observed_generation >= deployment.metadata.generation
                && updated >= desired;
            status.replicas = observed.replicas.unwrap_or(0);
            status.ready_replicas = ready;
            status.memory_plan = memory_plan_status(fit);
            let (is_ready, ready_reason, ready_message) = if desired == 0 {
                (
                    true,
                    reason::SCALED_TO_ZERO,
                    "scaled to zero; the gateway scales up on the next request".to_string(),
                )
            } else if ready > 0 {
                (
                    true,
                    reason::REPLICAS_AVAILABLE,
                    format!("{ready}/{desired} replicas ready"),
                )
            } else {
                (
                    false,
                    reason::REPLICAS_UNAVAILABLE,
                    format!("0/{desired} replicas ready"),
                )
            };
            status.conditions = vec![
                condition(READY, is_ready, ready_reason, ready_message),
                condition(
                    PROGRESSING,
                    !rolled_out,
                    if rolled_out {
                        reason::RECONCILED
                    } else {
                        reason::ROLLING_OUT
                    },
                    format!("{updated}/{desired} replicas updated"),
                ),
                degraded_condition(shortfall, ready, desired, condition),
                fits_condition(old, fit, generation, &now),
            ];
        }
    }
    status
}

/// Writes `status` with server-side apply unless the object already has exactly it.
pub async fn write_status(
    client: &Client,
    model: &InferenceModel,
    status: InferenceModelStatus,
) -> Result<bool> {
    if model.status.as_ref() == Some(&status) {
        return Ok(false);
    }
    let body = serde_json::to_value(&status).map_err(|source| Error::Serialize {
        kind: "status",
        source,
    })?;
    hearth_kube::ssa::apply_status(client, model, body, FIELD_MANAGER).await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::build::fixtures::representative;
    use k8s_openapi::api::apps::v1::DeploymentStatus;

    fn time() -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(1_700_000_000).expect("valid time"))
    }

    #[test]
    fn unchanged_conditions_keep_their_transition_time() {
        let mut model = representative();
        let mut deployment = Deployment::default();
        deployment.metadata.generation = Some(1);
        deployment.status = Some(DeploymentStatus {
            observed_generation: Some(1),
            replicas: Some(1),
            ready_replicas: Some(1),
            updated_replicas: Some(1),
            ..DeploymentStatus::default()
        });
        let deployed = || Outcome::Deployed {
            fit: &Fit::NoGpu,
            deployment: &deployment,
            shortfall: None,
        };
        let first = compute_status(&model, deployed(), time());
        model.status = Some(first.clone());
        let later = Time(k8s_openapi::jiff::Timestamp::from_second(1_700_000_600).expect("valid time"));
        let second = compute_status(&model, deployed(), later);
        assert_eq!(first, second, "an unchanged reconcile yields an identical status");
        assert!(conditions::is_true(&second.conditions, READY));
    }

    #[test]
    fn a_shortfall_is_reported_as_degraded_with_its_reason() {
        let model = representative();
        let deployment = Deployment::default();
        let status = |shortfall: &Shortfall| {
            compute_status(
                &model,
                Outcome::Deployed {
                    fit: &Fit::NoGpu,
                    deployment: &deployment,
                    shortfall: Some(shortfall),
                },
                time(),
            )
        };
        let keda = status(&Shortfall::KedaNotInstalled);
        let degraded = conditions::find(&keda.conditions, DEGRADED).expect("Degraded");
        assert_eq!(degraded.status, "True");
        assert_eq!(degraded.reason, reason::KEDA_NOT_INSTALLED);
        assert!(degraded.message.contains("install KEDA"), "{}", degraded.message);

        let refused = kube::Error::Api(
            kube::core::Status::failure("admission webhook denied the request", "Forbidden")
                .with_code(403)
                .boxed(),
        );
        let failed = status(&Shortfall::apply_failed("Deployment", &refused));
        let degraded = conditions::find(&failed.conditions, DEGRADED).expect("Degraded");
        assert_eq!(degraded.status, "True");
        assert_eq!(degraded.reason, reason::APPLY_FAILED);
        assert_eq!(
            degraded.message,
            "writing the Deployment failed: HTTP 403: admission webhook denied the request"
        );
    }
}
