//! Per-object exponential backoff for failing reconciles, so an object whose write keeps
//! failing is retried at 2 s, 4 s, 8 s … up to 5 minutes instead of every few seconds forever.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// First retry delay after a failure.
pub const INITIAL: Duration = Duration::from_secs(2);
/// Longest retry delay.
pub const MAX: Duration = Duration::from_secs(300);

/// Retry delays by object: doubled on every failure, forgotten on success.
#[derive(Debug, Default)]
pub struct Backoff {
    delays: Mutex<HashMap<String, Duration>>,
}

impl Backoff {
    /// The delay before retrying `key` after one more failure: [`INITIAL`] for the first,
    /// twice the previous one after that, never more than [`MAX`].
    pub fn next_delay(&self, key: &str) -> Duration {
        let mut delays = self
            .delays
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let delay = delays
            .get(key)
            .map_or(INITIAL, |previous| previous.saturating_mul(2).min(MAX));
        delays.insert(key.to_string(), delay);
        delay
    }

    /// Forgets `key`'s failures: its next failure waits [`INITIAL`] again.
    pub fn reset(&self, key: &str) {
        self.delays
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(key);
    }
}

/// The backoff key of an object: controller, namespace and name (names repeat across kinds
/// and namespaces).
pub fn key(controller: &str, meta: &ObjectMeta) -> String {
    format!(
        "{controller}/{}/{}",
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_five_minutes_and_reset_on_success() {
        let backoff = Backoff::default();
        let delays: Vec<u64> = (0..10).map(|_| backoff.next_delay("m/ns/a").as_secs()).collect();
        assert_eq!(delays, [2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(
            backoff.next_delay("m/ns/b"),
            INITIAL,
            "each object backs off on its own"
        );
        backoff.reset("m/ns/a");
        assert_eq!(backoff.next_delay("m/ns/a"), INITIAL);
    }
}
