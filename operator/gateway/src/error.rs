//! Everything the gateway can refuse a request with, each variant mapped to a status code and an
//! OpenAI-shaped body `{"error":{"message","type","param","code"}}` with a stable `type`/`code`.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::rate_limit::RateLimitHeaders;

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    /// `requestsPerMinute`.
    Requests,
    /// `tokensPerMinute`.
    Tokens,
    /// `maxConcurrentRequests`.
    Concurrency,
}

impl LimitKind {
    /// Bounded label value.
    pub fn label(self) -> &'static str {
        match self {
            Self::Requests => "requests",
            Self::Tokens => "tokens",
            Self::Concurrency => "concurrency",
        }
    }
}

/// A refused or failed request.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// No `Authorization: Bearer` header.
    #[error("You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.")]
    MissingKey,
    /// The key matches no known hash.
    #[error("Incorrect API key provided.")]
    InvalidKey,
    /// The key is known but revoked.
    #[error("This API key has been revoked.")]
    RevokedKey,
    /// The tenant is suspended.
    #[error("Your tenant is suspended; contact the platform team.")]
    Suspended,
    /// The monthly budget is crossed and the tenant's budget action is `Block`.
    #[error("Your tenant's monthly budget is exhausted.")]
    BudgetExceeded,
    /// The body exceeds the size limit.
    #[error("Request body exceeds the limit of {limit} bytes.")]
    BodyTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The body is not the JSON the endpoint expects.
    #[error("{message}")]
    InvalidRequest {
        /// What is wrong.
        message: String,
        /// The offending field, if one.
        param: Option<&'static str>,
    },
    /// The model does not exist or the caller's tier may not use it.
    #[error("The model `{0}` does not exist or your tier does not have access to it.")]
    ModelNotFound(String),
    /// `max_tokens` above the tier's `maxTokensPerRequest`.
    #[error("{field} is {requested}, above this tier's maxTokensPerRequest of {limit}.")]
    MaxTokensTooLarge {
        /// `max_tokens` or `max_completion_tokens`.
        field: &'static str,
        /// What the request asked for.
        requested: u64,
        /// The limit.
        limit: u32,
    },
    /// The request's reservation exceeds a limit's whole size, so no wait would admit it.
    #[error(
        "This request needs up to {tokens} tokens (prompt plus max_tokens for each of n choices), more than this tier's {limit_name} of {limit}; lower max_tokens, n or the prompt."
    )]
    NeverFits {
        /// Tokens the request would reserve.
        tokens: u64,
        /// The limit's size.
        limit: u64,
        /// `tokensPerMinute` or `tokensPerMonth`.
        limit_name: &'static str,
    },
    /// A per-minute bucket or the concurrency cap refused the request.
    #[error("Rate limit reached for {} of this tenant; retry after {}s.", .kind.label(), .retry_after.as_secs())]
    RateLimited {
        /// The limit that refused.
        kind: LimitKind,
        /// When the refused amount will be available.
        retry_after: Duration,
        /// `x-ratelimit-*` values.
        headers: RateLimitHeaders,
    },
    /// The monthly token quota cannot cover the request.
    #[error("You exceeded your monthly token quota.")]
    QuotaExhausted {
        /// Time until the next period.
        retry_after: Duration,
    },
    /// The model's queue is full or the wait bound passed.
    #[error("The model `{model}` is overloaded ({reason}); retry shortly.")]
    Overloaded {
        /// Model.
        model: String,
        /// `queue_full` or `queue_timeout`.
        reason: &'static str,
        /// Suggested wait.
        retry_after: Duration,
    },
    /// The model has no ready replica.
    #[error("The model `{0}` has no ready replica.")]
    NoReplicas(String),
    /// The model was at zero replicas and no replica became ready within the wait bound, or
    /// the gateway could not ask for one.
    #[error(
        "The model `{model}` is starting from zero replicas and is not ready yet ({reason}); retry shortly."
    )]
    Starting {
        /// Model.
        model: String,
        /// `wake_timeout` or `scale_failed`.
        reason: &'static str,
        /// Suggested wait.
        retry_after: Duration,
    },
    /// Every replica tried failed before answering; the detail (addresses, socket errors) is
    /// logged, never sent to the client.
    #[error("The model's replicas failed to answer; retry shortly.")]
    Upstream(String),
    /// The shared limiter (Redis) could not be asked in time; the gateway fails closed.
    #[error("Rate limiting is temporarily unavailable; retry shortly.")]
    LimiterUnavailable,
}

