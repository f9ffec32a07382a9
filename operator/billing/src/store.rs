//! The aggregator's store: every usage record once (keyed by request id), running totals per
//! period, tenant and model, and each meter's cursor — all updated in one transaction, so a
//! crash between storing and acknowledging a batch can only cause a re-delivery, which the
//! request-id key turns into a no-op. The embedded implementation uses redb (ACID, fsync on
//! commit) on the operator's volume. Raw records of old periods are compacted away (their
//! totals stay), so the store grows with the retention window, not forever.

use std::collections::BTreeMap;
use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use super::gpu_share::{Totals, tenant_totals};
use super::pricing::period_of;
#[cfg(any(doc, test))]
use hearth_crds::usage::{GPU_TIME, REJECTED};
use hearth_crds::usage::{Sequenced, UsageRecord};

const RECORDS: TableDefinition<&str, &[u8]> = TableDefinition::new("records");
/// Each record's request id under its period (`period\0request_id`), for compaction by period.
const RECORD_PERIODS: TableDefinition<&str, ()> = TableDefinition::new("record_periods");
const TOTALS: TableDefinition<&str, &[u8]> = TableDefinition::new("totals");
const CURSORS: TableDefinition<&str, u64> = TableDefinition::new("cursors");
/// Records waiting to be exported (CloudEvents), keyed by insertion number.
const OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox");

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The embedded database failed.
    #[error("billing store: {0}")]
    Database(#[from] redb::Error),
    /// A stored value could not be decoded.
    #[error("billing store value: {0}")]
    Decode(#[from] serde_json::Error),
    /// An external store (PostgreSQL) failed.
    #[error("billing store: {0}")]
    External(String),
}

macro_rules! from_redb {
    ($($kind:ty),*) => {$(impl From<$kind> for StoreError {
        fn from(error: $kind) -> Self {
            Self::Database(error.into())
        }
    })*};
}
from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// What storing a batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stored {
    /// Records new to the store.
    pub inserted: usize,
    /// Records already stored (re-delivered).
    pub duplicates: usize,
}

/// The storage the aggregator needs; embedded and external implementations pass one suite.
pub trait UsageStore: Send + Sync {
    /// Stores `records` pulled from `meter` and moves its cursor to `cursor`, atomically.
    fn store_batch(&self, meter: &str, records: &[Sequenced], cursor: u64) -> Result<Stored, StoreError>;
    /// The cursor stored for `meter` (0 when new).
    fn cursor(&self, meter: &str) -> Result<u64, StoreError>;
    /// Totals per model for `tenant` in `period`, with its share of each model's GPU time.
    fn totals(&self, tenant: &str, period: &str) -> Result<BTreeMap<String, Totals>, StoreError> {
        Ok(tenant_totals(&self.period_totals(period)?, tenant))
    }
    /// Totals per tenant and model for `period`.
    fn period_totals(&self, period: &str) -> Result<BTreeMap<(String, String), Totals>, StoreError>;
    /// Up to `limit` records waiting for export, oldest first, with their outbox keys.
    fn outbox(&self, limit: usize) -> Result<Vec<(u64, UsageRecord)>, StoreError>;
    /// Removes exported records from the outbox.
    fn remove_from_outbox(&self, keys: &[u64]) -> Result<(), StoreError>;
    /// Deletes the raw records of periods before `period` (`YYYY-MM`), keeping every total
    /// and cursor; returns how many went. A record delivered again after its period was
    /// compacted would count twice, so the retention must outlast any re-delivery (meters
    /// re-deliver only what they hold unacknowledged, minutes at most).
    fn compact_before(&self, period: &str) -> Result<u64, StoreError>;
}

