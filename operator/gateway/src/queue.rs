//! The pure ordering core of a model's wait queue, driven with explicit instants so tests are
//! exact. Order: strict `priority` bands (higher first); inside a band, weighted fair queueing
//! across tiers by `weight` (stride scheduling: the backlogged tier with the smallest virtual
//! pass goes next, and serving advances its pass by `1/weight`); inside a tier, round-robin
//! across tenants (one tenant's burst cannot starve its tier-mates); FIFO inside a tenant.
//! Aging: once the oldest request of a lower band has waited the aging bound, that band is
//! served next, so no band starves however busy the ones above it are.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Who a queued request belongs to and how it is ordered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    /// Tenant id.
    pub tenant: Arc<str>,
    /// Tier name.
    pub tier: Arc<str>,
    /// The tier's priority band.
    pub priority: i32,
    /// The tier's weight (at least 1).
    pub weight: u32,
}

#[derive(Debug)]
struct Entry<T> {
    id: u64,
    enqueued: Instant,
    item: T,
}

#[derive(Debug)]
struct TierQueue<T> {
    weight: u32,
    pass: f64,
    /// Backlogged tenants in round-robin order.
    turns: VecDeque<Arc<str>>,
    tenants: HashMap<Arc<str>, VecDeque<Entry<T>>>,
}

impl<T> TierQueue<T> {
    fn is_empty(&self) -> bool {
        self.turns.is_empty()
    }

    fn oldest(&self) -> Option<Instant> {
        self.tenants
            .values()
            .filter_map(|q| q.front().map(|e| e.enqueued))
            .min()
    }

    fn pop(&mut self) -> Option<Entry<T>> {
        let tenant = self.turns.pop_front()?;
        let queue = self.tenants.get_mut(&tenant)?;
        let entry = queue.pop_front();
        if queue.is_empty() {
            self.tenants.remove(&tenant);
        } else {
            self.turns.push_back(tenant);
        }
        entry
    }
}

#[derive(Debug)]
struct Band<T> {
    /// The pass of the tier served last: a tier that becomes backlogged starts here, so idle
    /// time earns no credit.
    virtual_time: f64,
    tiers: BTreeMap<Arc<str>, TierQueue<T>>,
}

impl<T> Band<T> {
    fn oldest(&self) -> Option<Instant> {
        self.tiers.values().filter_map(TierQueue::oldest).min()
    }

    fn pop(&mut self) -> Option<(Arc<str>, Entry<T>)> {
        let (name, tier) = self
            .tiers
            .iter_mut()
            .filter(|(_, t)| !t.is_empty())
            .min_by(|(_, a), (_, b)| a.pass.total_cmp(&b.pass))?;
        let entry = tier.pop()?;
        self.virtual_time = tier.pass;
        tier.pass += 1.0 / f64::from(tier.weight.max(1));
        Some((name.clone(), entry))
    }
}

/// A multi-level fair queue of `T` (the waiting requests' wake-up handles).
#[derive(Debug)]
pub struct FairQueue<T> {
    aging: Duration,
    bands: BTreeMap<Reverse<i32>, Band<T>>,
    /// Where each queued id sits, for removal on cancellation.
    index: HashMap<u64, (i32, Arc<str>, Arc<str>)>,
}

impl<T> FairQueue<T> {
    /// An empty queue with the given aging bound.
    pub fn new(aging: Duration) -> Self {
        Self {
            aging,
            bands: BTreeMap::new(),
            index: HashMap::new(),
        }
    }

    /// Requests waiting.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Queues `item` under `id` (unique per queue).
    pub fn push(&mut self, id: u64, ticket: &Ticket, item: T, now: Instant) {
        let band = self
            .bands
            .entry(Reverse(ticket.priority))
            .or_insert_with(|| Band {
                virtual_time: 0.0,
                tiers: BTreeMap::new(),
            });
        let virtual_time = band.virtual_time;
        let tier = band
            .tiers
            .entry(ticket.tier.clone())
            .or_insert_with(|| TierQueue {
                weight: ticket.weight,
                pass: virtual_time,
                turns: VecDeque::new(),
                tenants: HashMap::new(),
            });
        tier.weight = ticket.weight.max(1);
        if tier.is_empty() {
            tier.pass = tier.pass.max(virtual_time);
        }
        let queue = tier.tenants.entry(ticket.tenant.clone()).or_default();
        if queue.is_empty() {
            tier.turns.push_back(ticket.tenant.clone());
        }
        queue.push_back(Entry {
            id,
            enqueued: now,
            item,
        });
        self.index
            .insert(id, (ticket.priority, ticket.tier.clone(), ticket.tenant.clone()));
    }

