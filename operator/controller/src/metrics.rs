//! Prometheus metrics of the controllers, registered in one per-process registry.

use std::time::Instant;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

/// Reconcile metrics, labelled by controller (and error category), never by object name.
#[derive(Clone)]
pub struct Metrics {
    /// The registry `/metrics` renders.
    pub registry: Registry,
    reconciles: IntCounterVec,
    errors: IntCounterVec,
    duration: HistogramVec,
    writes: IntCounterVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers the metrics.
    pub fn new() -> Self {
        let registry = Registry::new();
        let reconciles = IntCounterVec::new(
            Opts::new(
                "hearth_operator_reconciles_total",
                "Reconciles started, by controller.",
            ),
            &["controller"],
        )
        .expect("static metric definition is valid");
        let errors = IntCounterVec::new(
            Opts::new(
                "hearth_operator_reconcile_errors_total",
                "Reconciles that failed, by controller and category.",
            ),
            &["controller", "category"],
        )
        .expect("static metric definition is valid");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "hearth_operator_reconcile_duration_seconds",
                "Reconcile duration, by controller.",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["controller"],
        )
        .expect("static metric definition is valid");
        let writes = IntCounterVec::new(
            Opts::new(
                "hearth_operator_writes_total",
                "Writes issued to the API server, by controller and kind.",
            ),
            &["controller", "kind"],
        )
        .expect("static metric definition is valid");
        for collector in [
            Box::new(reconciles.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(errors.clone()),
            Box::new(duration.clone()),
            Box::new(writes.clone()),
        ] {
            registry.register(collector).expect("metric names are unique");
        }
        Self {
            registry,
            reconciles,
            errors,
            duration,
            writes,
        }
    }

    /// Counts a reconcile and returns a guard that records its duration when dropped.
    pub fn reconcile_started(&self, controller: &'static str) -> ReconcileTimer {
        self.reconciles.with_label_values(&[controller]).inc();
        ReconcileTimer {
            histogram: self.duration.clone(),
            controller,
            start: Instant::now(),
        }
    }

    /// Counts a failed reconcile under its bounded category.
    pub fn reconcile_failed(&self, controller: &'static str, category: &'static str) {
        self.errors.with_label_values(&[controller, category]).inc();
    }

    /// Counts one write (apply, create, delete, status patch) to the API server.
    pub fn write_issued(&self, controller: &'static str, kind: &'static str) {
        self.writes.with_label_values(&[controller, kind]).inc();
    }

    /// Renders the registry in Prometheus text format.
    pub fn render(&self) -> String {
        let mut buffer = String::new();
        let encoder = prometheus::TextEncoder::new();
        // Encoding into a String only fails on invalid UTF-8, which the encoder never writes.
        let _ = encoder.encode_utf8(&self.registry.gather(), &mut buffer);
        buffer
    }
}

/// Records a reconcile's duration when it goes out of scope, whatever path the reconcile took.
pub struct ReconcileTimer {
    histogram: HistogramVec,
    controller: &'static str,
    start: Instant,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.histogram
            .with_label_values(&[self.controller])
            .observe(self.start.elapsed().as_secs_f64());
    }
}
