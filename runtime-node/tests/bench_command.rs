//! `runtime-node bench` on SmolLM2: every figure `make bench` reads is in its JSON line.

mod common;

use std::process::Command;

fn bench_report(extra: &[&str]) -> serde_json::Value {
    let model = common::smollm2_gguf().expect("checked by the caller");
    let output = Command::new(env!("CARGO_BIN_EXE_runtime-node"))
        .args(["bench", "--model"])
        .arg(&model)
        .args([
            "--threads",
            "2",
            "--prompt-tokens",
            "12",
            "--decode-tokens",
            "3",
            "--batch",
            "2",
            "--json",
        ])
        .args(extra)
        .output()
        .expect("runtime-node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let last = stdout.lines().last().expect("a JSON line");
    serde_json::from_str(last).expect("the last line is JSON")
}

fn assert_positive(report: &serde_json::Value, field: &str) {
    let value = report[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} in {report}"));
    assert!(value > 0.0 && value.is_finite(), "{field} = {value}");
}

#[test]
fn bench_reports_prompt_decode_streams_and_the_long_prompt() {
    if common::smollm2_gguf().is_none() {
        return;
    }
    let report = bench_report(&["--long-prompt-tokens", "40"]);
    assert_eq!(report["prompt_tokens"], 12);
    for field in [
        "prefill_tok_s",
        "ttft_s",
        "decode_tok_s",
        "batch_decode_tok_s",
        "long_prefill_tok_s",
    ] {
        assert_positive(&report, field);
    }
    assert_eq!(report["batch"], 2);
    assert_eq!(report["long_prompt_tokens"], 40);

    let without = bench_report(&[]);
    assert!(without["long_prompt_tokens"].is_null() && without["long_prefill_tok_s"].is_null());
}
