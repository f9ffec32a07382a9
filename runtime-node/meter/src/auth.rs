//! Who may call the meter. Proxied requests (and the attribution headers they carry) need the
//! gateway's token in `x-hearth-gateway-token`; `/usage` and `/usage/ack` need billing's token
//! as `Authorization: Bearer`. The engine's probe and metrics GETs stay open: the engine listens
//! on the pod's loopback, so the kubelet and Prometheus reach them only through the meter.

use std::sync::Arc;

use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use subtle::ConstantTimeEq;

use hearth_crds::constants::HEADER_GATEWAY_TOKEN;

/// The meter's two tokens; `None` leaves that side open (`--unauthenticated`).
#[derive(Clone, Default)]
pub struct MeterAuth {
    /// Token of the gateway (proxied requests).
    pub proxy: Option<Arc<str>>,
    /// Token of billing (usage records).
    pub usage: Option<Arc<str>>,
}

impl std::fmt::Debug for MeterAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeterAuth")
            .field("proxy", &self.proxy.is_some())
            .field("usage", &self.usage.is_some())
            .finish()
    }
}

fn matches(expected: &str, presented: Option<&str>) -> bool {
    presented.is_some_and(|presented| bool::from(expected.as_bytes().ct_eq(presented.as_bytes())))
}

/// A refused caller: answered 401 in OpenAI's error shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unauthorized(&'static str);

impl IntoResponse for Unauthorized {
    fn into_response(self) -> Response {
        (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": {"message": self.0, "type": "authentication_error", "param": null, "code": null}})),
        )
            .into_response()
    }
}

/// Requests the meter passes to the engine without the gateway's token: the kubelet's probes
/// and Prometheus' scrape.
fn is_open_engine_path(method: &Method, path: &str) -> bool {
    method == Method::GET && matches!(path, "/health" | "/ready" | "/metrics")
}

impl MeterAuth {
    /// Checks a request to be proxied.
    pub fn check_proxy(&self, method: &Method, path: &str, headers: &HeaderMap) -> Result<(), Unauthorized> {
        let Some(expected) = &self.proxy else {
            return Ok(());
        };
        if is_open_engine_path(method, path) {
            return Ok(());
        }
        let presented = headers.get(HEADER_GATEWAY_TOKEN).and_then(|v| v.to_str().ok());
        if matches(expected, presented) {
            Ok(())
        } else {
            Err(Unauthorized(
                "this model is served only through the Hearth gateway",
            ))
        }
    }

    /// Checks a request for usage records.
    pub fn check_usage(&self, headers: &HeaderMap) -> Result<(), Unauthorized> {
        let Some(expected) = &self.usage else {
            return Ok(());
        };
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if matches(expected, presented) {
            Ok(())
        } else {
            Err(Unauthorized("usage records need billing's bearer token"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn auth() -> MeterAuth {
        MeterAuth {
            proxy: Some("p-token".into()),
            usage: Some("u-token".into()),
        }
    }

    fn with(name: &'static str, value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(name, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn proxied_requests_need_the_gateway_token() {
        let path = "/v1/chat/completions";
        assert!(
            auth()
                .check_proxy(&Method::POST, path, &HeaderMap::new())
                .is_err()
        );
        assert!(
            auth()
                .check_proxy(&Method::POST, path, &with(HEADER_GATEWAY_TOKEN, "u-token"))
                .is_err()
        );
        assert!(
            auth()
                .check_proxy(&Method::POST, path, &with(HEADER_GATEWAY_TOKEN, "p-token"))
                .is_ok()
        );
        for open in ["/health", "/ready", "/metrics"] {
            assert!(auth().check_proxy(&Method::GET, open, &HeaderMap::new()).is_ok());
        }
        assert!(
            auth()
                .check_proxy(&Method::GET, "/v1/models", &HeaderMap::new())
                .is_err()
        );
        assert!(
            auth()
                .check_proxy(&Method::POST, "/health", &HeaderMap::new())
                .is_err()
        );
        assert!(
            MeterAuth::default()
                .check_proxy(&Method::POST, path, &HeaderMap::new())
                .is_ok()
        );
    }

    #[test]
    fn usage_needs_billing_bearer_token() {
        assert!(auth().check_usage(&HeaderMap::new()).is_err());
        assert!(
            auth()
                .check_usage(&with("authorization", "Bearer p-token"))
                .is_err()
        );
        assert!(auth().check_usage(&with("authorization", "u-token")).is_err());
        assert!(
            auth()
                .check_usage(&with("authorization", "Bearer u-token"))
                .is_ok()
        );
    }
}
