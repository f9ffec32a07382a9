//! The real binary on 127.0.0.1 with SmolLM2, driven by the official `openai` Python client
//! (`scripts/openai_client_check.py`), then stopped with SIGTERM: it must drain and exit 0.

mod common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn python_has_openai() -> bool {
    Command::new("python3")
        .args(["-c", "import openai"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

#[test]
fn openai_python_client_works_and_sigterm_drains() {
    let Some(model) = common::smollm2_gguf() else {
        return;
    };
    if !python_has_openai() {
        eprintln!("SKIPPED: the `openai` Python package is not installed (pip install openai)");
        return;
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let child = Command::new(env!("CARGO_BIN_EXE_runtime-node"))
        .args(["serve", "--model"])
        .arg(&model)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args([
            "--served-name",
            "smollm2",
            "--threads",
            "2",
            "--max-batch-size",
            "4",
        ])
        .args(["--max-context-tokens", "1024", "--device", "cpu"])
        .spawn()
        .expect("runtime-node starts");
    let mut server = Server(child);

    let deadline = Instant::now() + Duration::from_secs(60);
    while !get(port, "/ready").is_some_and(|r| r.starts_with("HTTP/1.1 200")) {
        assert!(Instant::now() < deadline, "server not ready within 60 s");
        assert!(
            server.0.try_wait().expect("poll").is_none(),
            "server exited early"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/openai_client_check.py");
    let output = Command::new("python3")
        .arg(script)
        .arg(format!("http://127.0.0.1:{port}/v1"))
        .arg("smollm2")
        .output()
        .expect("python3 runs");
    eprintln!("{}", String::from_utf8_lossy(&output.stdout));
    assert!(
        output.status.success(),
        "openai client checks failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let metrics = get(port, "/metrics").expect("metrics");
    for name in [
        "hearth_engine_time_to_first_token_seconds_bucket",
        "hearth_engine_time_per_output_token_seconds_bucket",
        "hearth_engine_prompt_tokens_total",
        "hearth_engine_generation_tokens_total",
        "hearth_engine_running_sequences",
        "hearth_engine_waiting_requests",
    ] {
        assert!(metrics.contains(name), "/metrics lacks {name}");
    }

    let status = Command::new("kill")
        .args(["-TERM", &server.0.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(exit) = server.0.try_wait().expect("poll") {
            break exit;
        }
        assert!(Instant::now() < deadline, "no exit within 30 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(exit.success(), "exit status {exit}");
}
