//! The billing aggregator: pulls usage records from every meter by cursor, stores them once
//! (deduplicated by request id) in a crash-safe embedded store, prices them by Tier with exact
//! decimal arithmetic, writes `Tenant.status.usage` and budget conditions, and serves invoices.

pub mod aggregator;
pub mod cloudevents;
pub mod discovery;
pub mod front;
pub mod gpu_share;
pub mod http;
pub mod invoice;
pub mod postgres;
pub mod pricing;
pub mod pull;
pub mod sanity;
pub mod store;
pub mod usage_status;