impl GatewayError {
    /// Bounded category for metrics and logs.
    pub fn category(&self) -> &'static str {
        match self {
            Self::MissingKey => "missing_key",
            Self::InvalidKey => "invalid_key",
            Self::RevokedKey => "revoked_key",
            Self::Suspended => "suspended",
            Self::BudgetExceeded => "budget_exceeded",
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::InvalidRequest { .. } => "invalid_request",
            Self::ModelNotFound(_) => "model_not_found",
            Self::MaxTokensTooLarge { .. } => "max_tokens_too_large",
            Self::NeverFits { .. } => "never_fits",
            Self::RateLimited { .. } => "rate_limited",
            Self::QuotaExhausted { .. } => "quota_exhausted",
            Self::Overloaded { .. } => "overloaded",
            Self::NoReplicas(_) => "no_replicas",
            Self::Starting { .. } => "model_starting",
            Self::Upstream(_) => "upstream",
            Self::LimiterUnavailable => "limiter_unavailable",
        }
    }

    /// HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MissingKey | Self::InvalidKey | Self::RevokedKey => StatusCode::UNAUTHORIZED,
            Self::Suspended | Self::BudgetExceeded => StatusCode::FORBIDDEN,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::InvalidRequest { .. } | Self::MaxTokensTooLarge { .. } | Self::NeverFits { .. } => {
                StatusCode::BAD_REQUEST
            }
            Self::ModelNotFound(_) => StatusCode::NOT_FOUND,
            Self::RateLimited { .. } | Self::QuotaExhausted { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Overloaded { .. }
            | Self::NoReplicas(_)
            | Self::Starting { .. }
            | Self::LimiterUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Upstream(_) => StatusCode::BAD_GATEWAY,
        }
    }

    /// OpenAI's `type` and `code` for this error.
    fn type_and_code(&self) -> (&'static str, &'static str) {
        match self {
            Self::MissingKey => ("invalid_request_error", "missing_api_key"),
            Self::InvalidKey => ("invalid_request_error", "invalid_api_key"),
            Self::RevokedKey => ("invalid_request_error", "revoked_api_key"),
            Self::Suspended => ("permission_error", "tenant_suspended"),
            Self::BudgetExceeded => ("permission_error", "budget_exceeded"),
            Self::BodyTooLarge { .. } => ("invalid_request_error", "request_too_large"),
            Self::InvalidRequest { .. } => ("invalid_request_error", "invalid_request"),
            Self::ModelNotFound(_) => ("invalid_request_error", "model_not_found"),
            Self::MaxTokensTooLarge { .. } => ("invalid_request_error", "max_tokens_too_large"),
            Self::NeverFits { .. } => ("invalid_request_error", "request_exceeds_limit"),
            Self::RateLimited { kind, .. } => (kind.label(), "rate_limit_exceeded"),
            Self::QuotaExhausted { .. } => ("insufficient_quota", "insufficient_quota"),
            Self::Overloaded { .. } => ("server_error", "overloaded"),
            Self::NoReplicas(_) => ("server_error", "no_ready_replica"),
            Self::Starting { .. } => ("server_error", "model_starting"),
            Self::Upstream(_) => ("server_error", "upstream_error"),
            Self::LimiterUnavailable => ("server_error", "limiter_unavailable"),
        }
    }

    fn param(&self) -> Option<&'static str> {
        match self {
            Self::InvalidRequest { param, .. } => *param,
            Self::ModelNotFound(_) => Some("model"),
            Self::MaxTokensTooLarge { field, .. } => Some(field),
            Self::NeverFits { .. } => Some("max_tokens"),
            _ => None,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after, .. }
            | Self::QuotaExhausted { retry_after }
            | Self::Overloaded { retry_after, .. }
            | Self::Starting { retry_after, .. } => Some(*retry_after),
            Self::NoReplicas(_) | Self::Upstream(_) | Self::LimiterUnavailable => {
                Some(Duration::from_secs(1))
            }
            _ => None,
        }
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        let (kind, code) = self.type_and_code();
        json!({"error": {"message": self.to_string(), "type": kind, "param": self.param(), "code": code}})
    }
}

/// `Retry-After` in whole seconds, rounded up, at least 1.
pub fn retry_after_seconds(wait: Duration) -> u64 {
    let whole = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    whole.max(1)
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let mut headers = HeaderMap::new();
        if let Some(wait) = self.retry_after() {
            headers.insert(
                axum::http::header::RETRY_AFTER,
                HeaderValue::from(retry_after_seconds(wait)),
            );
        }
        if let Self::RateLimited { headers: limits, .. } = &self {
            limits.write(&mut headers);
        }
        let mut response = (self.status(), axum::Json(self.body())).into_response();
        response.headers_mut().extend(headers);
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_have_openai_shape_and_retry_after_rounds_up() {
        let error = GatewayError::MaxTokensTooLarge {
            field: "max_tokens",
            requested: 5000,
            limit: 1024,
        };
        assert_eq!(error.status(), StatusCode::BAD_REQUEST);
        let body = error.body();
        assert_eq!(body["error"]["param"], "max_tokens");
        assert_eq!(body["error"]["code"], "max_tokens_too_large");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("1024"))
        );
        assert_eq!(retry_after_seconds(Duration::from_millis(5001)), 6);
        assert_eq!(retry_after_seconds(Duration::from_secs(6)), 6);
        assert_eq!(retry_after_seconds(Duration::ZERO), 1);
        let closed = GatewayError::LimiterUnavailable.into_response();
        assert_eq!(closed.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            closed.headers().get(axum::http::header::RETRY_AFTER),
            Some(&HeaderValue::from(1u64))
        );
    }
}
