//! The usage record: the wire type between the meter sidecar (which writes it to its ledger)
//! and the billing aggregator (which pulls it by cursor).

use serde::{Deserialize, Serialize};

/// Tenant recorded when the gateway's attribution headers are missing.
pub const UNATTRIBUTED: &str = "unattributed";

/// Tenant of the records that report GPU time: a pod's GPUs held over an interval, shared
/// out to the tenants that used the model when invoices are priced.
pub const GPU_TIME: &str = "gpu-time";

/// One completed (or failed) request, as billed; or, with tenant [`GPU_TIME`], the GPU time
/// one serving pod held over an interval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageRecord {
    /// The gateway's request id (`x-hearth-request-id`), or one the meter made up.
    pub request_id: String,
    /// `namespace/name` of the tenant, or `unattributed`.
    pub tenant: String,
    /// Tier name, empty when unattributed.
    pub tier: String,
    /// The `model` the response names (or the request asked for).
    pub model: String,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// True when the engine sent no usage and the meter counted streamed chunks instead.
    pub estimated: bool,
    /// HTTP status the engine answered with.
    pub status: u16,
    /// True when the response was streamed (SSE).
    pub streamed: bool,
    /// Unix milliseconds when the request arrived.
    pub started_at_ms: u64,
    /// Unix milliseconds when the response ended.
    pub finished_at_ms: u64,
    /// GPU-milliseconds held (GPUs × wall time); only on [`GPU_TIME`] records.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub gpu_milliseconds: u64,
    /// Why billing did not bill this record to its tenant (it failed billing's checks); set by
    /// billing when it stores the record, never taken from a meter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected: Option<String>,
}

/// Tenant whose totals hold the records billing rejected, so they are counted but billed to
/// no one.
pub const REJECTED: &str = "rejected";

impl UsageRecord {
    /// The tenant this record's tokens count toward: its own, or [`REJECTED`].
    pub fn billed_tenant(&self) -> &str {
        match self.rejected {
            Some(_) => REJECTED,
            None => &self.tenant,
        }
    }
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

/// A record with its position in the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sequenced {
    /// Position, strictly increasing across segments and restarts; the cursor of `/usage`.
    pub sequence: u64,
    /// The record.
    pub record: UsageRecord,
}
