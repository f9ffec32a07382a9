//! What every Hearth control-plane process shares: the log set-up, leader election through a
//! Lease, server-side apply with an applied-hash guard, and the error a reconcile or a status
//! write ends with.

pub mod error;
pub mod leader;
pub mod ssa;
pub mod telemetry;

pub use error::{Error, Result};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// The current time as a Kubernetes timestamp.
pub fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}
