//! GPU time: for tiers that price by `gpuHour`, the meter records how long its pod held its
//! GPUs, as one ledger record per interval (tenant [`GPU_TIME`], `gpuMilliseconds` = GPUs ×
//! wall milliseconds). Billing shares each model's GPU time out to the tenants that used it.
//! A crash loses at most the interval in progress; a clean stop records it.

use std::time::Duration;

use hearth_crds::usage::{GPU_TIME, UsageRecord};

use super::ledger::{Appended, Ledger};

/// What the clock records and how often.
#[derive(Debug, Clone)]
pub struct GpuClock {
    /// The pod (its name makes the record ids unique across replicas).
    pub pod: String,
    /// Served model name the GPU time is billed to.
    pub model: String,
    /// GPUs the pod holds.
    pub gpus: u32,
    /// Length of one record's interval.
    pub interval: Duration,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl GpuClock {
    /// The record of the GPUs held from `start_ms` to `end_ms`; its id is the pod and the
    /// interval start, so a retried append is a duplicate, not a second charge.
    pub fn record(&self, start_ms: u64, end_ms: u64) -> UsageRecord {
        UsageRecord {
            request_id: format!("gpu/{}/{start_ms}", self.pod),
            tenant: GPU_TIME.to_string(),
            tier: String::new(),
            model: self.model.clone(),
            prompt_tokens: 0,
            completion_tokens: 0,
            estimated: false,
            status: 200,
            streamed: false,
            started_at_ms: start_ms,
            finished_at_ms: end_ms,
            gpu_milliseconds: u64::from(self.gpus) * end_ms.saturating_sub(start_ms),
            rejected: None,
        }
    }

    /// Appends one record per interval until `stop` resolves, then the partial interval.
    pub async fn run(self, ledger: Ledger, stop: impl std::future::Future<Output = ()>) {
        if self.gpus == 0 {
            return;
        }
        let mut start = now_ms();
        let mut ticks = tokio::time::interval(self.interval);
        ticks.tick().await;
        tokio::pin!(stop);
        loop {
            let stopping = tokio::select! {
                _ = ticks.tick() => false,
                _ = &mut stop => true,
            };
            let end = now_ms();
            if end > start {
                match ledger.append(self.record(start, end)).await {
                    Ok(Appended::Durable(_) | Appended::Duplicate) => start = end,
                    // The interval stays open and is recorded, longer, on the next tick.
                    Err(error) => tracing::error!(%error, "GPU time could not be made durable"),
                }
            }
            if stopping {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clock(gpus: u32) -> GpuClock {
        GpuClock {
            pod: "llama-7f9c-abcde".into(),
            model: "llama".into(),
            gpus,
            interval: Duration::from_millis(20),
        }
    }

    #[test]
    fn a_record_is_gpus_times_wall_time() {
        let record = clock(4).record(1_000, 61_000);
        assert_eq!(record.gpu_milliseconds, 240_000);
        assert_eq!(record.tenant, GPU_TIME);
        assert_eq!(record.request_id, "gpu/llama-7f9c-abcde/1000");
        assert_eq!((record.prompt_tokens, record.completion_tokens), (0, 0));
    }

    #[tokio::test]
    async fn intervals_tile_the_run_without_gaps_and_the_stop_records_the_rest() {
        let dir = std::env::temp_dir().join(format!("hearth-gpu-clock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let ledger = Ledger::open(&dir, 1 << 20).expect("ledger");
        let started = now_ms();
        let stop = tokio::time::sleep(Duration::from_millis(110));
        clock(2).run(ledger.clone(), stop).await;
        let ended = now_ms();
        let records = ledger.read_after(0, 100).expect("records");
        assert!(
            records.len() >= 2,
            "one record per tick plus the final one: {records:?}"
        );
        for pair in records.windows(2) {
            assert_eq!(pair[0].record.finished_at_ms, pair[1].record.started_at_ms);
        }
        let held: u64 = records.iter().map(|r| r.record.gpu_milliseconds).sum();
        let first = records[0].record.started_at_ms;
        let last = records[records.len() - 1].record.finished_at_ms;
        assert_eq!(held, 2 * (last - first));
        assert!(first >= started && last <= ended);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn no_gpus_no_records() {
        let dir = std::env::temp_dir().join(format!("hearth-gpu-clock-none-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let ledger = Ledger::open(&dir, 1 << 20).expect("ledger");
        clock(0).run(ledger.clone(), std::future::ready(())).await;
        assert!(ledger.read_after(0, 10).expect("records").is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
