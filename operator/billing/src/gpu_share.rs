//! Usage totals, and sharing GPU time out to tenants. Meters record the GPU time their pods hold per model
//! (tenant [`GPU_TIME`]); a tenant is billed the part of a model's GPU time in a period that
//! matches its part of the model's tokens in that period. A model used by one tenant (a
//! dedicated model) bills all of its GPU time to that tenant; GPU time of a model nobody used
//! in the period is billed to no one. Shares round down to the millisecond, so the tenants of
//! a model are never billed more than its pods held.

use std::collections::BTreeMap;

use hearth_crds::usage::{GPU_TIME, UsageRecord};
use serde::{Deserialize, Serialize};

/// Totals for one tenant, model and period.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Totals {
    /// Requests recorded.
    pub requests: u64,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Requests whose usage the meter estimated.
    pub estimated_requests: u64,
    /// GPU-milliseconds: held by the model's pods (under [`GPU_TIME`]), or a tenant's share.
    #[serde(default)]
    pub gpu_milliseconds: u64,
}

impl Totals {
    /// Counts one more record, saturating so no record can wrap a total.
    pub fn add(&mut self, record: &UsageRecord) {
        self.requests = self.requests.saturating_add(1);
        self.prompt_tokens = self.prompt_tokens.saturating_add(record.prompt_tokens);
        self.completion_tokens = self.completion_tokens.saturating_add(record.completion_tokens);
        self.estimated_requests = self
            .estimated_requests
            .saturating_add(u64::from(record.estimated));
        self.gpu_milliseconds = self.gpu_milliseconds.saturating_add(record.gpu_milliseconds);
    }
}

fn tokens(totals: &Totals) -> u128 {
    u128::from(totals.prompt_tokens) + u128::from(totals.completion_tokens)
}

/// `tenant`'s totals per model from a period's totals, with `gpu_milliseconds` set to the
/// tenant's share of each model's GPU time.
pub fn tenant_totals(period: &BTreeMap<(String, String), Totals>, tenant: &str) -> BTreeMap<String, Totals> {
    let mut out: BTreeMap<String, Totals> = period
        .iter()
        .filter(|((owner, _), _)| owner == tenant)
        .map(|((_, model), totals)| (model.clone(), totals.clone()))
        .collect();
    if tenant == GPU_TIME {
        return out;
    }
    for (model, totals) in &mut out {
        let held = period
            .get(&(GPU_TIME.to_string(), model.clone()))
            .map_or(0, |gpu| gpu.gpu_milliseconds);
        let used: u128 = period
            .iter()
            .filter(|((owner, used_model), _)| used_model == model && owner != GPU_TIME)
            .map(|(_, t)| tokens(t))
            .sum();
        totals.gpu_milliseconds = match used {
            0 => 0,
            used => u64::try_from(u128::from(held) * tokens(totals) / used).unwrap_or(u64::MAX),
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(prompt: u64, completion: u64, gpu_milliseconds: u64) -> Totals {
        Totals {
            requests: 1,
            prompt_tokens: prompt,
            completion_tokens: completion,
            estimated_requests: 0,
            gpu_milliseconds,
        }
    }

    fn key(tenant: &str, model: &str) -> (String, String) {
        (tenant.to_string(), model.to_string())
    }

    #[test]
    fn gpu_time_is_shared_by_tokens_within_each_model() {
        let period = BTreeMap::from([
            (key(GPU_TIME, "llama"), totals(0, 0, 7_200_000)),
            (key(GPU_TIME, "idle"), totals(0, 0, 3_600_000)),
            (key("ns/a", "llama"), totals(300, 0, 0)),
            (key("ns/b", "llama"), totals(50, 50, 0)),
            (key("ns/b", "qwen"), totals(10, 0, 0)),
            (key("unattributed", "llama"), totals(0, 200, 0)),
        ]);
        // llama: 600 tokens in all; a used 300 → half of 2 GPU-hours, b 100 → a sixth.
        let a = tenant_totals(&period, "ns/a");
        assert_eq!(a["llama"].gpu_milliseconds, 3_600_000);
        let b = tenant_totals(&period, "ns/b");
        assert_eq!(b["llama"].gpu_milliseconds, 1_200_000);
        assert_eq!(b["qwen"].gpu_milliseconds, 0, "qwen's pods recorded no GPU time");
        assert_eq!((b["llama"].prompt_tokens, b["qwen"].prompt_tokens), (50, 10));
        // Nobody used `idle`: its GPU time is billed to no tenant.
        assert!(!a.contains_key("idle") && !b.contains_key("idle"));
    }

    #[test]
    fn a_dedicated_model_bills_all_its_gpu_time_and_shares_never_exceed_it() {
        let mut period = BTreeMap::from([
            (key(GPU_TIME, "m"), totals(0, 0, 1_000)),
            (key("ns/only", "m"), totals(7, 0, 0)),
        ]);
        assert_eq!(tenant_totals(&period, "ns/only")["m"].gpu_milliseconds, 1_000);
        period.insert(key("ns/x", "m"), totals(7, 0, 0));
        period.insert(key("ns/y", "m"), totals(7, 0, 0));
        let billed: u64 = ["ns/only", "ns/x", "ns/y"]
            .iter()
            .map(|t| tenant_totals(&period, t)["m"].gpu_milliseconds)
            .sum();
        assert_eq!(billed, 999, "thirds round down: 333 each");
    }
}
