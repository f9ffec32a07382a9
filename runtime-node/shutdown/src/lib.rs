//! One shutdown signal for the whole process, the same in every Hearth binary. The SIGTERM/Ctrl-C listener is installed once, at
//! start; every loop and server waits on a clone of [`Shutdown`], which stays fired once fired.
//! A listener created per loop turn instead misses a signal that arrives between turns.

use std::future::Future;

use tokio::sync::watch;

/// A shutdown that fires once and stays fired; clones share it.
#[derive(Debug, Clone)]
pub struct Shutdown {
    fired: watch::Receiver<bool>,
}

impl Shutdown {
    /// Fires on SIGTERM or Ctrl-C. The listeners are installed before this returns, so a signal
    /// that arrives at any later point is seen. Call it once per process, inside the runtime.
    pub fn on_signals() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
                (Ok(mut terminate), Ok(mut interrupt)) => Self::when(async move {
                    tokio::select! {
                        _ = terminate.recv() => {},
                        _ = interrupt.recv() => {},
                    }
                }),
                (Err(error), _) | (_, Err(error)) => {
                    tracing::warn!(%error, "cannot listen for SIGTERM/SIGINT; only a kill stops this process");
                    Self::when(std::future::pending())
                }
            }
        }
        #[cfg(not(unix))]
        {
            Self::when(async {
                if tokio::signal::ctrl_c().await.is_err() {
                    std::future::pending::<()>().await;
                }
            })
        }
    }

    /// Fires when `trigger` completes (tests, or a caller with a reason of its own to stop).
    pub fn when(trigger: impl Future<Output = ()> + Send + 'static) -> Self {
        let (fire, fired) = watch::channel(false);
        tokio::spawn(async move {
            trigger.await;
            let _ = fire.send(true);
            // Keep the sender: receivers then never see a closed channel instead of `true`.
            fire.closed().await;
        });
        Self { fired }
    }

    /// True once the shutdown has fired.
    pub fn is_fired(&self) -> bool {
        *self.fired.borrow()
    }

    /// Resolves when the shutdown fires, at once if it already has.
    pub async fn wait(&self) {
        let mut fired = self.fired.clone();
        if fired.wait_for(|fired| *fired).await.is_err() {
            // The trigger task is gone without firing (the runtime is stopping): never fires.
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_fired_shutdown_stays_fired_for_every_later_waiter() {
        let (fire, fired) = tokio::sync::oneshot::channel::<()>();
        let shutdown = Shutdown::when(async move {
            let _ = fired.await;
        });
        assert!(!shutdown.is_fired());
        fire.send(()).expect("trigger alive");
        tokio::time::timeout(Duration::from_secs(1), shutdown.wait())
            .await
            .expect("fires");
        // A waiter created after the signal still sees it: nothing is lost between loop turns.
        let later = shutdown.clone();
        tokio::time::timeout(Duration::from_millis(100), later.wait())
            .await
            .expect("still fired");
        assert!(later.is_fired());
    }
}
