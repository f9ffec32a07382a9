//! The meter process serves only its callers: proxied requests need the gateway's token, usage
//! records billing's, the engine's `/health` stays open for probes, and a meter without tokens
//! refuses to start unless told `--unauthenticated`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};

const GATEWAY_TOKEN: &str = "gateway-token-0123456789";
const USAGE_TOKEN: &str = "usage-token-0123456789";

/// A fake engine counting the completions that reach it.
fn fake_engine(reached: Arc<AtomicUsize>) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    listener.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(async move {
            let app = Router::new()
                .route("/health", get(|| async { "ok" }))
                .route(
                    "/v1/chat/completions",
                    post(move || async move {
                        reached.fetch_add(1, Ordering::SeqCst);
                        axum::Json(serde_json::json!({"id": "x", "object": "chat.completion", "model": "tiny", "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}))
                    }),
                );
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            axum::serve(listener, app).await.expect("engine serves");
        });
    });
    port
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn meter(port: u16, engine: u16, ledger: &std::path::Path, tokens: bool) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_runtime-node"));
    command
        .args(["meter", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--upstream", &format!("http://127.0.0.1:{engine}")])
        .arg("--ledger-dir")
        .arg(ledger)
        .env_remove("HEARTH_METER_PROXY_TOKEN")
        .env_remove("HEARTH_METER_USAGE_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if tokens {
        command
            .env("HEARTH_METER_PROXY_TOKEN", GATEWAY_TOKEN)
            .env("HEARTH_METER_USAGE_TOKEN", USAGE_TOKEN);
    }
    command
}

/// Sends one HTTP/1.1 request and returns the status code.
fn status(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> u16 {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: meter\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str(&format!(
        "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ));
    stream.write_all(request.as_bytes()).expect("send");
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("read");
    text.split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("status line")
}

fn ledger_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("hearth-meter-auth-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_listening(port: u16) {
    for _ in 0..500 {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("meter did not start listening on {port}");
}

#[test]
fn only_the_gateway_and_billing_get_through() {
    let reached = Arc::new(AtomicUsize::new(0));
    let engine = fake_engine(reached.clone());
    let ledger = ledger_dir("tokens");
    let port = free_port();
    let _meter = Running(meter(port, engine, &ledger, true).spawn().expect("meter starts"));
    wait_listening(port);

    let chat = r#"{"model":"tiny","messages":[{"role":"user","content":"hi"}]}"#;
    let forged = [("x-hearth-tenant", "ns/victim"), ("x-hearth-priority", "1000")];
    assert_eq!(status(port, "POST", "/v1/chat/completions", &forged, chat), 401);
    let wrong = [("x-hearth-gateway-token", USAGE_TOKEN)];
    assert_eq!(status(port, "POST", "/v1/chat/completions", &wrong, chat), 401);
    assert_eq!(
        reached.load(Ordering::SeqCst),
        0,
        "a refused request never reaches the engine"
    );
    let gateway = [
        ("x-hearth-gateway-token", GATEWAY_TOKEN),
        ("x-hearth-tenant", "ns/acme"),
    ];
    assert_eq!(status(port, "POST", "/v1/chat/completions", &gateway, chat), 200);
    assert_eq!(reached.load(Ordering::SeqCst), 1);

    assert_eq!(
        status(port, "GET", "/health", &[], ""),
        200,
        "the kubelet's probe needs no token"
    );
    assert_eq!(status(port, "GET", "/usage?after=0", &[], ""), 401);
    let gateway_bearer = format!("Bearer {GATEWAY_TOKEN}");
    assert_eq!(
        status(
            port,
            "GET",
            "/usage?after=0",
            &[("authorization", &gateway_bearer)],
            ""
        ),
        401
    );
    assert_eq!(status(port, "POST", "/usage/ack", &[], r#"{"cursor":1}"#), 401);
    let billing = format!("Bearer {USAGE_TOKEN}");
    assert_eq!(
        status(port, "GET", "/usage?after=0", &[("authorization", &billing)], ""),
        200
    );
    assert_eq!(
        status(
            port,
            "POST",
            "/usage/ack",
            &[("authorization", &billing)],
            r#"{"cursor":1}"#
        ),
        204
    );
}

#[test]
fn a_meter_without_tokens_refuses_to_start_unless_told() {
    let ledger = ledger_dir("open");
    let output = meter(free_port(), 9, &ledger, false)
        .output()
        .expect("meter runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("HEARTH_METER_PROXY_TOKEN") && stderr.contains("--unauthenticated"),
        "{stderr}"
    );

    let port = free_port();
    let _meter = Running(
        meter(port, 9, &ledger, false)
            .arg("--unauthenticated")
            .spawn()
            .expect("meter starts"),
    );
    wait_listening(port);
    assert_eq!(status(port, "GET", "/usage?after=0", &[], ""), 200);
}
