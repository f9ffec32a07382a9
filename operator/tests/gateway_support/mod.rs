//! Shared pieces of the gateway tests: a small real backend that speaks OpenAI's JSON and SSE
//! streaming format (with the final usage chunk), config folders written to a temp dir, and
//! request helpers.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Request};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use tokio::sync::watch;

/// Prompt tokens every fake response reports.
pub const FAKE_PROMPT_TOKENS: u64 = 5;
/// The fake completion, one token per piece.
pub const FAKE_PIECES: [&str; 3] = ["Hi", " there", "!"];

/// What the fake backend saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Request headers.
    pub headers: HeaderMap,
    /// Request body.
    pub body: Value,
}

#[derive(Clone)]
struct BackendState {
    name: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    gate: watch::Receiver<bool>,
    piece_delay: Duration,
}

/// A fake engine on 127.0.0.1.
pub struct FakeBackend {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Requests received.
    pub seen: Arc<Mutex<Vec<Seen>>>,
    gate: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeBackend {
    /// Starts a backend that answers at once.
    pub async fn start(name: &str) -> Self {
        Self::start_with(name, true, Duration::ZERO).await
    }

    /// Starts a backend whose answers wait until [`Self::open`] when `open` is false, and that
    /// pauses `piece_delay` between streamed pieces.
    pub async fn start_with(name: &str, open: bool, piece_delay: Duration) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (gate, receiver) = watch::channel(open);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let app = router(name, seen.clone(), receiver, piece_delay);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            addr,
            seen,
            gate,
            task,
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Lets held answers go.
    pub fn open(&self) {
        let _ = self.gate.send(true);
    }

    /// Requests received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }
}

impl Drop for FakeBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The fake engine's routes (also used by the process-level test's child processes).
pub fn router(
    name: &str,
    seen: Arc<Mutex<Vec<Seen>>>,
    gate: watch::Receiver<bool>,
    piece_delay: Duration,
) -> Router {
    let state = BackendState {
        name: name.to_string(),
        seen,
        gate,
        piece_delay,
    };
    Router::new()
        .route("/v1/chat/completions", post(complete))
        .route("/v1/completions", post(complete))
        .with_state(state)
}

async fn complete(
    State(state): State<BackendState>,
    headers: HeaderMap,
    body: axum::Json<Value>,
) -> Response {
    let body = body.0;
    state.seen.lock().expect("lock").push(Seen {
        headers,
        body: body.clone(),
    });
    let mut gate = state.gate.clone();
    let _ = gate.wait_for(|open| *open).await;
    let max_tokens = body.get("max_tokens").and_then(Value::as_u64).unwrap_or(u64::MAX);
    let pieces: Vec<&str> = FAKE_PIECES
        .iter()
        .copied()
        .take(max_tokens.min(3) as usize)
        .collect();
    let usage = json!({"prompt_tokens": FAKE_PROMPT_TOKENS, "completion_tokens": pieces.len(),
        "total_tokens": FAKE_PROMPT_TOKENS + pieces.len() as u64});
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    if !stream {
        let text: String = pieces.concat();
        return axum::Json(json!({
            "id": "cmpl-1", "object": "chat.completion", "model": body["model"], "backend": state.name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": usage,
        }))
        .into_response();
    }
    let include_usage = body["stream_options"]["include_usage"].as_bool().unwrap_or(false);
    let mut events: Vec<String> = pieces
        .iter()
        .map(|p| {
            json!({"id": "cmpl-1", "object": "chat.completion.chunk", "backend": state.name,
            "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": null}]})
            .to_string()
        })
        .collect();
    if include_usage {
        events.push(
            json!({"id": "cmpl-1", "object": "chat.completion.chunk", "choices": [], "usage": usage})
                .to_string(),
        );
    }
    events.push("[DONE]".to_string());
    let delay = state.piece_delay;
    let stream = futures::stream::iter(events).then(move |event| async move {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        Ok::<_, std::io::Error>(format!("data: {event}\n\n"))
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(stream))
        .expect("response")
}

use futures::StreamExt;