/// Runs a store call on the blocking pool: both stores block (fsync, network round trips), and
/// the PostgreSQL client must not run on an async worker.
pub async fn blocking<T, F>(store: &std::sync::Arc<dyn UsageStore>, call: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce(&dyn UsageStore) -> Result<T, StoreError> + Send + 'static,
{
    let store = store.clone();
    tokio::task::spawn_blocking(move || call(store.as_ref()))
        .await
        .map_err(|e| StoreError::External(format!("store task failed: {e}")))?
}

/// Totals key: period, tenant and model separated by NUL (which none of them contain).
fn totals_key(period: &str, tenant: &str, model: &str) -> String {
    format!("{period}\0{tenant}\0{model}")
}

/// Fills the period index from the records when it is empty and they are not (a store made
/// before the index existed).
fn index_record_periods(transaction: &redb::WriteTransaction) -> Result<(), StoreError> {
    let records = transaction.open_table(RECORDS)?;
    let mut periods = transaction.open_table(RECORD_PERIODS)?;
    if !periods.is_empty()? {
        return Ok(());
    }
    for entry in records.iter()? {
        let (_, bytes) = entry?;
        let record: UsageRecord = serde_json::from_slice(bytes.value())?;
        periods.insert(period_key(&record).as_str(), ())?;
    }
    Ok(())
}

fn period_key(record: &UsageRecord) -> String {
    format!("{}\0{}", period_of(record.finished_at_ms), record.request_id)
}

/// The embedded store.
pub struct EmbeddedStore {
    database: Database,
    export: bool,
}

impl EmbeddedStore {
    /// Opens or creates the store file; with `export`, new records also enter the outbox.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with_export(path, false)
    }

    /// [`EmbeddedStore::open`], choosing whether new records are queued for export.
    pub fn open_with_export(path: &Path, export: bool) -> Result<Self, StoreError> {
        let database = Database::create(path)?;
        let transaction = database.begin_write()?;
        transaction.open_table(RECORDS)?;
        index_record_periods(&transaction)?;
        transaction.open_table(TOTALS)?;
        transaction.open_table(CURSORS)?;
        transaction.open_table(OUTBOX)?;
        transaction.commit()?;
        Ok(Self { database, export })
    }
}

impl UsageStore for EmbeddedStore {
    fn store_batch(&self, meter: &str, records: &[Sequenced], cursor: u64) -> Result<Stored, StoreError> {
        let transaction = self.database.begin_write()?;
        let mut stored = Stored::default();
        {
            let mut by_id = transaction.open_table(RECORDS)?;
            let mut periods = transaction.open_table(RECORD_PERIODS)?;
            let mut totals = transaction.open_table(TOTALS)?;
            let mut cursors = transaction.open_table(CURSORS)?;
            let mut outbox = transaction.open_table(OUTBOX)?;
            let mut next_outbox = outbox.last()?.map_or(0, |(key, _)| key.value() + 1);
            for Sequenced { record, .. } in records {
                if by_id.get(record.request_id.as_str())?.is_some() {
                    stored.duplicates += 1;
                    continue;
                }
                by_id.insert(record.request_id.as_str(), serde_json::to_vec(record)?.as_slice())?;
                periods.insert(period_key(record).as_str(), ())?;
                let key = totals_key(
                    &period_of(record.finished_at_ms),
                    record.billed_tenant(),
                    &record.model,
                );
                let mut total: Totals = match totals.get(key.as_str())? {
                    Some(bytes) => serde_json::from_slice(bytes.value())?,
                    None => Totals::default(),
                };
                total.add(record);
                totals.insert(key.as_str(), serde_json::to_vec(&total)?.as_slice())?;
                if self.export {
                    outbox.insert(next_outbox, serde_json::to_vec(record)?.as_slice())?;
                    next_outbox += 1;
                }
                stored.inserted += 1;
            }
            let previous = cursors.get(meter)?.map(|g| g.value()).unwrap_or(0);
            cursors.insert(meter, previous.max(cursor))?;
        }
        transaction.commit()?;
        Ok(stored)
    }

    fn cursor(&self, meter: &str) -> Result<u64, StoreError> {
        let transaction = self.database.begin_read()?;
        let cursors = transaction.open_table(CURSORS)?;
        Ok(cursors.get(meter)?.map(|g| g.value()).unwrap_or(0))
    }

