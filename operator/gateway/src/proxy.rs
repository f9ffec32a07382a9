//! Forwarding to a replica: the request is rebuilt for the engine (client `x-hearth-*` headers
//! and the key removed, the gateway's own set), sent with a pooled HTTP/1 client, and retried
//! once on another replica when the first fails before answering (connection refused, timeout,
//! or 502/503/504). Once a response head has come back nothing is retried.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, header};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::error::GatewayError;
use super::request::Endpoint;
use super::router::{InFlight, Replica, RouteRequest, Router, pick};
use hearth_crds::constants::HEADER_REQUEST_ID;

/// The pooled HTTP/1 client toward engines.
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A client with keep-alive pooling and `TCP_NODELAY` (SSE chunks must not wait for Nagle).
pub fn http_client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .build(connector)
}

/// Headers never forwarded to the engine: hop-by-hop ones, the client's key, and the length
/// (the body is rewritten).
const DROPPED_REQUEST_HEADERS: &[HeaderName] = &[
    header::AUTHORIZATION,
    header::HOST,
    header::CONTENT_LENGTH,
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    header::TE,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    header::EXPECT,
];

/// Whether a header name is one of the gateway's `x-hearth-*` headers.
pub fn is_hearth_header(name: &HeaderName) -> bool {
    name.as_str().starts_with("x-hearth-")
}

/// The headers the engine gets: the client's, minus the dropped and `x-hearth-*` ones, plus the
/// gateway's `x-hearth-*` set (so a client cannot forge its tenant, tier or priority).
pub fn engine_headers(client: &HeaderMap, hearth: &[(&'static str, String)]) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(client.len() + hearth.len());
    for (name, value) in client {
        if !DROPPED_REQUEST_HEADERS.contains(name) && !is_hearth_header(name) && name.as_str() != "keep-alive"
        {
            out.append(name.clone(), value.clone());
        }
    }
    for (name, value) in hearth {
        if let Ok(value) = HeaderValue::from_str(value) {
            out.insert(HeaderName::from_static(name), value);
        }
    }
    out.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    out
}

/// Response headers not passed back to the client.
pub fn drop_response_header(name: &HeaderName) -> bool {
    [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::CONTENT_LENGTH,
    ]
    .contains(name)
        || name.as_str() == "keep-alive"
        || is_hearth_header(name)
}

/// A response head from a replica, with the replica's outstanding-request guard.
pub struct Answer {
    /// The engine's response.
    pub response: Response<Incoming>,
    /// Held until the body ends.
    pub in_flight: InFlight,
}

async fn send_once(
    client: &HttpClient,
    replica: &Arc<Replica>,
    endpoint: Endpoint,
    headers: &HeaderMap,
    body: &Bytes,
    timeout: Duration,
) -> Result<Response<Incoming>, String> {
    let uri = format!("{}{}", replica.url.trim_end_matches('/'), endpoint.path());
    let mut request = Request::post(uri)
        .body(Full::new(body.clone()))
        .map_err(|e| e.to_string())?;
    *request.headers_mut() = headers.clone();
    match tokio::time::timeout(timeout, client.request(request)).await {
        Err(_) => Err(format!("no response head within {}s", timeout.as_secs())),
        Ok(Err(error)) => Err(error.to_string()),
        Ok(Ok(response))
            if matches!(
                response.status(),
                StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
            ) =>
        {
            Err(format!("replica answered {}", response.status()))
        }
        Ok(Ok(response)) => Ok(response),
    }
}

/// How the gateway reaches engines: its pooled client, the algorithm that chooses a replica and
/// the longest wait for a response head.
#[derive(Clone, Copy)]
pub struct Upstream<'a> {
    /// The pooled HTTP/1 client.
    pub client: &'a HttpClient,
    /// Chooses among a model's healthy replicas.
    pub router: &'a dyn Router,
    /// Longest wait for a response head.
    pub timeout: Duration,
}

/// One request on its way to an engine.
#[derive(Clone, Copy)]
pub struct Outgoing<'a> {
    /// Which endpoint.
    pub endpoint: Endpoint,
    /// The engine's headers ([`engine_headers`]).
    pub headers: &'a HeaderMap,
    /// The rewritten body.
    pub body: &'a Bytes,
    /// What the router may look at.
    pub route: RouteRequest<'a>,
}

/// Sends to the replica the router chooses and, if it fails before answering, once more to
/// another one. Each failure ejects the replica (see [`Replica::failed`]) and is reported to
/// `on_failure`.
pub async fn forward(
    upstream: Upstream<'_>,
    replicas: &[Arc<Replica>],
    outgoing: Outgoing<'_>,
    on_failure: &(dyn Fn(&Replica, &str) + Sync),
) -> Result<Answer, GatewayError> {
    let mut tried: Option<String> = None;
    let mut last_error = String::from("no replica");
    for attempt in 0..2 {
        let now = Instant::now();
        let Some(replica) = pick(upstream.router, replicas, &outgoing.route, tried.as_deref(), now) else {
            break;
        };
        let in_flight = replica.start();
        let Outgoing {
            endpoint,
            headers,
            body,
            ..
        } = outgoing;
        match send_once(
            upstream.client,
            &replica,
            endpoint,
            &attempt_headers(headers, attempt),
            body,
            upstream.timeout,
        )
        .await
        {
            Ok(response) => {
                replica.succeeded();
                return Ok(Answer { response, in_flight });
            }
            Err(error) => {
                let backoff = replica.failed(Instant::now());
                on_failure(&replica, &error);
                tracing::warn!(replica = %replica.url, %error, backoff_ms = backoff.as_millis() as u64, "replica failed before the first byte; ejected");
                last_error = error;
                tried = Some(replica.url.clone());
            }
        }
    }
    Err(GatewayError::Upstream(last_error))
}

/// `headers` for attempt `attempt` (from 0). A retry carries its own request id,
/// `<request id>.<attempt>`, so the meter records each attempt apart: a failed attempt cannot
/// take the answered one's place when billing deduplicates by request id.
fn attempt_headers(headers: &HeaderMap, attempt: u32) -> std::borrow::Cow<'_, HeaderMap> {
    let retried = headers
        .get(HEADER_REQUEST_ID)
        .and_then(|id| id.to_str().ok())
        .filter(|_| attempt > 0)
        .and_then(|id| HeaderValue::from_str(&format!("{id}.{attempt}")).ok());
    match retried {
        None => std::borrow::Cow::Borrowed(headers),
        Some(id) => {
            let mut owned = headers.clone();
            owned.insert(HEADER_REQUEST_ID, id);
            std::borrow::Cow::Owned(owned)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_hearth_headers_and_key_never_reach_the_engine() {
        let mut client = HeaderMap::new();
        client.insert("authorization", HeaderValue::from_static("Bearer secret"));
        client.insert("x-hearth-tenant", HeaderValue::from_static("forged/tenant"));
        client.insert("x-hearth-priority", HeaderValue::from_static("1000"));
        client.insert("user-agent", HeaderValue::from_static("openai-python"));
        let out = engine_headers(&client, &[("x-hearth-tenant", "ns/real".into())]);
        assert_eq!(
            out.get("x-hearth-tenant").and_then(|v| v.to_str().ok()),
            Some("ns/real")
        );
        assert!(out.get("x-hearth-priority").is_none());
        assert!(out.get("authorization").is_none());
        assert_eq!(
            out.get("user-agent").and_then(|v| v.to_str().ok()),
            Some("openai-python")
        );
    }
}