/// A temp folder removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A fresh folder.
    pub fn new(tag: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!("hearth-gw-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).expect("temp dir");
        Self(path)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A Tier document.
pub fn tier(name: &str, priority: i32, weight: u32, limits: &str, extra: &str) -> String {
    format!(
        "apiVersion: hearth.dev/v1alpha1\nkind: Tier\nmetadata: {{name: {name}}}\nspec:\n  priority: {priority}\n  weight: {weight}\n  limits: {{{limits}}}\n{extra}"
    )
}

/// A Tenant document in namespace `acme` with the given keys.
pub fn tenant(name: &str, tier: &str, keys: &str, extra: &str) -> String {
    format!(
        "apiVersion: hearth.dev/v1alpha1\nkind: Tenant\nmetadata: {{name: {name}, namespace: acme}}\nspec:\n  tierRef: {tier}\n  apiKeys: [{keys}]\n{extra}"
    )
}

/// An InferenceModel document.
pub fn model(served: &str, batch: u32, tiers: &str) -> String {
    format!(
        "apiVersion: hearth.dev/v1alpha1\nkind: InferenceModel\nmetadata: {{name: {served}, namespace: acme}}\nspec:\n  servedName: {served}\n  source: {{uri: 'file:///models/{served}.gguf'}}\n  engine: {{maxBatchSize: {batch}}}\n  tiers: [{tiers}]\n"
    )
}

/// Writes `documents` as one YAML file per document into `dir`.
pub fn write_config(dir: &Path, documents: &[String]) {
    for (index, document) in documents.iter().enumerate() {
        std::fs::write(dir.join(format!("{index:02}.yaml")), document).expect("write yaml");
    }
}

/// Writes a local-mode key file `<dir>/acme.<tenant>.<key name>`.
pub fn write_key(dir: &Path, tenant: &str, key_name: &str, key: &str) {
    std::fs::create_dir_all(dir).expect("keys dir");
    std::fs::write(dir.join(format!("acme.{tenant}.{key_name}")), format!("{key}\n")).expect("write key");
}

/// A chat request with `key`.
pub fn chat(key: &str, body: Value) -> Request<Body> {
    Request::post("/v1/chat/completions")
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .expect("request")
}

/// A minimal chat body.
pub fn chat_body(model: &str, max_tokens: Option<u64>, stream: bool) -> Value {
    let mut body =
        json!({"model": model, "messages": [{"role": "user", "content": "Say hi"}], "stream": stream});
    if let Some(n) = max_tokens {
        body["max_tokens"] = json!(n);
    }
    body
}

/// Reads a response body as text.
pub async fn text(response: Response) -> String {
    let bytes = axum::body::to_bytes(response.into_body(), 16 << 20)
        .await
        .expect("body");
    String::from_utf8(bytes.to_vec()).expect("utf8")
}

/// A header as a string.
pub fn header<'a>(response: &'a Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Sends 50 concurrent chat requests (`max_tokens: 10`) with `key`, request `i` through
/// `router_for(i)`, to a backend that holds its answers: the 40 refusals must all arrive while
/// the answers are held (so no refund can make room early), then `backend` is opened. Returns
/// (admitted, refused).
pub async fn fifty_concurrent_requests(
    key: &'static str,
    router_for: impl Fn(usize) -> Router,
    backend: &FakeBackend,
) -> (usize, usize) {
    use tower::ServiceExt;
    let (sender, mut results) = tokio::sync::mpsc::unbounded_channel();
    for i in 0..50 {
        let router = router_for(i);
        let sender = sender.clone();
        tokio::spawn(async move {
            let response = router
                .oneshot(chat(key, chat_body("m", Some(10), false)))
                .await
                .expect("response");
            let _ = sender.send(response.status());
        });
    }
    drop(sender);
    let mut statuses = Vec::new();
    while statuses.len() < 40 {
        match tokio::time::timeout(Duration::from_secs(10), results.recv()).await {
            Ok(Some(status)) => statuses.push(status),
            _ => break,
        }
    }
    assert!(
        statuses
            .iter()
            .all(|s| *s == axum::http::StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    backend.open();
    while let Some(status) = results.recv().await {
        statuses.push(status);
    }
    let admitted = statuses
        .iter()
        .filter(|s| **s == axum::http::StatusCode::OK)
        .count();
    (admitted, statuses.len() - admitted)
}
