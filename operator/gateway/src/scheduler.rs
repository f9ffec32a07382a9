//! A model's admission to its replicas: up to `capacity` requests in flight (replicas × the
//! engine's batch size); beyond that, requests wait in a [`FairQueue`], bounded in length and in
//! time (then shed with 503 + `Retry-After`). A client that goes away leaves the queue at once:
//! dropping its [`Waiting`] removes it, and a [`Permit`] handed to a client already gone is
//! returned by its drop.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::queue::{FairQueue, Ticket};

/// Bounds of a model's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// Requests waiting at most; the next one is shed.
    pub max_queue: usize,
    /// Longest wait before a request is shed.
    pub max_wait: Duration,
    /// Wait after which a lower priority band is served ahead of higher ones.
    pub aging: Duration,
}

impl Default for QueueLimits {
    fn default() -> Self {
        Self {
            max_queue: 1024,
            max_wait: Duration::from_secs(30),
            aging: Duration::from_secs(5),
        }
    }
}

/// Why a request was shed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shed {
    /// The queue was full on arrival.
    QueueFull,
    /// The request waited `max_wait`.
    QueueTimeout,
}

impl Shed {
    /// Bounded label value.
    pub fn label(self) -> &'static str {
        match self {
            Self::QueueFull => "queue_full",
            Self::QueueTimeout => "queue_timeout",
        }
    }
}

#[derive(Debug)]
struct Inner {
    capacity: usize,
    in_flight: usize,
    next_id: u64,
    queue: FairQueue<oneshot::Sender<Permit>>,
}

/// The in-flight slots and wait queue of one served model.
#[derive(Debug)]
pub struct ModelScheduler {
    limits: QueueLimits,
    inner: Mutex<Inner>,
}

/// One in-flight slot; dropping it lets the next queued request in.
#[derive(Debug)]
pub struct Permit {
    scheduler: Arc<ModelScheduler>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut inner = self.scheduler.lock();
        inner.in_flight = inner.in_flight.saturating_sub(1);
        self.scheduler.dispatch(inner);
    }
}

/// A request waiting for a slot; dropping it leaves the queue.
#[derive(Debug)]
pub struct Waiting {
    id: u64,
    enqueued: Instant,
    receiver: oneshot::Receiver<Permit>,
    scheduler: Arc<ModelScheduler>,
}

/// The outcome of asking for a slot.
#[derive(Debug)]
pub enum Slot {
    /// Capacity was free.
    Ready(Permit),
    /// The request is queued.
    Queued(Waiting),
}

