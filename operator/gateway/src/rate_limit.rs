//! OpenAI's `x-ratelimit-*` response headers: their names and the values a limiter reports at
//! admission, written on every answer and on 429s.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue};

use super::bucket::format_reset;

/// Header names of the OpenAI rate-limit headers.
pub mod headers {
    use axum::http::HeaderName;

    /// `x-ratelimit-limit-requests`.
    pub const LIMIT_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-limit-requests");
    /// `x-ratelimit-remaining-requests`.
    pub const REMAINING_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-remaining-requests");
    /// `x-ratelimit-reset-requests`.
    pub const RESET_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-reset-requests");
    /// `x-ratelimit-limit-tokens`.
    pub const LIMIT_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-limit-tokens");
    /// `x-ratelimit-remaining-tokens`.
    pub const REMAINING_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-remaining-tokens");
    /// `x-ratelimit-reset-tokens`.
    pub const RESET_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-reset-tokens");
}

/// The values of OpenAI's `x-ratelimit-*` headers for one tenant at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateLimitHeaders {
    /// Requests: `(limit, remaining, time until full)`.
    pub requests: Option<(u64, u64, Duration)>,
    /// Tokens: `(limit, remaining, time until full)`.
    pub tokens: Option<(u64, u64, Duration)>,
}

impl RateLimitHeaders {
    /// Adds the headers for the limits the tenant has.
    pub fn write(&self, out: &mut HeaderMap) {
        if let Some((limit, remaining, reset)) = self.requests {
            out.insert(headers::LIMIT_REQUESTS, HeaderValue::from(limit));
            out.insert(headers::REMAINING_REQUESTS, HeaderValue::from(remaining));
            if let Ok(value) = HeaderValue::from_str(&format_reset(reset)) {
                out.insert(headers::RESET_REQUESTS, value);
            }
        }
        if let Some((limit, remaining, reset)) = self.tokens {
            out.insert(headers::LIMIT_TOKENS, HeaderValue::from(limit));
            out.insert(headers::REMAINING_TOKENS, HeaderValue::from(remaining));
            if let Ok(value) = HeaderValue::from_str(&format_reset(reset)) {
                out.insert(headers::RESET_TOKENS, value);
            }
        }
    }
}
