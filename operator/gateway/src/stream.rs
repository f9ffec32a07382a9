//! Relaying an engine's response body to the client as it arrives. SSE is forwarded event by
//! event (no response-level buffering: each complete event goes out with the chunk that
//! completed it); the final usage event is read to settle the tenant's reservation, and dropped
//! when the client did not ask for it. JSON bodies pass through unchanged while a bounded copy is
//! kept to read `usage` at the end. Whatever happens (end, upstream error, client gone), dropping
//! the [`Completion`] settles the reservation and frees the queue slot and the replica.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::BodyExt;
use serde_json::Value;

use super::limiter::Reservation;
use super::metrics::GatewayMetrics;
use super::router::InFlight;
use super::scheduler::Permit;

/// Largest JSON body copied to read its usage; larger bodies keep their whole reservation.
pub const MAX_USAGE_COPY: usize = 8 << 20;

/// Token usage reported by the engine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
}

/// Reads OpenAI's `usage` object from a response or chunk.
pub fn usage_of(value: &Value) -> Option<Usage> {
    let usage = value.get("usage")?.as_object()?;
    let read = |field: &str| usage.get(field).and_then(Value::as_u64).unwrap_or(0);
    Some(Usage {
        prompt_tokens: read("prompt_tokens"),
        completion_tokens: read("completion_tokens"),
    })
}

/// What a response holds on to until it ends.
pub struct Completion {
    /// The tenant's reservation, settled on drop.
    pub reservation: Reservation,
    /// The model's queue slot.
    pub permit: Option<Permit>,
    /// The replica's outstanding-request count.
    pub in_flight: Option<InFlight>,
    /// Metrics.
    pub metrics: GatewayMetrics,
    /// Model label.
    pub model: String,
    /// Tenant label (bounded by the number of Tenants).
    pub tenant: Arc<str>,
    /// When the request arrived.
    pub started: Instant,
    /// Usage seen in the response.
    pub usage: Option<Usage>,
    /// Whether the engine answered 2xx; a failed answer is refunded in full.
    pub succeeded: bool,
}

impl Drop for Completion {
    fn drop(&mut self) {
        match (self.usage, self.succeeded) {
            (Some(usage), _) => {
                self.reservation
                    .settle(usage.prompt_tokens.saturating_add(usage.completion_tokens));
                let tokens = |kind: &str, n: u64| {
                    self.metrics
                        .tenant_tokens
                        .with_label_values(&[&*self.tenant, kind])
                        .inc_by(n);
                };
                tokens("prompt", usage.prompt_tokens);
                tokens("completion", usage.completion_tokens);
            }
            (None, false) => self.reservation.settle(0),
            // Usage unknown (client gone, engine silent): the whole reservation stays charged.
            (None, true) => {}
        }
        self.metrics
            .duration
            .with_label_values(&[&self.model])
            .observe(self.started.elapsed().as_secs_f64());
    }
}

/// How to relay a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Server-sent events; `strip_usage` drops the final usage-only event.
    Sse {
        /// The client did not ask for `stream_options.include_usage`.
        strip_usage: bool,
    },
    /// A single JSON document.
    Json,
}

struct Relay<B> {
    upstream: B,
    mode: Mode,
    pending: Vec<u8>,
    copy: Option<Vec<u8>>,
    completion: Completion,
    done: bool,
}

/// Finds the end of the first complete SSE event (after its blank line).
fn event_end(buffer: &[u8]) -> Option<usize> {
    let lf = buffer.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    let crlf = buffer.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl<B> Relay<B> {
    /// Decides whether an SSE event is forwarded, reading usage on the way.
    fn keep_event(&mut self, event: &[u8], strip_usage: bool) -> bool {
        // Fast path: only events mentioning usage are parsed.
        if !event.windows(7).any(|w| w == b"\"usage\"") {
            return true;
        }
        let text = String::from_utf8_lossy(event);
        for line in text.lines() {
            let Some(data) = line.strip_prefix("data:") else {
                continue;
            };
            let Ok(value) = serde_json::from_str::<Value>(data.trim()) else {
                continue;
            };
            if let Some(usage) = usage_of(&value) {
                self.completion.usage = Some(usage);
                let usage_only = value
                    .get("choices")
                    .and_then(Value::as_array)
                    .is_some_and(Vec::is_empty);
                if strip_usage && usage_only {
                    return false;
                }
            }
        }
        true
    }

    fn process(&mut self, chunk: Bytes) -> Bytes {
        match self.mode {
            Mode::Json => {
                if let Some(copy) = self.copy.as_mut() {
                    if copy.len() + chunk.len() <= MAX_USAGE_COPY {
                        copy.extend_from_slice(&chunk);
                    } else {
                        self.copy = None;
                    }
                }
                chunk
            }
            Mode::Sse { strip_usage } => {
                self.pending.extend_from_slice(&chunk);
                let mut out = Vec::with_capacity(self.pending.len());
                let mut start = 0;
                while let Some(end) = event_end(&self.pending[start..]) {
                    let event = self.pending[start..start + end].to_vec();
                    if self.keep_event(&event, strip_usage) {
                        out.extend_from_slice(&event);
                    }
                    start += end;
                }
                self.pending.drain(..start);
                Bytes::from(out)
            }
        }
    }

    fn finish(&mut self) -> Bytes {
        if let Some(copy) = self.copy.take()
            && let Ok(value) = serde_json::from_slice::<Value>(&copy)
        {
            self.completion.usage = usage_of(&value).or(self.completion.usage);
        }
        Bytes::from(std::mem::take(&mut self.pending))
    }
}

/// The client-facing body for an engine response.
pub fn relay<B>(upstream: B, mode: Mode, completion: Completion) -> Body
where
    B: hyper::body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let relay = Relay {
        upstream: upstream.into_data_stream(),
        mode,
        pending: Vec::new(),
        copy: (mode == Mode::Json).then(Vec::new),
        completion,
        done: false,
    };
    let stream = futures::stream::unfold(relay, |mut relay| async move {
        loop {
            if relay.done {
                return None;
            }
            match relay.upstream.next().await {
                Some(Ok(chunk)) => {
                    let out = relay.process(chunk);
                    if !out.is_empty() {
                        return Some((Ok::<Bytes, std::io::Error>(out), relay));
                    }
                }
                Some(Err(error)) => {
                    relay.done = true;
                    tracing::warn!(error = %error, "engine response broke off after the first byte");
                    return match relay.mode {
                        Mode::Sse { .. } => {
                            let event = serde_json::json!({"error": {
                                "message": "The model's response was interrupted.",
                                "type": "server_error", "param": null, "code": "upstream_interrupted"}});
                            Some((Ok(Bytes::from(format!("data: {event}\n\n"))), relay))
                        }
                        Mode::Json => Some((Err(std::io::Error::other(error.to_string())), relay)),
                    };
                }
                None => {
                    relay.done = true;
                    let rest = relay.finish();
                    if !rest.is_empty() {
                        return Some((Ok(rest), relay));
                    }
                    return None;
                }
            }
        }
    });
    Body::from_stream(stream)
}
