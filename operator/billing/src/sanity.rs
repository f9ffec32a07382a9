//! What billing accepts from a meter. A record is billed to its tenant only when the engine
//! answered it with success, the tenant exists and its numbers fit the model that served it; any other record is still stored, with
//! the reason, and counted under [`REJECTED`](hearth_crds::usage::REJECTED) so that nothing is
//! lost and no one is billed for it.

use std::collections::BTreeSet;

use hearth_crds::constants::MAX_CHOICES;
use hearth_crds::usage::{GPU_TIME, UNATTRIBUTED, UsageRecord};
use hearth_crds::{InferenceModel, Tenant};
use hearth_tenancy::object_id;

/// The most one record of a model's meter may count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordBounds {
    /// The model's context: no prompt is longer, and no choice's completion.
    pub context_tokens: u64,
    /// GPUs one pod of the model holds.
    pub gpus: u64,
}

impl RecordBounds {
    /// The bounds `model`'s spec sets.
    pub fn of(model: &InferenceModel) -> Self {
        Self {
            context_tokens: u64::from(model.spec.engine.max_context_tokens),
            gpus: u64::from(model.spec.parallelism.gpu_count()),
        }
    }
}

/// A record newer than the tenant list by less than this (clocks differ between pods) may be
/// of a tenant made since: it waits for a later list instead of being rejected.
const CLOCK_SKEW_MS: u64 = 60_000;

/// What billing does with one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Billed to its tenant.
    Billed,
    /// Stored, counted under `rejected`, billed to no one, for this reason.
    Rejected(String),
    /// Its tenant is unknown but may be newer than the tenant list: left in the meter for
    /// the next pass.
    Undecided,
}

/// The tenants that existed when billing last listed them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KnownTenants {
    /// `namespace/name` of each.
    pub ids: BTreeSet<String>,
    /// Unix milliseconds when they were listed.
    pub listed_at_ms: u64,
}

impl KnownTenants {
    /// `tenants`, listed just now.
    pub fn listed_now(tenants: &[Tenant]) -> Self {
        let listed_at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX));
        Self {
            ids: tenants.iter().map(|tenant| object_id(&tenant.metadata)).collect(),
            listed_at_ms,
        }
    }
}

/// What a pull checks records against: the tenants that exist and the bounds of the meter's
/// model, when known.
pub struct RecordChecks<'a> {
    /// Tenants that existed when listed.
    pub tenants: &'a KnownTenants,
    /// The meter's model's bounds.
    pub bounds: Option<RecordBounds>,
}

