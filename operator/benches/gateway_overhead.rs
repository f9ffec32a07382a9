//! Gateway overhead, side by side in one run: the same chat request (non-streaming, and
//! streaming 16 chunks + usage) to a fake engine directly and through the real gateway on a real
//! socket (key check, admission with reservation and refund, queue, proxy, relay), at fixed
//! offered loads (open loop) and unthrottled. With HEARTH_TEST_REDIS_URL set (`make bench` runs
//! it under `scripts/with-redis.sh`) a third column uses the Redis limiter. Prints Markdown.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::response::Response;
use axum::routing::post;
use bytes::Bytes;
use hearth_gateway::{ConfigHandle, GatewayOptions, GatewayState, RedisLimiter, RedisLimiterOptions};
use hearth_local::source::LocalSource;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::json;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// Seconds each measured point runs (after a short warm-up).
const POINT: Duration = Duration::from_secs(3);
/// Offered loads, requests per second.
const RATES: [u64; 2] = [500, 2000];
/// Clients in the unthrottled (closed-loop) run.
const CONCURRENCY: usize = 32;
const KEY: &str = "bench-key";

/// A fake engine answering at once with fixed bodies, so what is measured is the gateway.
async fn fake_engine() -> SocketAddr {
    let usage = json!({"prompt_tokens": 8, "completion_tokens": 16, "total_tokens": 24});
    let mut sse = String::new();
    for i in 0..16 {
        let chunk = json!({"id": "c", "object": "chat.completion.chunk", "model": "m",
            "choices": [{"index": 0, "delta": {"content": format!("t{i}")}, "finish_reason": null}]});
        sse.push_str(&format!("data: {chunk}\n\n"));
    }
    let last =
        json!({"id": "c", "object": "chat.completion.chunk", "model": "m", "choices": [], "usage": usage});
    sse.push_str(&format!("data: {last}\n\ndata: [DONE]\n\n"));
    let text: String = (0..16).map(|i| format!("t{i}")).collect();
    let json_body = json!({"id": "c", "object": "chat.completion", "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": usage})
    .to_string();
    let (sse, json_body) = (Bytes::from(sse), Bytes::from(json_body));
    let chat = move |body: Bytes| {
        let streaming = body.windows(13).any(|w| w == b"\"stream\":true");
        let (kind, bytes) = if streaming {
            ("text/event-stream", sse.clone())
        } else {
            ("application/json", json_body.clone())
        };
        async move {
            Response::builder()
                .header("content-type", kind)
                .body(Body::from(bytes))
                .expect("response")
        }
    };
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

/// The real gateway on a real socket in front of `engine`, limiting in memory or in Redis.
async fn gateway(dir: &std::path::Path, engine: SocketAddr, redis: Option<&str>) -> SocketAddr {
    let config_dir = dir.join("config");
    std::fs::create_dir_all(&config_dir).expect("config dir");
    std::fs::create_dir_all(dir.join("keys")).expect("keys dir");
    // Limits high enough never to refuse, so every request still pays for the admission path.
    let documents = [
        "apiVersion: hearth.dev/v1alpha1\nkind: Tier\nmetadata: {name: gold}\nspec:\n  priority: 0\n  weight: 1\n  limits: {requestsPerMinute: 100000000, tokensPerMinute: 100000000000, maxConcurrentRequests: 100000}\n",
        "apiVersion: hearth.dev/v1alpha1\nkind: Tenant\nmetadata: {name: bench, namespace: acme}\nspec:\n  tierRef: gold\n  apiKeys: [{name: main}]\n",
        "apiVersion: hearth.dev/v1alpha1\nkind: InferenceModel\nmetadata: {name: m, namespace: acme}\nspec:\n  servedName: m\n  source: {uri: 'file:///models/m.gguf'}\n  engine: {maxBatchSize: 256}\n",
    ];
    for (index, document) in documents.iter().enumerate() {
        std::fs::write(config_dir.join(format!("{index}.yaml")), document).expect("write yaml");
    }
    std::fs::write(dir.join("keys/acme.bench.main"), format!("{KEY}\n")).expect("write key");
    let source = LocalSource {
        config_dir,
        keys_dir: Some(dir.join("keys")),
        backends: BTreeMap::from([("m".to_string(), vec![format!("http://{engine}")])]),
        statuses: None,
        down: None,
    };
    let handle = ConfigHandle::new(source.load().expect("config loads"));
    let state = match redis {
        None => GatewayState::with_handle(handle, GatewayOptions::default()),
        Some(url) => {
            let options = RedisLimiterOptions {
                key_prefix: format!("hearth-bench:{}", std::process::id()),
                ..RedisLimiterOptions::new(url)
            };
            let limiter = RedisLimiter::new(options).expect("redis limiter");
            limiter.ping().await.expect("redis answers");
            GatewayState::with_limiter(handle, GatewayOptions::default(), Arc::new(limiter))
        }
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(hearth_gateway::serve(listener, state, std::future::pending()));
    address
}

/// One request to the last byte; `None` when it failed.
async fn one(client: &HttpClient, address: SocketAddr, stream: bool) -> Option<Duration> {
    let body = format!(
        r#"{{"model":"m","messages":[{{"role":"user","content":"hi"}}],"max_tokens":16,"stream":{stream}}}"#
    );
    let request = http::Request::post(format!("http://{address}/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {KEY}"))
        .body(Full::new(Bytes::from(body)))
        .ok()?;
    let start = Instant::now();
    let response = client.request(request).await.ok()?;
    let ok = response.status().is_success();
    response.into_body().collect().await.ok()?;
    ok.then(|| start.elapsed())
}

/// Latencies (sorted), failures and achieved requests/s.
struct Point {
    latencies: Vec<Duration>,
    failed: usize,
    achieved: f64,
}

impl Point {
    fn percentile(&self, p: f64) -> Duration {
        let n = self.latencies.len();
        if n == 0 {
            return Duration::ZERO;
        }
        self.latencies[((n as f64 * p) as usize).min(n - 1)]
    }
}

/// Open loop: a request every `1/rate` s for `duration`, each on its own task, so a slow
/// answer never delays the next send.
async fn offered(
    client: &HttpClient,
    address: SocketAddr,
    stream: bool,
    rate: u64,
    duration: Duration,
) -> Point {
    let samples = Arc::new(Mutex::new(Vec::new()));
    let total = (rate as f64 * duration.as_secs_f64()) as u64;
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        tokio::time::sleep_until(start + Duration::from_nanos(i * 1_000_000_000 / rate)).await;
        let (client, samples) = (client.clone(), samples.clone());
        tasks.push(tokio::spawn(async move {
            let latency = one(&client, address, stream).await;
            samples.lock().unwrap_or_else(|p| p.into_inner()).push(latency);
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    collect(&samples, elapsed)
}

/// Closed loop: [`CONCURRENCY`] clients back to back for [`POINT`].
async fn unthrottled(client: &HttpClient, address: SocketAddr, stream: bool) -> Point {
    let samples = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (client, samples) = (client.clone(), samples.clone());
            tokio::spawn(async move {
                while start.elapsed() < POINT {
                    let latency = one(&client, address, stream).await;
                    samples.lock().unwrap_or_else(|p| p.into_inner()).push(latency);
                }
            })
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
    collect(&samples, start.elapsed().as_secs_f64())
}

fn collect(samples: &Mutex<Vec<Option<Duration>>>, elapsed: f64) -> Point {
    let samples = std::mem::take(&mut *samples.lock().unwrap_or_else(|p| p.into_inner()));
    let failed = samples.iter().filter(|s| s.is_none()).count();
    let mut latencies: Vec<Duration> = samples.into_iter().flatten().collect();
    latencies.sort();
    let achieved = latencies.len() as f64 / elapsed;
    Point {
        latencies,
        failed,
        achieved,
    }
}

fn ms(duration: Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1e3)
}

fn added(through: Duration, direct: Duration) -> String {
    let delta = through.as_secs_f64() - direct.as_secs_f64();
    format!("{:+.2} ms", delta * 1e3)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = std::env::temp_dir().join(format!("hearth-gateway-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let engine = fake_engine().await;
    let mut targets = vec![
        ("direct to engine", engine),
        (
            "through the gateway",
            gateway(&dir.join("memory"), engine, None).await,
        ),
    ];
    let redis = std::env::var("HEARTH_TEST_REDIS_URL").ok();
    if let Some(url) = &redis {
        targets.push((
            "gateway, Redis limiter",
            gateway(&dir.join("redis"), engine, Some(url)).await,
        ));
    }
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(256)
        .build(connector);

    for stream in [false, true] {
        let kind = if stream {
            "streaming (16 chunks + usage)"
        } else {
            "non-streaming"
        };
        let mut header = format!("| {kind} |");
        let mut rule = "|---|".to_string();
        for (name, _) in &targets {
            header.push_str(&format!(" {name} |"));
            rule.push_str("---|");
        }
        for (name, _) in targets.iter().skip(1) {
            header.push_str(&format!(" added ({name}) |"));
            rule.push_str("---|");
        }
        println!("{header}\n{rule}");
        for rate in RATES {
            let mut points = Vec::new();
            for (_, address) in &targets {
                // Warm the connection pool and caches at the same rate first.
                offered(&client, *address, stream, rate, Duration::from_millis(500)).await;
                points.push(offered(&client, *address, stream, rate, POINT).await);
            }
            for (label, p) in [("p50", 0.5), ("p99", 0.99)] {
                let mut row = format!("| {label} at {rate} req/s offered |");
                for point in &points {
                    row.push_str(&format!(" {} |", ms(point.percentile(p))));
                }
                for point in points.iter().skip(1) {
                    row.push_str(&format!(
                        " {} |",
                        added(point.percentile(p), points[0].percentile(p))
                    ));
                }
                println!("{row}");
            }
            let mut row = format!("| achieved req/s (failed) at {rate} |");
            for point in &points {
                row.push_str(&format!(" {:.0} ({}) |", point.achieved, point.failed));
            }
            println!("{row}{}", " |".repeat(targets.len() - 1));
        }
        let mut points = Vec::new();
        for (_, address) in &targets {
            points.push(unthrottled(&client, *address, stream).await);
        }
        let mut row = format!("| max req/s, {CONCURRENCY} clients (failed) |");
        for point in &points {
            row.push_str(&format!(" {:.0} ({}) |", point.achieved, point.failed));
        }
        for point in points.iter().skip(1) {
            row.push_str(&format!(
                " {:+.0}% |",
                (point.achieved / points[0].achieved - 1.0) * 100.0
            ));
        }
        println!("{row}\n");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
