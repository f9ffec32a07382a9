//! Meter overhead, side by side in one run: the same streaming request to a fake engine
//! directly and through the meter (p50/p99 latency to the last byte, requests/s), and the
//! ledger's sustained records/s with fsync on this disk. Run by `make bench`; prints Markdown.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::response::Response;
use axum::routing::post;
use hearth_meter::ledger::{DEFAULT_SEGMENT_BYTES, Ledger};
use hearth_meter::{MeterState, app};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::json;

const SEQUENTIAL: usize = 1500;
const CONCURRENT: usize = 3000;
const CONCURRENCY: usize = 16;

/// A fake engine that streams 16 content chunks and a usage chunk with no delay, so the
/// measurement is the proxy path, not generation.
async fn fake_engine() -> SocketAddr {
    async fn chat() -> Response {
        let mut body = String::new();
        for i in 0..16 {
            body.push_str(&format!(
                "data: {}\n\n",
                json!({"model": "m", "choices": [{"index": 0, "delta": {"content": format!("t{i}")}}]})
            ));
        }
        body.push_str(&format!(
            "data: {}\n\n",
            json!({"model": "m", "choices": [], "usage": {"prompt_tokens": 8, "completion_tokens": 16}})
        ));
        body.push_str("data: [DONE]\n\n");
        Response::builder()
            .header("content-type", "text/event-stream")
            .body(Body::from(body))
            .expect("response")
    }
    serve(Router::new().route("/v1/chat/completions", post(chat))).await
}

async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move { axum::serve(listener, router).await });
    address
}

async fn one(client: &Client<HttpConnector, Body>, address: SocketAddr, id: usize) -> Duration {
    let start = Instant::now();
    let request = http::Request::post(format!("http://{address}/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("x-hearth-request-id", format!("bench-{address}-{id}"))
        .header("x-hearth-tenant", "bench/tenant")
        .body(Body::from(
            r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
        ))
        .expect("request");
    let response = client.request(request).await.expect("response");
    response.into_body().collect().await.expect("body");
    start.elapsed()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

async fn latency(client: &Client<HttpConnector, Body>, address: SocketAddr) -> (Duration, Duration) {
    for i in 0..100 {
        one(client, address, 1_000_000 + i).await;
    }
    let mut samples = Vec::with_capacity(SEQUENTIAL);
    for i in 0..SEQUENTIAL {
        samples.push(one(client, address, i).await);
    }
    samples.sort();
    (percentile(&samples, 0.5), percentile(&samples, 0.99))
}

async fn throughput(client: &Client<HttpConnector, Body>, address: SocketAddr) -> f64 {
    let start = Instant::now();
    let per_task = CONCURRENT / CONCURRENCY;
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|t| {
            let client = client.clone();
            tokio::spawn(async move {
                for i in 0..per_task {
                    one(&client, address, 2_000_000 + t * per_task + i).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    CONCURRENT as f64 / start.elapsed().as_secs_f64()
}

fn micros(duration: Duration) -> String {
    format!("{:.0} µs", duration.as_secs_f64() * 1e6)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = std::env::temp_dir().join(format!("hearth-meter-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let engine = fake_engine().await;
    let ledger = Ledger::open(&dir.join("proxy"), DEFAULT_SEGMENT_BYTES).expect("ledger");
    let meter = serve(app(MeterState::new(&format!("http://{engine}"), ledger))).await;
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client = Client::builder(TokioExecutor::new()).build::<_, Body>(connector);

    let (direct_p50, direct_p99) = latency(&client, engine).await;
    let (meter_p50, meter_p99) = latency(&client, meter).await;
    let direct_rps = throughput(&client, engine).await;
    let meter_rps = throughput(&client, meter).await;

    // Ledger alone: one appender (every record waits for its own fsync) and 64 appenders
    // (group commit shares each fsync).
    let ledger = Ledger::open(&dir.join("ledger"), DEFAULT_SEGMENT_BYTES).expect("ledger");
    let record = |id: String| hearth_crds::usage::UsageRecord {
        request_id: id,
        tenant: "bench/tenant".into(),
        tier: "gold".into(),
        model: "m".into(),
        prompt_tokens: 8,
        completion_tokens: 16,
        estimated: false,
        status: 200,
        streamed: true,
        started_at_ms: 0,
        finished_at_ms: 0,
        gpu_milliseconds: 0,
        rejected: None,
    };
    let start = Instant::now();
    for i in 0..500 {
        ledger
            .append(record(format!("serial-{i}")))
            .await
            .expect("append");
    }
    let serial = 500.0 / start.elapsed().as_secs_f64();
    let start = Instant::now();
    let tasks: Vec<_> = (0..64)
        .map(|t| {
            let ledger = ledger.clone();
            tokio::spawn(async move {
                for i in 0..160 {
                    ledger
                        .append(record(format!("group-{t}-{i}")))
                        .await
                        .expect("append");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    let grouped = 64.0 * 160.0 / start.elapsed().as_secs_f64();

    println!("| streaming request (16 chunks + usage) | direct to engine | through the meter | added |");
    println!("|---|---|---|---|");
    println!(
        "| p50 latency to last byte | {} | {} | {} |",
        micros(direct_p50),
        micros(meter_p50),
        micros(meter_p50.saturating_sub(direct_p50))
    );
    println!(
        "| p99 latency to last byte | {} | {} | {} |",
        micros(direct_p99),
        micros(meter_p99),
        micros(meter_p99.saturating_sub(direct_p99))
    );
    println!(
        "| requests/s, {CONCURRENCY} concurrent | {direct_rps:.0} | {meter_rps:.0} | {:.0}% |",
        (meter_rps / direct_rps - 1.0) * 100.0
    );
    println!();
    println!("| ledger appends (fsync'd before acknowledged) | records/s |");
    println!("|---|---|");
    println!("| 1 appender (one fsync per record) | {serial:.0} |");
    println!("| 64 appenders (group commit) | {grouped:.0} |");
    let _ = std::fs::remove_dir_all(&dir);
}
