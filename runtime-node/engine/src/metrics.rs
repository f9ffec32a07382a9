//! The engine's Prometheus metrics, registered in the process's one registry and served as text
//! on `/metrics`.

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// Engine metrics (names prefixed `hearth_engine_`).
#[derive(Debug, Clone)]
pub struct EngineMetrics {
    /// Seconds from request arrival to its first generated token.
    pub time_to_first_token: Histogram,
    /// Seconds between consecutive generated tokens of one request.
    pub time_per_output_token: Histogram,
    /// Prompt tokens admitted (cached or computed).
    pub prompt_tokens: IntCounter,
    /// Tokens generated.
    pub generation_tokens: IntCounter,
    /// Sequences in the running batch.
    pub running: IntGauge,
    /// Requests waiting for a batch slot.
    pub waiting: IntGauge,
    /// Finished requests by `finish_reason` (`stop`, `length`, `cancelled`, `error`).
    pub requests: IntCounterVec,
    /// Prompt tokens looked up in the prefix cache.
    pub prefix_cache_queries: IntCounter,
    /// Prompt tokens found in the prefix cache (prefill skipped); hits / queries is the hit ratio.
    pub prefix_cache_hits: IntCounter,
    /// Sequences preempted (blocks freed, recomputed later): the KV pool was full, or a
    /// higher-priority request needed the slot.
    pub preemptions: IntCounter,
    /// Fraction of KV-cache blocks held by sequences (0 to 1).
    pub kv_cache_utilization: Gauge,
}

impl EngineMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let latency_buckets = vec![
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
        ];
        let per_token_buckets = vec![
            0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.15, 0.3, 0.6, 1.2, 2.5,
        ];
        let metrics = Self {
            time_to_first_token: Histogram::with_opts(
                HistogramOpts::new(
                    "hearth_engine_time_to_first_token_seconds",
                    "Seconds from request arrival to its first generated token.",
                )
                .buckets(latency_buckets),
            )?,
            time_per_output_token: Histogram::with_opts(
                HistogramOpts::new(
                    "hearth_engine_time_per_output_token_seconds",
                    "Seconds between consecutive generated tokens of a request.",
                )
                .buckets(per_token_buckets),
            )?,
            prompt_tokens: IntCounter::new("hearth_engine_prompt_tokens_total", "Prompt tokens admitted.")?,
            generation_tokens: IntCounter::new("hearth_engine_generation_tokens_total", "Tokens generated.")?,
            prefix_cache_queries: IntCounter::new(
                "hearth_engine_prefix_cache_queries_tokens_total",
                "Prompt tokens looked up in the prefix cache.",
            )?,
            prefix_cache_hits: IntCounter::new(
                "hearth_engine_prefix_cache_hits_tokens_total",
                "Prompt tokens served from the prefix cache.",
            )?,
            preemptions: IntCounter::new(
                "hearth_engine_preemptions_total",
                "Sequences preempted (KV cache full, or a higher-priority request waiting).",
            )?,
            running: IntGauge::new(
                "hearth_engine_running_sequences",
                "Sequences in the running batch.",
            )?,
            waiting: IntGauge::new(
                "hearth_engine_waiting_requests",
                "Requests waiting for a batch slot.",
            )?,
            requests: IntCounterVec::new(
                Opts::new(
                    "hearth_engine_requests_total",
                    "Finished requests by finish reason.",
                ),
                &["finish_reason"],
            )?,
            kv_cache_utilization: Gauge::new(
                "hearth_engine_kv_cache_utilization",
                "Fraction of KV-cache blocks held by sequences.",
            )?,
        };
        registry.register(Box::new(metrics.time_to_first_token.clone()))?;
        registry.register(Box::new(metrics.time_per_output_token.clone()))?;
        registry.register(Box::new(metrics.prompt_tokens.clone()))?;
        registry.register(Box::new(metrics.generation_tokens.clone()))?;
        registry.register(Box::new(metrics.prefix_cache_queries.clone()))?;
        registry.register(Box::new(metrics.prefix_cache_hits.clone()))?;
        registry.register(Box::new(metrics.preemptions.clone()))?;
        registry.register(Box::new(metrics.running.clone()))?;
        registry.register(Box::new(metrics.waiting.clone()))?;
        registry.register(Box::new(metrics.requests.clone()))?;
        registry.register(Box::new(metrics.kv_cache_utilization.clone()))?;
        Ok(metrics)
    }
}

/// Renders every metric in `registry` in the Prometheus text format.
pub fn render(registry: &Registry) -> String {
    let mut buf = Vec::new();
    if let Err(err) = TextEncoder::new().encode(&registry.gather(), &mut buf) {
        tracing::warn!(%err, "encoding metrics");
    }
    String::from_utf8_lossy(&buf).into_owned()
}
