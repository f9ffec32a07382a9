//! Crash safety of the meter's ledger: a load generator streams responses through the real
//! meter process while the test kills it with SIGKILL at random points and restarts it. After
//! the last restart every request whose response the client saw complete is in the ledger
//! exactly once, and no request is there twice.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::response::Response;
use axum::routing::post;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

/// The token the test presents as the gateway.
const GATEWAY_TOKEN: &str = "gateway-token-for-the-crash-test";
/// The token the test presents as billing.
const USAGE_TOKEN: &str = "billing-token-for-the-crash-test";

/// An OpenAI-compatible fake engine: streams five content chunks, a usage chunk and `[DONE]`.
async fn fake_engine() -> SocketAddr {
    async fn chat(body: axum::body::Bytes) -> Response {
        let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let stream = request["stream"].as_bool().unwrap_or(false);
        if !stream {
            let body = json!({"id": "x", "object": "chat.completion", "model": "tiny", "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10}});
            return Response::builder()
                .header("content-type", "application/json")
                .body(Body::from(body.to_string()))
                .expect("response");
        }
        let chunks = futures::stream::unfold(0u32, |i| async move {
            if i > 6 {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(3)).await;
            let line = match i {
                0..=4 => format!(
                    "data: {}\n\n",
                    json!({"model": "tiny", "choices": [{"index": 0, "delta": {"content": format!("t{i}")}}]})
                ),
                5 => format!(
                    "data: {}\n\n",
                    json!({"model": "tiny", "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14}})
                ),
                _ => "data: [DONE]\n\n".to_string(),
            };
            Some((Ok::<_, std::io::Error>(axum::body::Bytes::from(line)), i + 1))
        });
        Response::builder()
            .header("content-type", "text/event-stream")
            .body(Body::from_stream(chunks))
            .expect("response")
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        axum::serve(listener, Router::new().route("/v1/chat/completions", post(chat))).await
    });
    address
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn start_meter(port: u16, upstream: SocketAddr, ledger: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_runtime-node"))
        .args([
            "meter",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--upstream",
            &format!("http://{upstream}"),
        ])
        .arg("--ledger-dir")
        .arg(ledger)
        .args(["--segment-bytes", "4096"])
        .env("HEARTH_METER_PROXY_TOKEN", GATEWAY_TOKEN)
        .env("HEARTH_METER_USAGE_TOKEN", USAGE_TOKEN)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("meter starts")
}

async fn wait_listening(port: u16) {
    for _ in 0..500 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("meter did not start listening on {port}");
}

/// Sends one request; true only when the whole response (ending in `[DONE]`) arrived.
async fn request(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Body>,
    port: u16,
    id: &str,
) -> bool {
    let body = json!({"model": "tiny", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let Ok(request) = http::Request::post(format!("http://127.0.0.1:{port}/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("x-hearth-gateway-token", GATEWAY_TOKEN)
        .header("x-hearth-request-id", id)
        .header("x-hearth-tenant", "ns/acme")
        .header("x-hearth-tier", "gold")
        .body(Body::from(body.to_string()))
    else {
        return false;
    };
    let Ok(Ok(response)) = tokio::time::timeout(Duration::from_secs(5), client.request(request)).await else {
        return false;
    };
    let Ok(Ok(collected)) =
        tokio::time::timeout(Duration::from_secs(5), response.into_body().collect()).await
    else {
        return false;
    };
    String::from_utf8_lossy(&collected.to_bytes())
        .trim_end()
        .ends_with("data: [DONE]")
}

/// A small deterministic xorshift, so kill timings vary without a dependency.
struct XorShift(u64);
impl XorShift {
    fn next(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }
}

fn temp_ledger() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hearth-meter-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_meter_loses_no_completed_request_and_counts_none_twice() {
    let engine = fake_engine().await;
    let ledger = temp_ledger();
    let port = free_port();
    let meter = Arc::new(std::sync::Mutex::new(start_meter(port, engine, &ledger)));
    wait_listening(port).await;

    let done = Arc::new(AtomicBool::new(false));
    let kill_count = Arc::new(AtomicUsize::new(0));
    let killer = {
        let (meter, done, ledger, kill_count) =
            (meter.clone(), done.clone(), ledger.clone(), kill_count.clone());
        tokio::spawn(async move {
            let mut random = XorShift(0x9e37_79b9_7f4a_7c15 ^ u64::from(std::process::id()));
            let mut kills = 0;
            while !done.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(100 + random.next(200))).await;
                if done.load(Ordering::Relaxed) {
                    break;
                }
                {
                    let mut child = meter.lock().expect("lock");
                    let _ = child.kill(); // SIGKILL: no chance to flush anything.
                    let _ = child.wait();
                    *child = start_meter(port, engine, &ledger);
                }
                kills += 1;
                kill_count.store(kills, Ordering::Relaxed);
                wait_listening(port).await;
            }
            kills
        })
    };

    let client = Client::builder(TokioExecutor::new()).build_http::<Body>();
    let mut completed = BTreeSet::new();
    // At least 240 requests, 4 kills and 80 completed requests, whichever takes longest
    // (bounded): how many complete between kills depends on the machine's load.
    let mut ids: Vec<String> = Vec::new();
    while (ids.len() < 240 || kill_count.load(Ordering::Relaxed) < 4 || completed.len() < 80)
        && ids.len() < 4000
    {
        let batch: Vec<String> = (ids.len()..ids.len() + 8)
            .map(|i| format!("req-{i:05}"))
            .collect();
        ids.extend(batch.iter().cloned());
        let results = futures::future::join_all(batch.iter().map(|id| {
            let client = client.clone();
            async move { (id.clone(), request(&client, port, id).await) }
        }))
        .await;
        completed.extend(results.into_iter().filter(|(_, ok)| *ok).map(|(id, _)| id));
    }
    done.store(true, Ordering::Relaxed);
    let kills = killer.await.expect("killer");
    assert!(
        kills >= 4,
        "the test must kill the meter several times (killed {kills})"
    );
    assert!(
        completed.len() >= 80,
        "enough requests completed to mean something ({})",
        completed.len()
    );

    // Final restart, then read the whole ledger through the meter's own API.
    {
        let mut child = meter.lock().expect("lock");
        let _ = child.kill();
        let _ = child.wait();
        *child = start_meter(port, engine, &ledger);
    }
    wait_listening(port).await;
    let response = client
        .request(
            http::Request::get(format!("http://127.0.0.1:{port}/usage?after=0&limit=10000"))
                .header("authorization", format!("Bearer {USAGE_TOKEN}"))
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("usage answers");
    let body: Value = serde_json::from_slice(&response.into_body().collect().await.expect("body").to_bytes())
        .expect("json");
    let mut counts: HashMap<String, usize> = HashMap::new();
    for record in body["records"].as_array().expect("records") {
        *counts
            .entry(record["record"]["requestId"].as_str().expect("id").to_string())
            .or_default() += 1;
        assert_eq!(record["record"]["tenant"], "ns/acme");
        assert_eq!(record["record"]["completionTokens"], 5);
    }
    for id in &completed {
        assert_eq!(
            counts.get(id),
            Some(&1),
            "completed request {id} must be recorded exactly once"
        );
    }
    assert!(counts.values().all(|&n| n == 1), "no request is recorded twice");
    eprintln!(
        "{} requests, {} completed, {} recorded, {kills} kills",
        ids.len(),
        completed.len(),
        counts.len()
    );
    let _ = meter.lock().expect("lock").kill();
    let _ = std::fs::remove_dir_all(&ledger);
}