    fn period_totals(&self, period: &str) -> Result<BTreeMap<(String, String), Totals>, StoreError> {
        let transaction = self.database.begin_read()?;
        let table = transaction.open_table(TOTALS)?;
        let start = format!("{period}\0");
        let end = format!("{period}\u{1}");
        let mut out = BTreeMap::new();
        for entry in table.range(start.as_str()..end.as_str())? {
            let (key, value) = entry?;
            let mut parts = key.value().splitn(3, '\0').skip(1);
            let (Some(tenant), Some(model)) = (parts.next(), parts.next()) else {
                continue;
            };
            out.insert(
                (tenant.to_string(), model.to_string()),
                serde_json::from_slice(value.value())?,
            );
        }
        Ok(out)
    }

    fn outbox(&self, limit: usize) -> Result<Vec<(u64, UsageRecord)>, StoreError> {
        let transaction = self.database.begin_read()?;
        let table = transaction.open_table(OUTBOX)?;
        let mut out = Vec::new();
        for entry in table.iter()?.take(limit) {
            let (key, value) = entry?;
            out.push((key.value(), serde_json::from_slice(value.value())?));
        }
        Ok(out)
    }

    fn remove_from_outbox(&self, keys: &[u64]) -> Result<(), StoreError> {
        let transaction = self.database.begin_write()?;
        {
            let mut table = transaction.open_table(OUTBOX)?;
            for key in keys {
                table.remove(key)?;
            }
        }
        transaction.commit()?;
        Ok(())
    }
    fn compact_before(&self, period: &str) -> Result<u64, StoreError> {
        let transaction = self.database.begin_write()?;
        let mut removed = 0;
        {
            let mut by_id = transaction.open_table(RECORDS)?;
            let mut periods = transaction.open_table(RECORD_PERIODS)?;
            let end = format!("{period}\0");
            for entry in periods.extract_from_if(..end.as_str(), |_, _| true)? {
                let (key, _) = entry?;
                if let Some((_, request_id)) = key.value().split_once('\0') {
                    by_id.remove(request_id)?;
                    removed += 1;
                }
            }
        }
        transaction.commit()?;
        Ok(removed)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A path under the temp dir for a test's embedded store, unique to `name` and this process,
    /// with whatever an earlier run left there removed.
    pub fn fresh_store_path(name: &str) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!("hearth-{name}-{}.redb", std::process::id()));
        let _ = std::fs::remove_file(&path);
        path
    }

    pub fn record(
        id: &str,
        tenant: &str,
        model: &str,
        prompt: u64,
        completion: u64,
        at_ms: u64,
    ) -> Sequenced {
        Sequenced {
            sequence: 0,
            record: UsageRecord {
                request_id: id.into(),
                tenant: tenant.into(),
                tier: "gold".into(),
                model: model.into(),
                prompt_tokens: prompt,
                completion_tokens: completion,
                estimated: false,
                status: 200,
                streamed: false,
                started_at_ms: at_ms,
                finished_at_ms: at_ms,
                gpu_milliseconds: 0,
                rejected: None,
            },
        }
    }

    /// The suite every store implementation must pass.
    pub fn store_suite(store: &dyn UsageStore) {
        const NOV: u64 = 1_795_000_000_000; // 2026-11-18
        const DEC: u64 = 1_796_083_200_000; // 2026-12-01T00:00:00Z
        let batch = vec![
            record("a", "ns/acme", "llama", 100, 10, NOV),
            record("b", "ns/acme", "llama", 200, 20, NOV),
            record("c", "ns/acme", "qwen", 1, 2, NOV),
            record("d", "ns/other", "llama", 5, 5, DEC),
        ];
        assert_eq!(
            store.store_batch("meter-1", &batch, 4).expect("stores"),
            Stored {
                inserted: 4,
                duplicates: 0
            }
        );
        // Re-delivery after a crash between store and ack: nothing counts twice.
        assert_eq!(
            store.store_batch("meter-1", &batch[1..], 4).expect("stores"),
            Stored {
                inserted: 0,
                duplicates: 3
            }
        );
        // The same request seen through another meter is still one request.
        assert_eq!(
            store.store_batch("meter-2", &batch[..1], 1).expect("stores"),
            Stored {
                inserted: 0,
                duplicates: 1
            }
        );
        assert_eq!(store.cursor("meter-1").expect("cursor"), 4);
        assert_eq!(store.cursor("meter-3").expect("cursor"), 0);
        let acme = store.totals("ns/acme", "2026-11").expect("totals");
        assert_eq!(
            acme["llama"],
            Totals {
                requests: 2,
                prompt_tokens: 300,
                completion_tokens: 30,
                estimated_requests: 0,
                gpu_milliseconds: 0
            }
        );
        assert_eq!(acme["qwen"].requests, 1);
        assert!(store.totals("ns/other", "2026-11").expect("totals").is_empty());
        assert_eq!(
            store.totals("ns/other", "2026-12").expect("totals")["llama"].prompt_tokens,
            5
        );
        assert_eq!(store.period_totals("2026-11").expect("totals").len(), 2);
        // A rejected record is kept and counted under `rejected`, never under its tenant.
        let mut refused = record("r", "ns/other", "llama", 7, 0, DEC);
        refused.record.rejected = Some("promptTokens 7 exceed the model's context".into());
        store.store_batch("meter-1", &[refused], 5).expect("stores");
        let december = |tenant: &str| store.totals(tenant, "2026-12").expect("totals")["llama"].prompt_tokens;
        assert_eq!((december("ns/other"), december(REJECTED)), (5, 7));

        // GPU time: two intervals of llama's pod, shared 3:1 between acme (330 tokens) and
        // beta (110 tokens).
        let mut gpu = vec![
            record("gpu/pod-1/1", GPU_TIME, "llama", 0, 0, NOV),
            record("gpu/pod-1/2", GPU_TIME, "llama", 0, 0, NOV),
            record("e", "ns/beta", "llama", 100, 10, NOV),
        ];
        gpu[0].record.gpu_milliseconds = 3_000_000;
        gpu[1].record.gpu_milliseconds = 1_000_000;
        store.store_batch("meter-1", &gpu, 7).expect("stores");
        store
            .store_batch("meter-1", &gpu, 7)
            .expect("re-delivery is a no-op");
        assert_eq!(
            store.period_totals("2026-11").expect("totals")[&(GPU_TIME.to_string(), "llama".to_string())]
                .gpu_milliseconds,
            4_000_000
        );
        assert_eq!(
            store.totals("ns/acme", "2026-11").expect("totals")["llama"].gpu_milliseconds,
            3_000_000
        );
        assert_eq!(
            store.totals("ns/beta", "2026-11").expect("totals")["llama"].gpu_milliseconds,
            1_000_000
        );

        // Compaction drops November's six raw records; its totals and December's records stay.
        let november = store.period_totals("2026-11").expect("totals");
        assert_eq!(store.compact_before("2026-12").expect("compacts"), 6);
        assert_eq!(store.compact_before("2026-12").expect("compacts"), 0);
        assert_eq!(store.period_totals("2026-11").expect("totals"), november);
        assert_eq!(
            store
                .store_batch("meter-1", &batch[3..], 4)
                .expect("stores")
                .duplicates,
            1,
            "December's record is still known"
        );
    }

    #[test]
    fn embedded_store_passes_the_suite_and_survives_reopen() {
        let path = fresh_store_path("billing");
        store_suite(&EmbeddedStore::open(&path).expect("opens"));
        let reopened = EmbeddedStore::open(&path).expect("reopens");
        assert_eq!(reopened.cursor("meter-1").expect("cursor"), 7);
        assert_eq!(
            reopened.totals("ns/acme", "2026-11").expect("totals")["llama"].requests,
            2
        );
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_store_made_before_the_period_index_is_indexed_when_opened() {
        let path = fresh_store_path("billing-unindexed");
        {
            let database = Database::create(&path).expect("creates");
            let transaction = database.begin_write().expect("writes");
            let old = record("old", "ns/acme", "llama", 1, 1, 1_795_000_000_000).record;
            transaction
                .open_table(RECORDS)
                .expect("table")
                .insert("old", serde_json::to_vec(&old).expect("json").as_slice())
                .expect("inserts");
            transaction.commit().expect("commits");
        }
        let store = EmbeddedStore::open(&path).expect("opens");
        assert_eq!(store.compact_before("2026-12").expect("compacts"), 1);
        let _ = std::fs::remove_file(&path);
    }
}
