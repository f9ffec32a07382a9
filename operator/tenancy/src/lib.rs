//! The tenancy rules every Hearth part shares, so the controller, the gateway, billing and
//! local mode cannot disagree on them: how objects are named and identified, how API keys are
//! made and hashed, when a tenant's budget blocks it, and which limits are in force for it.

pub mod budget;
pub mod ids;
pub mod keys;
pub mod limits;
pub mod meter_tokens;
pub mod served_names;

pub use ids::{child_name, object_id};
