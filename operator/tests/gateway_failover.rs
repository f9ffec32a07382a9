//! Process-level: the real `hearth-operator gateway` binary on 127.0.0.1 in front of two backend
//! processes (this test binary re-executed as a small server speaking OpenAI's streaming
//! format). One backend is killed mid-test: streams it was serving end with an error event,
//! and no request is lost before its first byte — each is retried on the survivor.

mod gateway_support;

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use gateway_support::*;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

const BACKEND_ENV: &str = "HEARTH_TEST_FAKE_BACKEND";

/// Entry point of the backend child processes; a no-op in a normal test run.
#[tokio::test]
async fn fake_backend_process() {
    let Ok(name) = std::env::var(BACKEND_ENV) else {
        return;
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    println!("LISTENING {}", listener.local_addr().expect("addr").port());
    let (_gate, open) = tokio::sync::watch::channel(true);
    let app = router(
        &name,
        Arc::new(Mutex::new(Vec::new())),
        open,
        Duration::from_millis(40),
    );
    let _ = axum::serve(listener, app).await;
}

/// A child process with its port; killed on drop.
struct Process {
    child: Child,
    port: u16,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_backend(name: &str) -> Process {
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "fake_backend_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(BACKEND_ENV, name)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn backend");
    let stdout = child.stdout.take().expect("stdout");
    let mut port = 0;
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.expect("line");
        // libtest prints "test fake_backend_process ... " without a newline before it.
        if let Some((_, found)) = line.split_once("LISTENING ") {
            port = found.trim().parse().expect("port");
            break;
        }
    }
    assert_ne!(port, 0, "backend {name} did not start");
    Process { child, port }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

type TestClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// Sends one streaming chat request; returns the status and the whole body.
async fn stream_chat(client: &TestClient, port: u16, i: usize) -> (u16, String) {
    let body = serde_json::json!({"model": "m", "stream": true,
        "messages": [{"role": "user", "content": format!("request {i} says hi")}]});
    let request = hyper::Request::post(format!("http://127.0.0.1:{port}/v1/chat/completions"))
        .header("authorization", "Bearer key-acme")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("request");
    let response = client.request(request).await.expect("the gateway answers");
    let status = response.status().as_u16();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    (status, String::from_utf8_lossy(&bytes).to_string())
}

#[tokio::test]
async fn a_killed_backend_loses_no_request_before_its_first_byte() {
    let mut a = spawn_backend("a");
    let b = spawn_backend("b");
    let dir = TempDir::new("failover");
    let config_dir = dir.path().join("config");
    std::fs::create_dir_all(&config_dir).expect("dir");
    write_config(
        &config_dir,
        &[
            tier("gold", 0, 1, "", ""),
            tenant("acme", "gold", "{name: main}", ""),
            model("m", 64, ""),
        ],
    );
    write_key(&dir.path().join("keys"), "acme", "main", "key-acme");
    let port = free_port();
    let metrics_port = free_port();
    let gateway = Command::new(env!("CARGO_BIN_EXE_hearth-operator"))
        .args([
            "--log-format",
            "text",
            "gateway",
            "--source",
            "local",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--metrics-listen",
            &format!("127.0.0.1:{metrics_port}"),
        ])
        .arg("--config")
        .arg(&config_dir)
        .arg("--keys-dir")
        .arg(dir.path().join("keys"))
        .args(["--backend", &format!("m=http://127.0.0.1:{}", a.port)])
        .args(["--backend", &format!("m=http://127.0.0.1:{}", b.port)])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn gateway");
    let gateway = Process { child: gateway, port };
    let client: TestClient = Client::builder(TokioExecutor::new()).build_http();
    let health = format!("http://127.0.0.1:{}/healthz", gateway.port);
    let mut up = false;
    for _ in 0..200 {
        let request = hyper::Request::get(&health)
            .body(Full::new(Bytes::new()))
            .expect("request");
        if client
            .request(request)
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(up, "gateway did not come up");
    // Metrics live on their own port, not the public one.
    let get = |port: u16| {
        hyper::Request::get(format!("http://127.0.0.1:{port}/metrics"))
            .body(Full::new(Bytes::new()))
            .expect("request")
    };
    let public = client
        .request(get(gateway.port))
        .await
        .expect("public port answers");
    assert_eq!(public.status(), 404);
    let metrics = client
        .request(get(metrics_port))
        .await
        .expect("metrics port answers");
    assert_eq!(metrics.status(), 200);

    // Warm-up: both backends serve, streams arrive whole.
    let mut served_by = std::collections::BTreeSet::new();
    for i in 0..8 {
        let (status, body) = stream_chat(&client, gateway.port, i).await;
        assert_eq!(status, 200);
        assert!(body.ends_with("data: [DONE]\n\n"), "{body}");
        assert!(!body.contains("\"usage\""), "usage chunk stripped: {body}");
        for name in ["\"backend\":\"a\"", "\"backend\":\"b\""] {
            if body.contains(name) {
                served_by.insert(name);
            }
        }
    }
    assert_eq!(served_by.len(), 2, "requests spread over both replicas");

    // Streams in flight when `a` dies, and a burst right after: every one gets a 200 head.
    let in_flight: Vec<_> = (100..110)
        .map(|i| {
            let c = client.clone();
            tokio::spawn(async move { stream_chat(&c, port, i).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(60)).await;
    a.child.kill().expect("kill a");
    let _ = a.child.wait();
    let after: Vec<_> = (200..230)
        .map(|i| {
            let c = client.clone();
            tokio::spawn(async move { stream_chat(&c, port, i).await })
        })
        .collect();

    let mut interrupted = 0;
    for task in in_flight {
        let (status, body) = task.await.expect("task");
        assert_eq!(status, 200, "no request fails before its first byte");
        if body.contains("upstream_interrupted") {
            interrupted += 1;
        } else {
            assert!(body.ends_with("data: [DONE]\n\n"), "{body}");
        }
    }
    for task in after {
        let (status, body) = task.await.expect("task");
        assert_eq!(status, 200, "retried on the surviving replica");
        assert!(
            body.contains("\"backend\":\"b\"") && body.ends_with("data: [DONE]\n\n"),
            "{body}"
        );
    }
    eprintln!("streams cut by the kill after their first byte: {interrupted} of 10");
    assert!(interrupted <= 10);
    let metrics_request = hyper::Request::get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .body(Full::new(Bytes::new()))
        .expect("request");
    let metrics = client
        .request(metrics_request)
        .await
        .expect("metrics")
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(
        metrics.contains("hearth_gateway_upstream_failures_total{model=\"m\"}"),
        "{metrics}"
    );
    drop(b);
}
