//! The metering reverse proxy: forwards every request to the engine unchanged and streams the
//! response back unchanged, reading its usage on the way. The last chunk of a metered response
//! is held until its usage record is durable, so a client that saw the whole response is
//! always billed, even if the meter is killed right after.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::BodyExt;
use serde_json::{Value, json};

use super::MeterState;
use super::ledger::Appended;
use super::usage::{UsageTap, estimate_prompt_tokens};
use hearth_crds::constants::HEADER_GATEWAY_TOKEN;
use hearth_crds::usage::{UNATTRIBUTED, UsageRecord};

/// Largest request body the meter forwards (the engine enforces its own, smaller limit).
pub const MAX_REQUEST_BYTES: usize = 16 << 20;

const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Paths whose responses are billed.
fn is_metered(path: &str) -> bool {
    matches!(
        path,
        "/v1/chat/completions" | "/v1/completions" | "/v1/embeddings"
    )
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .filter(|v| !v.is_empty())
}

fn error_response(status: StatusCode, message: &str, kind: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": {"message": message, "type": kind, "param": null, "code": null}})),
    )
        .into_response()
}

/// What the meter knows about a request before the response arrives.
struct Pending {
    request_id: String,
    tenant: String,
    tier: String,
    requested_model: String,
    prompt_estimate: u64,
    started_at_ms: u64,
}

/// Forwards one request to the engine; a completion's response is relayed through
/// [`metered_body`], which records its usage.
pub async fn forward(State(state): State<MeterState>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    if let Err(refused) = state
        .auth
        .check_proxy(&parts.method, parts.uri.path(), &parts.headers)
    {
        return refused.into_response();
    }
    let body = match axum::body::to_bytes(body, MAX_REQUEST_BYTES).await {
        Ok(body) => body,
        Err(_) => {
            return error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("request body exceeds the meter's limit of {MAX_REQUEST_BYTES} bytes"),
                "invalid_request_error",
            );
        }
    };
    let pending = is_metered(parts.uri.path()).then(|| pending_record(&state, &parts.headers, &body));
    let response = match send_upstream(&state, &parts, body).await {
        Ok(response) => response,
        Err(refused) => return refused,
    };
    let (mut parts, upstream_body) = response.into_parts();
    for name in HOP_BY_HOP {
        parts.headers.remove(name);
    }
    let Some(pending) = pending else {
        return Response::from_parts(parts, Body::new(upstream_body));
    };
    if let Ok(value) = HeaderValue::from_str(&pending.request_id) {
        parts.headers.insert(super::HEADER_REQUEST_ID, value);
    }
    let body = metered_body(state, &parts, upstream_body, pending);
    Response::from_parts(parts, body)
}

/// What is known of a metered request before the engine answers: its attribution (from the
/// gateway's headers, else unattributed), the model asked for and a prompt estimate.
fn pending_record(state: &MeterState, headers: &HeaderMap, body: &Bytes) -> Pending {
    let request_json: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    Pending {
        request_id: header_text(headers, super::HEADER_REQUEST_ID).unwrap_or_else(|| state.new_request_id()),
        tenant: header_text(headers, super::HEADER_TENANT).unwrap_or_else(|| UNATTRIBUTED.to_string()),
        tier: header_text(headers, super::HEADER_TIER).unwrap_or_default(),
        requested_model: request_json
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        prompt_estimate: estimate_prompt_tokens(&request_json),
        started_at_ms: now_ms(),
    }
}

