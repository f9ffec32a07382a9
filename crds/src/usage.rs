//! The usage record: the wire type between the meter sidecar (which writes it to its ledger)
//! and the billing aggregator (which pulls it by cursor).

use serde::{Deserialize, Serialize};

/// Tenant recorded when the gateway's attribution headers are missing.
pub const UNATTRIBUTED: &str = "unattributed";

/// One completed (or failed) request, as billed.
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
}

/// A record with its position in the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sequenced {
    /// Position, strictly increasing across segments and restarts; the cursor of `/usage`.
    pub sequence: u64,
    /// The record.
    pub record: UsageRecord,
}
