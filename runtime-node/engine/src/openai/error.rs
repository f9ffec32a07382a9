//! OpenAI-shaped errors: `{"error": {"message", "type", "param", "code"}}` with a matching status.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::engine::EngineError;

/// An error as the OpenAI API reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Human-readable message.
    pub message: String,
    /// Stable category (`invalid_request_error`, `server_error`, ...).
    pub kind: &'static str,
    /// The request field at fault, if one is.
    pub param: Option<String>,
    /// Stable machine code (`context_length_exceeded`, `model_not_found`, ...).
    pub code: Option<&'static str>,
}

/// The JSON body of an error response (also the payload of an SSE error event).
#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    /// The error.
    pub error: ErrorDetail<'a>,
}

/// The fields inside `error`.
#[derive(Debug, Serialize)]
pub struct ErrorDetail<'a> {
    /// Human-readable message.
    pub message: &'a str,
    /// Stable category.
    #[serde(rename = "type")]
    pub kind: &'a str,
    /// The request field at fault.
    pub param: Option<&'a str>,
    /// Stable machine code.
    pub code: Option<&'a str>,
}

impl ApiError {
    /// 400 `invalid_request_error`.
    pub fn invalid(message: impl Into<String>, param: Option<&str>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param: param.map(str::to_string),
            code: None,
        }
    }

    /// 404 for a model id this server does not serve.
    pub fn model_not_found(model: &str) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message: format!("The model `{model}` does not exist."),
            kind: "invalid_request_error",
            param: Some("model".into()),
            code: Some("model_not_found"),
        }
    }

    /// 503 while the engine is not running.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: message.into(),
            kind: "server_error",
            param: None,
            code: None,
        }
    }

    /// The JSON body.
    pub fn body(&self) -> ErrorBody<'_> {
        ErrorBody {
            error: ErrorDetail {
                message: &self.message,
                kind: self.kind,
                param: self.param.as_deref(),
                code: self.code,
            },
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(err: EngineError) -> Self {
        let message = err.to_string();
        match err {
            EngineError::ContextLengthExceeded { .. } => Self {
                code: Some("context_length_exceeded"),
                ..Self::invalid(message, Some("messages"))
            },
            EngineError::InvalidRequest(_) => Self::invalid(message, None),
            EngineError::Template(_) => Self::invalid(message, Some("messages")),
            EngineError::Unavailable => Self::unavailable(message),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}
