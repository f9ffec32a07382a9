//! The OpenAI-compatible HTTP server: `app(state)` builds the router, so tests drive it with
//! `oneshot` against a fake [`Engine`].

mod chat;
mod completions;
mod generation;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use prometheus::Registry;

use crate::engine::Engine;
use crate::openai::ApiError;
use crate::openai::models::{ModelCard, ModelList};

/// Header through which the gateway passes a request's priority (higher runs first).
pub const PRIORITY_HEADER: &str = "x-hearth-priority";

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    /// The engine requests go to.
    pub engine: Arc<dyn Engine>,
    /// The process's metrics registry, rendered on `/metrics`.
    pub registry: Registry,
    /// Largest accepted request body, in bytes.
    pub max_request_bytes: usize,
    /// Unix seconds the server started (`created` of the model card).
    pub started: u64,
}

impl AppState {
    /// State for `engine` with a fresh start time.
    pub fn new(engine: Arc<dyn Engine>, registry: Registry, max_request_bytes: usize) -> Self {
        Self {
            engine,
            registry,
            max_request_bytes,
            started: unix_now(),
        }
    }

    /// Refuses a request for a model this server does not serve.
    fn check_model(&self, model: &str) -> Result<(), ApiError> {
        if model == self.engine.model_id() {
            Ok(())
        } else {
            Err(ApiError::model_not_found(model))
        }
    }
}

/// The router: OpenAI endpoints plus health, readiness and metrics.
pub fn app(state: AppState) -> Router {
    let limit = state.max_request_bytes;
    Router::new()
        .route("/v1/chat/completions", post(chat::chat_completions))
        .route("/v1/completions", post(completions::completions))
        .route("/v1/models", get(models))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

async fn models(State(state): State<AppState>) -> Json<ModelList> {
    Json(ModelList {
        object: "list".into(),
        data: vec![ModelCard {
            id: state.engine.model_id().to_string(),
            object: "model".into(),
            created: state.started,
            owned_by: "hearth".into(),
            max_model_len: state.engine.max_context_tokens(),
        }],
    })
}

async fn health(State(state): State<AppState>) -> Response {
    if state.engine.is_alive() {
        (StatusCode::OK, "ok").into_response()
    } else {
        ApiError::unavailable("the engine's scheduler has stopped").into_response()
    }
}

async fn ready(State(state): State<AppState>) -> Response {
    if state.engine.is_ready() {
        (StatusCode::OK, "ready").into_response()
    } else {
        ApiError::unavailable("the engine is not ready").into_response()
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::metrics::render(&state.registry),
    )
        .into_response()
}

async fn not_found() -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        message: "no such endpoint".into(),
        kind: "invalid_request_error",
        param: None,
        code: None,
    }
}

/// The request's priority from [`PRIORITY_HEADER`] (0 when absent).
fn priority(headers: &HeaderMap) -> Result<i32, ApiError> {
    match headers.get(PRIORITY_HEADER) {
        None => Ok(0),
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<i32>().ok())
            .ok_or_else(|| ApiError::invalid(format!("header `{PRIORITY_HEADER}` must be an integer"), None)),
    }
}

/// A fresh response id with `prefix` (`chatcmpl`, `cmpl`).
fn response_id(prefix: &str) -> String {
    format!("{prefix}-{:032x}", rand::random::<u128>())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
