//! The meter binary records the GPU time its pod holds: one record per interval while it
//! runs, and the interval in progress when it is stopped (SIGTERM), with no gap between them.

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

fn usage(port: u16) -> Option<serde_json::Value> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    use std::io::{Read, Write};
    write!(
        stream,
        "GET /usage?after=0 HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let body = text.split_once("\r\n\r\n")?.1;
    serde_json::from_str(body).ok()
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
    assert!(meter.wait().expect("meter exits").success());

    let records = Ledger::open(&dir, 1 << 20)
        .and_then(|ledger| ledger.read_after(0, 1_000))
        .expect("ledger reads");
    assert!(records.len() >= 2, "the stop records the interval in progress");
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
