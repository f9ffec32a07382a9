//! The operator's own HTTP server: `/metrics`, `/healthz`, `/readyz`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

use crate::metrics::Metrics;

/// Shared state of the health server.
#[derive(Clone)]
pub struct HealthState {
    /// Metrics to render.
    pub metrics: Metrics,
    /// Set once the controllers are running (or this replica is a healthy standby).
    pub ready: Arc<AtomicBool>,
}

/// The health and metrics routes.
pub fn app(state: HealthState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn metrics(State(state): State<HealthState>) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    (
        [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

async fn readyz(State(state): State<HealthState>) -> (StatusCode, &'static str) {
    if state.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    #[tokio::test]
    async fn readyz_follows_the_flag_and_metrics_render() {
        let state = HealthState {
            metrics: Metrics::new(),
            ready: Arc::new(AtomicBool::new(false)),
        };
        let _timer = state.metrics.reconcile_started("inferencemodel");
        let response = app(state.clone())
            .oneshot(Request::get("/readyz").body(Body::empty()).expect("request"))
            .await
            .expect("response");
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        state.ready.store(true, Ordering::Relaxed);
        let response = app(state.clone())
            .oneshot(Request::get("/readyz").body(Body::empty()).expect("request"))
            .await
            .expect("response");
        assert_eq!(response.status(), StatusCode::OK);
        let response = app(state)
            .oneshot(Request::get("/metrics").body(Body::empty()).expect("request"))
            .await
            .expect("response");
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        let text = String::from_utf8(body.to_vec()).expect("utf8");
        assert!(
            text.contains("hearth_operator_reconciles_total{controller=\"inferencemodel\"} 1"),
            "{text}"
        );
    }
}
