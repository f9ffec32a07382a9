//! `Tenant`: a customer of the platform — its tier, API keys, stricter overrides, budget and
//! the usage the billing aggregator reports back.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::tier::{Quota, TierLimits};

/// A customer with API keys, bound to a Tier.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "hearth.dev",
    version = "v1alpha1",
    kind = "Tenant",
    plural = "tenants",
    shortname = "tenant",
    namespaced,
    status = "TenantStatus",
    printcolumn = r#"{"name":"Tier","type":"string","jsonPath":".spec.tierRef"}"#,
    printcolumn = r#"{"name":"Suspended","type":"boolean","jsonPath":".spec.suspended"}"#,
    printcolumn = r#"{"name":"Requests","type":"integer","jsonPath":".status.usage.requests"}"#,
    printcolumn = r#"{"name":"Usage","type":"string","jsonPath":".status.usage.cost"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct TenantSpec {
    /// Name of the cluster-scoped Tier this tenant belongs to.
    #[schemars(length(min = 1, max = 253))]
    pub tier_ref: String,
    /// Human-readable name shown in invoices and dashboards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// API keys; entries without `secretRef` get an operator-generated key Secret.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    #[schemars(length(max = 32))]
    pub api_keys: Vec<ApiKey>,
    /// Limits and quota stricter than the tier's (a looser value is ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overrides: Option<TenantOverrides>,
    /// Monthly spending limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,
    /// A suspended tenant's requests are refused with 403.
    #[serde(default)]
    pub suspended: bool,
}

/// One API key of a tenant.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKey {
    /// Key name, unique within the tenant (a DNS label).
    #[schemars(length(min = 1, max = 40), pattern(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub name: String,
    /// Existing Secret holding the key; when absent the operator generates one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
    /// A revoked key is refused with 401 while its Secret is kept.
    #[serde(default)]
    pub revoked: bool,
}

/// Reference to a key inside a Secret in the tenant's namespace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Secret name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key inside the Secret's data.
    #[serde(default = "default_secret_key")]
    pub key: String,
}

fn default_secret_key() -> String {
    crate::constants::SECRET_KEY_FIELD.to_string()
}

/// Per-tenant tightening of its tier's limits and quota.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantOverrides {
    /// Stricter rate limits.
    #[serde(default)]
    pub limits: TierLimits,
    /// Stricter monthly quota.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<Quota>,
}

/// What happens when the monthly budget is crossed.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum BudgetAction {
    /// Refuse further requests with 403 until the next period or a raised limit.
    Block,
    /// Only set the `BudgetExceeded` condition.
    #[default]
    Notify,
}

/// A monthly spending limit in the tier's currency.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Budget {
    /// Decimal amount, e.g. "250.00".
    #[schemars(pattern(r"^[0-9]{1,12}(\.[0-9]{1,9})?$"))]
    pub monthly_limit: String,
    /// `Block` or `Notify`.
    #[serde(default)]
    pub action: BudgetAction,
}

/// Observed state of a Tenant.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantStatus {
    /// `Ready`, `TierResolved`, `KeysReady`, `BudgetExceeded`.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The generation the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Usage in the current billing period, written by the billing aggregator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<TenantUsage>,
    /// Hashes and fingerprints of the tenant's keys; the gateway authenticates against these.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub api_keys: Vec<ApiKeyStatus>,
}

/// Usage for one billing period.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantUsage {
    /// Calendar month in UTC, `YYYY-MM`.
    pub period: String,
    /// Completed requests.
    pub requests: u64,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Cost as a decimal string in the tier's currency.
    pub cost: String,
}

/// What the operator publishes about one key: never the key, only its hash.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyStatus {
    /// The `apiKeys[].name` this describes.
    pub name: String,
    /// `sha256:<hex>` of the key; the gateway compares hashes in constant time.
    pub hash: String,
    /// First 8 hex digits of the hash, for humans to tell keys apart.
    pub fingerprint: String,
    /// Secret that holds the key.
    pub secret_name: String,
    /// Mirrors `apiKeys[].revoked`.
    #[serde(default)]
    pub revoked: bool,
}
