//! The gateway's Prometheus metrics, in their own `Registry`. Every label is bounded: `model`
//! by the served names in the Config (unknown names are counted as `unknown`), `tier` by the
//! Tiers, `code` by HTTP status codes, `replica` by the replicas of a model, and `tenant` by the
//! number of Tenant objects (one series per Tenant, which the platform team creates; a client
//! cannot mint new label values).

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Gateway metrics.
#[derive(Clone)]
pub struct GatewayMetrics {
    /// The registry rendered on `/metrics`.
    pub registry: Registry,
    /// `hearth_gateway_requests_total{model,tier,code}`.
    pub requests: IntCounterVec,
    /// `hearth_gateway_request_duration_seconds{model}`: arrival to the end of the response.
    pub duration: HistogramVec,
    /// `hearth_gateway_time_to_first_byte_seconds{model}`: arrival to the engine's response head.
    pub first_byte: HistogramVec,
    /// `hearth_gateway_queue_wait_seconds{model,tier}`.
    pub queue_wait: HistogramVec,
    /// `hearth_gateway_shed_total{model,reason}`.
    pub shed: IntCounterVec,
    /// `hearth_gateway_rate_limited_total{tier,limit}`.
    pub rate_limited: IntCounterVec,
    /// `hearth_gateway_tenant_tokens_total{tenant,kind}`; `kind` is `prompt` or `completion`.
    /// The tenant label is bounded by the number of Tenants.
    pub tenant_tokens: IntCounterVec,
    /// `hearth_gateway_replica_in_flight{model,replica}`.
    pub replica_in_flight: IntGaugeVec,
    /// `hearth_gateway_queue_depth{model}`.
    pub queue_depth: IntGaugeVec,
    /// `hearth_gateway_upstream_failures_total{model}`: failures before the first byte.
    pub upstream_failures: IntCounterVec,
}

const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

impl GatewayMetrics {
    /// Creates and registers the metrics.
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let metric =
                IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition is valid");
            registry
                .register(Box::new(metric.clone()))
                .expect("static metric definition is valid");
            metric
        };
        let histogram = |name: &str, help: &str, labels: &[&str]| {
            let opts = HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec());
            let metric = HistogramVec::new(opts, labels).expect("static metric definition is valid");
            registry
                .register(Box::new(metric.clone()))
                .expect("static metric definition is valid");
            metric
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let metric =
                IntGaugeVec::new(Opts::new(name, help), labels).expect("static metric definition is valid");
            registry
                .register(Box::new(metric.clone()))
                .expect("static metric definition is valid");
            metric
        };
        Self {
            requests: counter(
                "hearth_gateway_requests_total",
                "Requests answered, by model, tier and status code.",
                &["model", "tier", "code"],
            ),
            duration: histogram(
                "hearth_gateway_request_duration_seconds",
                "Arrival to the end of the response.",
                &["model"],
            ),
            first_byte: histogram(
                "hearth_gateway_time_to_first_byte_seconds",
                "Arrival to the engine's response head.",
                &["model"],
            ),
            queue_wait: histogram(
                "hearth_gateway_queue_wait_seconds",
                "Time spent in the model's queue.",
                &["model", "tier"],
            ),
            shed: counter(
                "hearth_gateway_shed_total",
                "Requests shed by the model's queue.",
                &["model", "reason"],
            ),
            rate_limited: counter(
                "hearth_gateway_rate_limited_total",
                "Requests refused by a tenant limit.",
                &["tier", "limit"],
            ),
            tenant_tokens: counter(
                "hearth_gateway_tenant_tokens_total",
                "Tokens used per tenant (label bounded by the number of Tenants).",
                &["tenant", "kind"],
            ),
            replica_in_flight: gauge(
                "hearth_gateway_replica_in_flight",
                "Requests outstanding per replica.",
                &["model", "replica"],
            ),
            queue_depth: gauge(
                "hearth_gateway_queue_depth",
                "Requests waiting per model.",
                &["model"],
            ),
            upstream_failures: counter(
                "hearth_gateway_upstream_failures_total",
                "Replica failures before the first byte.",
                &["model"],
            ),
            registry,
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        if let Err(error) = TextEncoder::new().encode(&self.registry.gather(), &mut buffer) {
            tracing::warn!(%error, "encoding gateway metrics failed");
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        Self::new()
    }
}
