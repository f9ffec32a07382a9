//! Hearth's custom resources (`InferenceModel`, `Tenant`, `Tier` in `hearth.dev/v1alpha1`),
//! their status and condition types, shared constants, pure spec validation and the VRAM
//! memory planner. No controller logic lives here.

pub mod conditions;
pub mod constants;
pub mod crd_docs;
pub mod crdgen;
pub mod inference_model;
pub mod planner;
pub mod tenant;
pub mod tier;
pub mod usage;
pub mod validation;

pub use inference_model::{InferenceModel, InferenceModelSpec, InferenceModelStatus};
pub use tenant::{Tenant, TenantSpec, TenantStatus};
pub use tier::{Tier, TierSpec, TierStatus};

/// The API group of every Hearth resource.
pub const GROUP: &str = "hearth.dev";
/// The served (and stored) version of every Hearth resource.
pub const VERSION: &str = "v1alpha1";