impl RecordChecks<'_> {
    /// What billing does with `record`.
    pub fn verdict(&self, record: &UsageRecord) -> Verdict {
        let recent = record.finished_at_ms.saturating_add(CLOCK_SKEW_MS) >= self.tenants.listed_at_ms;
        if !self.known(&record.tenant) && recent {
            return Verdict::Undecided;
        }
        match self.rejection(record) {
            Some(reason) => Verdict::Rejected(reason),
            None => Verdict::Billed,
        }
    }

    /// Whether records of `tenant` may be billed: it exists, or is one of the reserved ones.
    fn known(&self, tenant: &str) -> bool {
        tenant == GPU_TIME || tenant == UNATTRIBUTED || self.tenants.ids.contains(tenant)
    }

    /// Why `record` cannot be billed as it stands, or `None` when it can.
    fn rejection(&self, record: &UsageRecord) -> Option<String> {
        if record.finished_at_ms < record.started_at_ms {
            return Some("finishedAtMs is before startedAtMs".into());
        }
        if !(200..300).contains(&record.status) {
            return Some(format!(
                "the engine answered {}: a failed request is not billed",
                record.status
            ));
        }
        if !self.known(&record.tenant) {
            return Some(format!("tenant {} does not exist", record.tenant));
        }
        if record.tenant != GPU_TIME && record.gpu_milliseconds > 0 {
            return Some(format!("gpuMilliseconds on a record of tenant {}", record.tenant));
        }
        let bounds = self.bounds?;
        if record.prompt_tokens > bounds.context_tokens {
            return Some(format!(
                "promptTokens {} exceed the model's context of {} tokens",
                record.prompt_tokens, bounds.context_tokens
            ));
        }
        let most_completion = bounds.context_tokens.saturating_mul(MAX_CHOICES);
        if record.completion_tokens > most_completion {
            return Some(format!(
                "completionTokens {} exceed the model's context times {MAX_CHOICES} choices ({most_completion})",
                record.completion_tokens
            ));
        }
        let held = record.finished_at_ms - record.started_at_ms;
        let most_gpu = held.saturating_mul(bounds.gpus);
        if record.gpu_milliseconds > most_gpu {
            return Some(format!(
                "gpuMilliseconds {} exceed {} GPUs held for {held} ms",
                record.gpu_milliseconds, bounds.gpus
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// When the tenants were listed: well after every record below finished.
    const LISTED_AT_MS: u64 = 10_000_000;

    fn record(tenant: &str, prompt: u64, completion: u64) -> UsageRecord {
        UsageRecord {
            request_id: "r1".into(),
            tenant: tenant.into(),
            tier: "gold".into(),
            model: "llama".into(),
            prompt_tokens: prompt,
            completion_tokens: completion,
            estimated: false,
            status: 200,
            streamed: false,
            started_at_ms: 1_000,
            finished_at_ms: 2_000,
            gpu_milliseconds: 0,
            rejected: None,
        }
    }

    fn known(ids: &[&str]) -> KnownTenants {
        KnownTenants {
            ids: ids.iter().map(|id| id.to_string()).collect(),
            listed_at_ms: LISTED_AT_MS,
        }
    }

    fn checks(tenants: &KnownTenants) -> RecordChecks<'_> {
        RecordChecks {
            tenants,
            bounds: Some(RecordBounds {
                context_tokens: 4096,
                gpus: 2,
            }),
        }
    }

    fn rejection(verdict: Verdict) -> String {
        match verdict {
            Verdict::Rejected(reason) => reason,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[test]
    fn a_record_of_a_known_tenant_within_the_model_is_billed() {
        let tenants = known(&["ml/acme"]);
        let checks = checks(&tenants);
        assert_eq!(
            checks.verdict(&record("ml/acme", 4096, 4096 * 128)),
            Verdict::Billed
        );
        assert_eq!(checks.verdict(&record(UNATTRIBUTED, 1, 1)), Verdict::Billed);
    }

    #[test]
    fn an_unknown_tenant_or_impossible_numbers_are_rejected() {
        let tenants = known(&["ml/acme"]);
        let checks = checks(&tenants);
        let verdict = |record: UsageRecord| rejection(checks.verdict(&record));
        assert!(verdict(record("ml/victim", 1, 1)).contains("tenant ml/victim does not exist"));
        assert!(verdict(record("ml/acme", 4097, 1)).contains("promptTokens 4097"));
        assert!(verdict(record("ml/acme", 1, u64::MAX)).contains("completionTokens"));
        let mut backwards = record("ml/acme", 1, 1);
        backwards.started_at_ms = 3_000;
        assert!(verdict(backwards).contains("finishedAtMs"));
        let mut failed = record("ml/acme", 12, 0);
        failed.status = 503;
        assert!(verdict(failed).contains("the engine answered 503"));
        let mut smuggled = record("ml/acme", 1, 1);
        smuggled.gpu_milliseconds = 5;
        assert!(verdict(smuggled).contains("gpuMilliseconds on a record"));
    }

    #[test]
    fn an_unknown_tenant_newer_than_the_tenant_list_waits_for_the_next_list() {
        let tenants = known(&[]);
        let mut fresh = record("ml/new", 1, 1);
        fresh.finished_at_ms = LISTED_AT_MS - 1_000;
        assert_eq!(checks(&tenants).verdict(&fresh), Verdict::Undecided);
        fresh.finished_at_ms = LISTED_AT_MS - CLOCK_SKEW_MS - 1;
        assert!(matches!(checks(&tenants).verdict(&fresh), Verdict::Rejected(_)));
    }

    #[test]
    fn gpu_time_is_bounded_by_the_pod_s_gpus_over_the_interval() {
        let tenants = known(&[]);
        let mut held = record(GPU_TIME, 0, 0);
        held.gpu_milliseconds = 2_000;
        assert_eq!(checks(&tenants).verdict(&held), Verdict::Billed);
        held.gpu_milliseconds = 2_001;
        assert!(rejection(checks(&tenants).verdict(&held)).contains("2 GPUs held for 1000 ms"));
    }
}