impl ModelScheduler {
    /// A scheduler with `capacity` slots.
    pub fn new(capacity: usize, limits: QueueLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            inner: Mutex::new(Inner {
                capacity,
                in_flight: 0,
                next_id: 0,
                queue: FairQueue::new(limits.aging),
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The queue bounds.
    pub fn limits(&self) -> QueueLimits {
        self.limits
    }

    /// `(in flight, queued)` now.
    pub fn load(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.in_flight, inner.queue.len())
    }

    /// Changes the number of slots (replicas came or went) and lets waiting requests in.
    pub fn set_capacity(self: &Arc<Self>, capacity: usize) {
        let mut inner = self.lock();
        inner.capacity = capacity;
        self.dispatch(inner);
    }

    /// Hands free slots to queued requests in queue order; sends happen after the lock is
    /// released, so a permit refused by a departed client can re-enter `dispatch` safely.
    fn dispatch(self: &Arc<Self>, mut inner: MutexGuard<'_, Inner>) {
        let now = Instant::now();
        let mut grants = Vec::new();
        while inner.in_flight < inner.capacity {
            let Some((_, _, sender)) = inner.queue.pop(now) else {
                break;
            };
            inner.in_flight += 1;
            grants.push(sender);
        }
        drop(inner);
        for sender in grants {
            // A failed send drops the permit, which frees the slot again.
            let _ = sender.send(Permit {
                scheduler: self.clone(),
            });
        }
    }

    /// A slot now, or a place in the queue, or [`Shed::QueueFull`].
    pub fn acquire(self: &Arc<Self>, ticket: &Ticket) -> Result<Slot, Shed> {
        let mut inner = self.lock();
        if inner.in_flight < inner.capacity && inner.queue.is_empty() {
            inner.in_flight += 1;
            return Ok(Slot::Ready(Permit {
                scheduler: self.clone(),
            }));
        }
        if inner.queue.len() >= self.limits.max_queue {
            return Err(Shed::QueueFull);
        }
        let id = inner.next_id;
        inner.next_id += 1;
        let (sender, receiver) = oneshot::channel();
        let now = Instant::now();
        inner.queue.push(id, ticket, sender, now);
        Ok(Slot::Queued(Waiting {
            id,
            enqueued: now,
            receiver,
            scheduler: self.clone(),
        }))
    }
}

impl Waiting {
    /// Waits for a slot, at most the queue's `max_wait` from when the request was queued.
    pub async fn wait(mut self) -> Result<Permit, Shed> {
        let deadline = self.enqueued + self.scheduler.limits.max_wait;
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, &mut self.receiver).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) | Err(_) => Err(Shed::QueueTimeout),
        }
    }

    /// The permit if it has been granted already (for driving the scheduler without a runtime).
    pub fn try_take(&mut self) -> Option<Permit> {
        self.receiver.try_recv().ok()
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        // Still queued: leave. Already granted: the permit inside the receiver is dropped
        // right after this and frees the slot.
        self.scheduler.lock().queue.remove(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticket(tier: &str, weight: u32) -> Ticket {
        Ticket {
            tenant: format!("ns/{tier}").into(),
            tier: tier.into(),
            priority: 0,
            weight,
        }
    }

    fn queued(slot: Result<Slot, Shed>) -> Waiting {
        match slot {
            Ok(Slot::Queued(waiting)) => waiting,
            other => panic!("expected to queue, got {other:?}"),
        }
    }

    #[test]
    fn a_cancelled_request_frees_its_place_and_the_slot_goes_to_the_next() {
        let scheduler = ModelScheduler::new(
            1,
            QueueLimits {
                max_queue: 1,
                ..QueueLimits::default()
            },
        );
        let Ok(Slot::Ready(running)) = scheduler.acquire(&ticket("a", 1)) else {
            panic!("free slot")
        };
        let cancelled = queued(scheduler.acquire(&ticket("a", 1)));
        assert_eq!(scheduler.acquire(&ticket("b", 1)).err(), Some(Shed::QueueFull));
        drop(cancelled);
        assert_eq!(scheduler.load(), (1, 0));
        let mut next = queued(scheduler.acquire(&ticket("b", 1)));
        drop(running);
        let permit = next.try_take().expect("granted on release");
        assert_eq!(scheduler.load(), (1, 0));
        drop(permit);
        assert_eq!(scheduler.load(), (0, 0));
    }

    #[test]
    fn a_permit_granted_to_a_departed_client_is_returned() {
        let scheduler = ModelScheduler::new(1, QueueLimits::default());
        let Ok(Slot::Ready(running)) = scheduler.acquire(&ticket("a", 1)) else {
            panic!("free slot")
        };
        let waiting = queued(scheduler.acquire(&ticket("a", 1)));
        drop(running);
        assert_eq!(scheduler.load(), (1, 0), "granted to the waiter");
        drop(waiting);
        assert_eq!(scheduler.load(), (0, 0), "and returned when it left");
    }

    #[test]
    fn served_shares_under_saturation_follow_weights() {
        let scheduler = ModelScheduler::new(
            1,
            QueueLimits {
                max_queue: 4096,
                ..QueueLimits::default()
            },
        );
        let Ok(Slot::Ready(mut running)) = scheduler.acquire(&ticket("x", 1)) else {
            panic!("free slot")
        };
        let mut gold: std::collections::VecDeque<Waiting> = (0..1000)
            .map(|_| queued(scheduler.acquire(&ticket("gold", 3))))
            .collect();
        let mut bronze: std::collections::VecDeque<Waiting> = (0..1000)
            .map(|_| queued(scheduler.acquire(&ticket("bronze", 1))))
            .collect();
        let mut gold_served = 0;
        for _ in 0..1000 {
            drop(running);
            running = if let Some(permit) = gold.front_mut().and_then(Waiting::try_take) {
                gold.pop_front();
                gold_served += 1;
                permit
            } else {
                let permit = bronze
                    .front_mut()
                    .and_then(Waiting::try_take)
                    .expect("one tier was served");
                bronze.pop_front();
                permit
            };
        }
        let share = f64::from(gold_served) / 1000.0;
        assert!((share - 0.75).abs() <= 0.05, "gold share {share}");
    }

    #[tokio::test]
    async fn a_request_waiting_past_the_bound_is_shed() {
        let limits = QueueLimits {
            max_wait: Duration::from_millis(20),
            ..QueueLimits::default()
        };
        let scheduler = ModelScheduler::new(1, limits);
        let Ok(Slot::Ready(_running)) = scheduler.acquire(&ticket("a", 1)) else {
            panic!("free slot")
        };
        let waiting = queued(scheduler.acquire(&ticket("a", 1)));
        assert_eq!(waiting.wait().await.err(), Some(Shed::QueueTimeout));
        assert_eq!(scheduler.load(), (1, 0));
    }
}
