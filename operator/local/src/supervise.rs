//! Local mode's kubelet: every engine and meter process is watched, and one that exits while
//! local mode runs is started again after a backoff (1 s, doubling to 30 s, back to 1 s once a
//! start has lasted a minute). Its model is marked down from the exit until the new process is
//! ready, so the gateway routes nothing to it meanwhile. A meter reopens its ledger on disk, so
//! usage recorded before a crash is pulled once, after the restart.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hearth_shutdown::Shutdown;
use tokio::time::Instant;

use crate::engines::{Engine, wait_ready};

/// The first wait before a restart.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait before a restart.
const MOST_BACKOFF: Duration = Duration::from_secs(30);
/// A process that ran this long before exiting restarts after [`FIRST_BACKOFF`] again.
const STABLE_AFTER: Duration = Duration::from_secs(60);
/// How long a stopping process may drain before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Served names with a process down, and a version that changes with every mark.
#[derive(Debug, Default)]
pub struct DownModels {
    down: Mutex<BTreeMap<String, usize>>,
    version: AtomicU64,
}

impl DownModels {
    fn mark(&self, served_name: &str, down: bool) {
        let mut counts = self.down.lock().unwrap_or_else(|p| p.into_inner());
        let count = counts.entry(served_name.to_string()).or_default();
        *count = if down { *count + 1 } else { count.saturating_sub(1) };
        if *count == 0 {
            counts.remove(served_name);
        }
        self.version.fetch_add(1, Ordering::Release);
    }

    /// Whether a process of `served_name` is down now.
    pub fn contains(&self, served_name: &str) -> bool {
        let counts = self.down.lock().unwrap_or_else(|p| p.into_inner());
        counts.contains_key(served_name)
    }

    /// Changes whenever a process goes down or comes back.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }
}

/// How to start one process again and tell that it is ready.
pub struct Restart {
    /// What the process is, for messages (`engine of smollm2-135m`).
    pub what: String,
    /// The model it serves.
    pub served_name: String,
    /// Starts it.
    pub start: Box<dyn Fn() -> anyhow::Result<Engine> + Send + Sync>,
    /// Path that answers 200 once it is ready.
    pub ready_path: &'static str,
    /// Longest wait for it to be ready.
    pub ready_timeout: Duration,
}

/// Keeps `process` running until `stop` fires, then stops it (SIGTERM, SIGKILL after a grace
/// period).
pub async fn supervise(
    mut process: Engine,
    restart: Restart,
    down: std::sync::Arc<DownModels>,
    stop: Shutdown,
) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let started = Instant::now();
        let status = tokio::select! {
            () = stop.wait() => return terminate(process).await,
            status = process.child.wait() => status,
        };
        down.mark(&restart.served_name, true);
        if started.elapsed() >= STABLE_AFTER {
            backoff = FIRST_BACKOFF;
        }
        let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
        tracing::warn!(what = %restart.what, %status, retry_in_ms = backoff.as_millis() as u64, "process exited; restarting");
        let Some(fresh) = start_again(&restart, &mut backoff, &stop).await else {
            return;
        };
        process = fresh;
        down.mark(&restart.served_name, false);
        println!("{} restarted", restart.what);
    }
}

/// Starts the process again, waiting `backoff` (doubled after each try) before each try, until
/// one start is ready; `None` when `stop` fires first.
async fn start_again(restart: &Restart, backoff: &mut Duration, stop: &Shutdown) -> Option<Engine> {
    loop {
        tokio::select! {
            () = stop.wait() => return None,
            () = tokio::time::sleep(*backoff) => {}
        }
        *backoff = (*backoff * 2).min(MOST_BACKOFF);
        let mut fresh = match (restart.start)() {
            Ok(fresh) => fresh,
            Err(error) => {
                tracing::warn!(what = %restart.what, %error, "restart failed; trying again");
                continue;
            }
        };
        let ready = tokio::select! {
            () = stop.wait() => return None,
            ready = wait_ready(&mut fresh, restart.ready_path, restart.ready_timeout) => ready,
        };
        match ready {
            Ok(()) => return Some(fresh),
            Err(error) => {
                tracing::warn!(what = %restart.what, %error, "restarted process not ready; trying again")
            }
        }
    }
}

/// SIGTERM (so the process drains), then SIGKILL after [`STOP_GRACE`].
pub async fn terminate(mut process: Engine) {
    if let Some(pid) = process.child.id() {
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status();
    }
    if tokio::time::timeout(STOP_GRACE, process.child.wait())
        .await
        .is_err()
    {
        let _ = process.child.kill().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_is_down_while_any_of_its_processes_is() {
        let down = DownModels::default();
        let before = down.version();
        down.mark("smol", true);
        down.mark("smol", true);
        down.mark("smol", false);
        assert!(down.contains("smol"), "its meter is still down");
        down.mark("smol", false);
        assert!(!down.contains("smol"));
        assert_eq!(down.version(), before + 4);
    }

    #[tokio::test]
    async fn a_process_that_exits_is_started_again_and_stopped_on_shutdown() {
        let started = std::sync::Arc::new(AtomicU64::new(0));
        let counted = started.clone();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        // A "process" that serves `/ready` for a moment and exits, every time it starts.
        let start = move || -> anyhow::Result<Engine> {
            counted.fetch_add(1, Ordering::SeqCst);
            let script = format!(
                "exec timeout 1 python3 -c 'import http.server as h;h.HTTPServer((\"127.0.0.1\",{port}),type(\"R\",(h.BaseHTTPRequestHandler,),{{\"do_GET\":lambda s:(s.send_response(200),s.end_headers())}})).serve_forever()'"
            );
            let child = tokio::process::Command::new("sh")
                .args(["-c", &script])
                .kill_on_drop(true)
                .spawn()?;
            Ok(Engine {
                served_name: "smol".into(),
                port,
                child,
            })
        };
        let first = start().expect("starts");
        let restart = Restart {
            what: "engine of smol".into(),
            served_name: "smol".into(),
            start: Box::new(start),
            ready_path: "/ready",
            ready_timeout: Duration::from_secs(10),
        };
        let down = std::sync::Arc::new(DownModels::default());
        let (fire, fired) = tokio::sync::oneshot::channel::<()>();
        let stop = Shutdown::when(async move {
            let _ = fired.await;
        });
        let supervisor = tokio::spawn(supervise(first, restart, down.clone(), stop));
        let deadline = Instant::now() + Duration::from_secs(20);
        while started.load(Ordering::SeqCst) < 3 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(started.load(Ordering::SeqCst) >= 3, "restarted after each exit");
        let _ = fire.send(());
        tokio::time::timeout(Duration::from_secs(15), supervisor)
            .await
            .expect("stops on shutdown")
            .expect("no panic");
    }
}
