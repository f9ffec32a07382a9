//! `Tier`: a cluster-scoped service level — priority, fair-share weight, rate limits, monthly
//! quota, pricing and the models it may call.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A decimal amount as a string (money is never a float): digits with an optional fraction.
pub const DECIMAL_PATTERN: &str = r"^[0-9]{1,12}(\.[0-9]{1,9})?$";

/// A service level that Tenants reference by name.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "hearth.dev",
    version = "v1alpha1",
    kind = "Tier",
    plural = "tiers",
    shortname = "tier",
    status = "TierStatus",
    printcolumn = r#"{"name":"Priority","type":"integer","jsonPath":".spec.priority"}"#,
    printcolumn = r#"{"name":"Weight","type":"integer","jsonPath":".spec.weight"}"#,
    printcolumn = r#"{"name":"RPM","type":"integer","jsonPath":".spec.limits.requestsPerMinute"}"#,
    printcolumn = r#"{"name":"TPM","type":"integer","jsonPath":".spec.limits.tokensPerMinute"}"#,
    printcolumn = r#"{"name":"Tenants","type":"integer","jsonPath":".status.tenants"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct TierSpec {
    /// Strict priority band: requests of a higher band are always dequeued first.
    #[serde(default)]
    #[schemars(range(min = -1000, max = 1000))]
    pub priority: i32,
    /// Fair-share weight against other tiers of the same priority band under contention.
    #[serde(default = "default_weight")]
    #[schemars(range(min = 1, max = 1000))]
    pub weight: u32,
    /// Per-tenant rate limits; an absent limit is unlimited.
    #[serde(default)]
    pub limits: TierLimits,
    /// Per-tenant monthly quota.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<Quota>,
    /// Prices used by the billing aggregator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pricing: Option<Pricing>,
    /// Served model names this tier may call; empty means all models.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
    /// Latency objective used by dashboards and alerts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_target: Option<LatencyTarget>,
}

fn default_weight() -> u32 {
    1
}

/// Rate limits applied to each tenant of a tier (tenants may tighten them with overrides).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TierLimits {
    /// Requests admitted per minute (token bucket).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub requests_per_minute: Option<u64>,
    /// Prompt plus completion tokens admitted per minute (token bucket, reserved up front).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub tokens_per_minute: Option<u64>,
    /// Requests in flight at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_concurrent_requests: Option<u32>,
    /// Cap on `max_tokens` of a single request; also the reservation when a request sets none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_tokens_per_request: Option<u32>,
}

/// Monthly allowance per tenant.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Quota {
    /// Prompt plus completion tokens per calendar month (UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub tokens_per_month: Option<u64>,
}

/// Prices as exact decimal strings.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Pricing {
    /// ISO 4217 currency code.
    #[serde(default = "default_currency")]
    #[schemars(pattern(r"^[A-Z]{3}$"))]
    pub currency: String,
    /// Price per million prompt tokens, e.g. "0.50".
    #[schemars(pattern(r"^[0-9]{1,12}(\.[0-9]{1,9})?$"))]
    pub input_per_million_tokens: String,
    /// Price per million completion tokens, e.g. "1.50".
    #[schemars(pattern(r"^[0-9]{1,12}(\.[0-9]{1,9})?$"))]
    pub output_per_million_tokens: String,
    /// Optional price per GPU-hour held by the tenant's dedicated models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[0-9]{1,12}(\.[0-9]{1,9})?$"))]
    pub gpu_hour: Option<String>,
}

fn default_currency() -> String {
    "USD".to_string()
}

/// Latency objective.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LatencyTarget {
    /// 95th percentile time to first token, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub ttft_p95_ms: Option<u32>,
}

/// Observed state of a Tier.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TierStatus {
    /// `Ready` (the spec is valid).
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Number of Tenants referencing this tier.
    #[serde(default)]
    pub tenants: u32,
    /// The generation the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