    /// The next request to serve at `now`, with how long it waited.
    pub fn pop(&mut self, now: Instant) -> Option<(u64, Duration, T)> {
        let top = self
            .bands
            .iter()
            .find(|(_, b)| b.oldest().is_some())
            .map(|(k, _)| *k)?;
        // Aging: if any request waited past the bound, the band holding the oldest one goes
        // next, so under sustained overload bands are served in arrival order of their aged
        // requests and none starves; otherwise the top band goes.
        let aged = self
            .bands
            .iter()
            .filter_map(|(key, band)| band.oldest().map(|t| (*key, t)))
            .filter(|(_, oldest)| now.saturating_duration_since(*oldest) >= self.aging)
            .min_by_key(|(_, oldest)| *oldest)
            .map(|(key, _)| key);
        let key = aged.unwrap_or(top);
        let (_, entry) = self.bands.get_mut(&key)?.pop()?;
        self.index.remove(&entry.id);
        Some((
            entry.id,
            now.saturating_duration_since(entry.enqueued),
            entry.item,
        ))
    }

    /// Removes a queued request (its client went away); returns it if it was still queued.
    pub fn remove(&mut self, id: u64) -> Option<T> {
        let (priority, tier_name, tenant) = self.index.remove(&id)?;
        let tier = self
            .bands
            .get_mut(&Reverse(priority))?
            .tiers
            .get_mut(&tier_name)?;
        let queue = tier.tenants.get_mut(&tenant)?;
        let position = queue.iter().position(|e| e.id == id)?;
        let entry = queue.remove(position)?;
        if queue.is_empty() {
            tier.tenants.remove(&tenant);
            tier.turns.retain(|t| *t != tenant);
        }
        Some(entry.item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticket(tenant: &str, tier: &str, priority: i32, weight: u32) -> Ticket {
        Ticket {
            tenant: tenant.into(),
            tier: tier.into(),
            priority,
            weight,
        }
    }

    #[test]
    fn weights_three_to_one_share_seventy_five_percent_over_a_thousand() {
        let mut queue = FairQueue::new(Duration::from_secs(3600));
        let now = Instant::now();
        let gold = ticket("a/gold-1", "gold", 0, 3);
        let bronze = ticket("a/bronze-1", "bronze", 0, 1);
        let mut id = 0;
        for _ in 0..1000 {
            for t in [&gold, &bronze] {
                queue.push(id, t, t.tier.clone(), now);
                id += 1;
            }
        }
        let served: Vec<Arc<str>> = (0..1000)
            .filter_map(|_| queue.pop(now).map(|(_, _, tier)| tier))
            .collect();
        let gold_share = served.iter().filter(|t| &***t == "gold").count() as f64 / served.len() as f64;
        assert_eq!(served.len(), 1000);
        assert!((gold_share - 0.75).abs() <= 0.05, "gold share {gold_share}");
    }

    #[test]
    fn tenants_of_one_tier_take_turns() {
        let mut queue = FairQueue::new(Duration::from_secs(3600));
        let now = Instant::now();
        for i in 0..10 {
            queue.push(i, &ticket("burst", "t", 0, 1), "burst", now);
        }
        queue.push(10, &ticket("quiet", "t", 0, 1), "quiet", now);
        let order: Vec<&str> = (0..3)
            .filter_map(|_| queue.pop(now).map(|(_, _, who)| who))
            .collect();
        assert_eq!(order, ["burst", "quiet", "burst"]);
    }

    #[test]
    fn a_lower_band_is_served_once_it_waited_the_aging_bound() {
        let aging = Duration::from_millis(500);
        let mut queue = FairQueue::new(aging);
        let start = Instant::now();
        queue.push(0, &ticket("low", "free", 0, 1), "low", start);
        // The premium band keeps receiving requests, each newer than the waiting free one.
        for i in 1..100 {
            queue.push(
                i,
                &ticket("high", "premium", 10, 1),
                "high",
                start + Duration::from_millis(i),
            );
        }
        let before = queue
            .pop(start + aging - Duration::from_millis(1))
            .map(|(_, _, who)| who);
        assert_eq!(before, Some("high"), "strict priority holds inside the bound");
        let (_, waited, who) = queue.pop(start + aging).expect("queued");
        assert_eq!((who, waited), ("low", aging));
    }

    #[test]
    fn removed_requests_leave_no_trace() {
        let mut queue = FairQueue::new(Duration::from_secs(1));
        let now = Instant::now();
        queue.push(1, &ticket("a", "t", 0, 1), 1, now);
        queue.push(2, &ticket("b", "t", 0, 1), 2, now);
        assert_eq!(queue.remove(1), Some(1));
        assert_eq!(queue.remove(1), None);
        assert_eq!(queue.len(), 1);
        assert_eq!(queue.pop(now).map(|(id, _, _)| id), Some(2));
        assert!(queue.pop(now).is_none() && queue.is_empty());
    }
}
