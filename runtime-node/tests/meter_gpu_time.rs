//! The meter binary records the GPU time its pod holds: one record per interval while it
//! runs, and the interval in progress when it is stopped (SIGTERM), with no gap between them;
//! after SIGTERM it keeps serving `/usage` until billing has acknowledged every record (its
//! ledger goes with the pod), then exits.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hearth_crds::usage::GPU_TIME;
use hearth_meter::ledger::Ledger;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// One HTTP/1.1 exchange with the meter; the response body.
fn exchange(port: u16, request: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.write_all(request.as_bytes()).ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    Some(text.split_once("\r\n\r\n")?.1.to_string())
}

fn usage(port: u16) -> Option<serde_json::Value> {
    let body = exchange(
        port,
        "GET /usage?after=0 HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n",
    )?;
    serde_json::from_str(&body).ok()
}

fn ack(port: u16, cursor: u64) {
    let body = format!("{{\"cursor\":{cursor}}}");
    exchange(
        port,
        &format!(
            "POST /usage/ack HTTP/1.1\r\nHost: m\r\nConnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
    .expect("the ack is answered");
}

#[test]
fn gpu_time_is_recorded_per_interval_and_on_stop() {
    let dir = std::env::temp_dir().join(format!("hearth-meter-gpu-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let port = free_port();
    let mut meter = Command::new(env!("CARGO_BIN_EXE_runtime-node"))
        .args([
            "meter",
            "--unauthenticated",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .args(["--upstream", "http://127.0.0.1:9"])
        .arg("--ledger-dir")
        .arg(&dir)
        .args([
            "--gpus",
            "2",
            "--served-name",
            "llama",
            "--pod-name",
            "llama-0",
            "--gpu-record-seconds",
            "1",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("meter starts");

    // Wait (bounded) for the first interval's record to be served by cursor.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut first = None;
    while Instant::now() < deadline && first.is_none() {
        first = usage(port).and_then(|u| u["records"].as_array().and_then(|r| r.first().cloned()));
        std::thread::sleep(Duration::from_millis(100));
    }
    let first = first.expect("a GPU-time record within 20 s");
    assert_eq!(first["record"]["tenant"], GPU_TIME);
    assert_eq!(first["record"]["model"], "llama");
    let held = first["record"]["gpuMilliseconds"]
        .as_u64()
        .expect("gpuMilliseconds");
    // Two GPUs over a one-second interval (timer jitter allowed).
    assert!((1_800..=2_600).contains(&held), "held {held}");

    let status = Command::new("kill")
        .args(["-TERM", &meter.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    // Stopping, it records the interval in progress and keeps serving it to billing.
    std::thread::sleep(Duration::from_millis(500));
    assert!(meter.try_wait().expect("waits").is_none(), "it waits for billing");
    let pulled = usage(port).expect("usage served after SIGTERM")["records"]
        .as_array()
        .cloned()
        .expect("records");
    let last = pulled.last().expect("records")["sequence"]
        .as_u64()
        .expect("sequence");
    let started = Instant::now();
    ack(port, last);
    assert!(meter.wait().expect("meter exits").success());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "it stops once all is acknowledged"
    );

    let records: Vec<hearth_crds::usage::Sequenced> =
        serde_json::from_value(serde_json::Value::Array(pulled)).expect("records");
    assert!(records.len() >= 2, "the stop records the interval in progress");
    let ledger = Ledger::open(&dir, 1 << 20).expect("ledger opens");
    assert_eq!(ledger.acked_sequence(), last, "billing has everything");
    for pair in records.windows(2) {
        assert_eq!(
            pair[0].record.finished_at_ms, pair[1].record.started_at_ms,
            "no gap, no overlap"
        );
    }
    assert!(
        records
            .iter()
            .all(|r| r.record.request_id.starts_with("gpu/llama-0/"))
    );
    let _ = std::fs::remove_dir_all(&dir);
}