/// Sends the request to the engine without its hop-by-hop headers; a request that cannot be
/// sent is answered here (400, or 502 when the engine is unreachable).
async fn send_upstream(
    state: &MeterState,
    parts: &http::request::Parts,
    body: Bytes,
) -> Result<http::Response<hyper::body::Incoming>, Response> {
    let path_and_query = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let Ok(uri) = format!("{}{path_and_query}", state.upstream).parse::<Uri>() else {
        return Err(error_response(
            StatusCode::BAD_REQUEST,
            "request path is not a valid URI",
            "invalid_request_error",
        ));
    };
    let mut upstream_request = http::Request::builder().method(parts.method.clone()).uri(uri);
    for (name, value) in &parts.headers {
        if !HOP_BY_HOP.contains(&name.as_str()) && name != header::HOST && name != HEADER_GATEWAY_TOKEN {
            upstream_request = upstream_request.header(name, value);
        }
    }
    let Ok(upstream_request) = upstream_request.body(Body::from(body)) else {
        return Err(error_response(
            StatusCode::BAD_REQUEST,
            "request headers could not be forwarded",
            "invalid_request_error",
        ));
    };
    state.client.request(upstream_request).await.map_err(|error| {
        state.metrics.upstream_errors.inc();
        tracing::warn!(%error, "engine unreachable");
        error_response(
            StatusCode::BAD_GATEWAY,
            "the engine behind the meter is unreachable",
            "upstream_error",
        )
    })
}

/// The engine's body relayed chunk by chunk while its usage is read; the last chunk is held
/// back until the record is durable, so the client never sees the end of an unrecorded
/// response.
fn metered_body(
    state: MeterState,
    parts: &http::response::Parts,
    upstream_body: hyper::body::Incoming,
    pending: Pending,
) -> Body {
    let streamed = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let metered = MeteredBody {
        state,
        tap: Some(UsageTap::new(streamed)),
        pending: Some(pending),
        status: parts.status.as_u16(),
        streamed,
    };
    let stream = futures::stream::unfold(
        (upstream_body.into_data_stream(), None::<Bytes>, metered),
        |(mut upstream, mut held, mut metered)| async move {
            loop {
                match upstream.next().await {
                    Some(Ok(chunk)) => {
                        metered.feed(&chunk);
                        if let Some(previous) = held.replace(chunk) {
                            return Some((Ok(previous), (upstream, held, metered)));
                        }
                    }
                    Some(Err(error)) => {
                        metered.record().await;
                        return Some((
                            Err(std::io::Error::other(error.to_string())),
                            (upstream, None, metered),
                        ));
                    }
                    None => {
                        // The record is durable before the client sees the response's end.
                        metered.record().await;
                        let last = held.take()?;
                        return Some((Ok(last), (upstream, None, metered)));
                    }
                }
            }
        },
    );
    Body::from_stream(stream)
}

/// The metering state of one response; records on drop if the client went away early.
struct MeteredBody {
    state: MeterState,
    tap: Option<UsageTap>,
    pending: Option<Pending>,
    status: u16,
    streamed: bool,
}

impl MeteredBody {
    fn feed(&mut self, chunk: &[u8]) {
        if let Some(tap) = self.tap.as_mut() {
            tap.feed(chunk);
        }
    }

    fn take_record(&mut self) -> Option<UsageRecord> {
        let pending = self.pending.take()?;
        let usage = self.tap.take()?.finish(pending.prompt_estimate);
        Some(UsageRecord {
            request_id: pending.request_id,
            tenant: pending.tenant,
            tier: pending.tier,
            model: usage.model.unwrap_or(pending.requested_model),
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            estimated: usage.estimated,
            status: self.status,
            streamed: self.streamed,
            started_at_ms: pending.started_at_ms,
            finished_at_ms: now_ms(),
            gpu_milliseconds: 0,
            rejected: None,
        })
    }

    async fn record(&mut self) {
        if let Some(record) = self.take_record() {
            append(&self.state, record).await;
        }
    }
}

impl Drop for MeteredBody {
    fn drop(&mut self) {
        // The client disconnected mid-response: the tokens produced so far are still billed.
        if let Some(record) = self.take_record() {
            let state = self.state.clone();
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move { append(&state, record).await });
            }
        }
    }
}

async fn append(state: &MeterState, record: UsageRecord) {
    match state.ledger.append(record).await {
        Ok(Appended::Durable(_)) => state.metrics.records.with_label_values(&["durable"]).inc(),
        Ok(Appended::Duplicate) => state.metrics.records.with_label_values(&["duplicate"]).inc(),
        Err(error) => {
            state.metrics.records.with_label_values(&[error.category()]).inc();
            tracing::error!(%error, "usage record could not be made durable");
        }
    }
}
