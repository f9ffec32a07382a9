//! The PostgreSQL store, for clusters that want an external system of record
//! (`--billing-postgres-url`). Same semantics as the embedded store: one transaction inserts
//! new records (`ON CONFLICT DO NOTHING` on the request id), bumps their totals, moves the
//! meter's cursor and queues exports.

use std::collections::BTreeMap;
use std::sync::Mutex;

use hearth_crds::usage::{Sequenced, UsageRecord};
use postgres::{Client, NoTls};

use super::gpu_share::Totals;
use super::pricing::period_of;
use super::store::{StoreError, Stored, UsageStore};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS hearth_usage_records (
    request_id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    model TEXT NOT NULL,
    period TEXT NOT NULL,
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS hearth_usage_totals (
    period TEXT NOT NULL,
    tenant TEXT NOT NULL,
    model TEXT NOT NULL,
    requests BIGINT NOT NULL,
    prompt_tokens BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    estimated_requests BIGINT NOT NULL,
    PRIMARY KEY (period, tenant, model)
);
-- Added with GPU-time records; stores created before them gain the column.
ALTER TABLE hearth_usage_totals ADD COLUMN IF NOT EXISTS gpu_milliseconds BIGINT NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS hearth_usage_records_period ON hearth_usage_records (period);
CREATE TABLE IF NOT EXISTS hearth_meter_cursors (meter TEXT PRIMARY KEY, cursor BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS hearth_usage_outbox (key BIGSERIAL PRIMARY KEY, record TEXT NOT NULL);
";

/// A store in PostgreSQL.
pub struct PostgresStore {
    client: Mutex<Client>,
    export: bool,
}

fn database(error: postgres::Error) -> StoreError {
    StoreError::External(error.to_string())
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

impl PostgresStore {
    /// Connects with a libpq-style URL or key/value string and creates the tables.
    pub fn connect(url: &str, export: bool) -> Result<Self, StoreError> {
        let mut client = Client::connect(url, NoTls).map_err(database)?;
        client.batch_execute(SCHEMA).map_err(database)?;
        Ok(Self {
            client: Mutex::new(client),
            export,
        })
    }

    fn client(&self) -> Result<std::sync::MutexGuard<'_, Client>, StoreError> {
        self.client
            .lock()
            .map_err(|_| StoreError::External("store lock poisoned".into()))
    }
}

impl UsageStore for PostgresStore {
    fn store_batch(&self, meter: &str, records: &[Sequenced], cursor: u64) -> Result<Stored, StoreError> {
        let mut client = self.client()?;
        let mut transaction = client.transaction().map_err(database)?;
        let mut stored = Stored::default();
        for Sequenced { record, .. } in records {
            let period = period_of(record.finished_at_ms);
            let json = serde_json::to_string(record)?;
            let inserted = transaction
                .execute(
                    "INSERT INTO hearth_usage_records (request_id, tenant, model, period, record) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (request_id) DO NOTHING",
                    &[&record.request_id, &record.tenant, &record.model, &period, &json],
                )
                .map_err(database)?;
            if inserted == 0 {
                stored.duplicates += 1;
                continue;
            }
            transaction
                .execute(
                    "INSERT INTO hearth_usage_totals
                       (period, tenant, model, requests, prompt_tokens, completion_tokens, estimated_requests, gpu_milliseconds)
                     VALUES ($1, $2, $3, 1, $4, $5, $6, $7)
                     ON CONFLICT (period, tenant, model) DO UPDATE SET
                       requests = hearth_usage_totals.requests + 1,
                       prompt_tokens = hearth_usage_totals.prompt_tokens + EXCLUDED.prompt_tokens,
                       completion_tokens = hearth_usage_totals.completion_tokens + EXCLUDED.completion_tokens,
                       estimated_requests = hearth_usage_totals.estimated_requests + EXCLUDED.estimated_requests,
                       gpu_milliseconds = hearth_usage_totals.gpu_milliseconds + EXCLUDED.gpu_milliseconds",
                    &[
                        &period,
                        &record.billed_tenant(),
                        &record.model,
                        &to_i64(record.prompt_tokens),
                        &to_i64(record.completion_tokens),
                        &i64::from(record.estimated),
                        &to_i64(record.gpu_milliseconds),
                    ],
                )
                .map_err(database)?;
            if self.export {
                transaction
                    .execute("INSERT INTO hearth_usage_outbox (record) VALUES ($1)", &[&json])
                    .map_err(database)?;
            }
            stored.inserted += 1;
        }
        transaction
            .execute(
                "INSERT INTO hearth_meter_cursors VALUES ($1, $2)
                 ON CONFLICT (meter) DO UPDATE SET cursor = GREATEST(hearth_meter_cursors.cursor, EXCLUDED.cursor)",
                &[&meter, &to_i64(cursor)],
            )
            .map_err(database)?;
        transaction.commit().map_err(database)?;
        Ok(stored)
    }

    fn cursor(&self, meter: &str) -> Result<u64, StoreError> {
        let row = self
            .client()?
            .query_opt(
                "SELECT cursor FROM hearth_meter_cursors WHERE meter = $1",
                &[&meter],
            )
            .map_err(database)?;
        Ok(row.map_or(0, |r| to_u64(r.get(0))))
    }

    fn period_totals(&self, period: &str) -> Result<BTreeMap<(String, String), Totals>, StoreError> {
        let rows = self
            .client()?
            .query(
                "SELECT tenant, model, requests, prompt_tokens, completion_tokens, estimated_requests, gpu_milliseconds FROM hearth_usage_totals WHERE period = $1",
                &[&period],
            )
            .map_err(database)?;
        Ok(rows
            .iter()
            .map(|row| {
                let totals = Totals {
                    requests: to_u64(row.get(2)),
                    prompt_tokens: to_u64(row.get(3)),
                    completion_tokens: to_u64(row.get(4)),
                    estimated_requests: to_u64(row.get(5)),
                    gpu_milliseconds: to_u64(row.get(6)),
                };
                ((row.get(0), row.get(1)), totals)
            })
            .collect())
    }

    fn outbox(&self, limit: usize) -> Result<Vec<(u64, UsageRecord)>, StoreError> {
        let rows = self
            .client()?
            .query(
                "SELECT key, record FROM hearth_usage_outbox ORDER BY key LIMIT $1",
                &[&to_i64(limit as u64)],
            )
            .map_err(database)?;
        rows.iter()
            .map(|row| {
                let record: String = row.get(1);
                Ok((to_u64(row.get(0)), serde_json::from_str(&record)?))
            })
            .collect()
    }

    fn remove_from_outbox(&self, keys: &[u64]) -> Result<(), StoreError> {
        let keys: Vec<i64> = keys.iter().map(|k| to_i64(*k)).collect();
        self.client()?
            .execute("DELETE FROM hearth_usage_outbox WHERE key = ANY($1)", &[&keys])
            .map_err(database)?;
        Ok(())
    }

    fn compact_before(&self, period: &str) -> Result<u64, StoreError> {
        self.client()?
            .execute("DELETE FROM hearth_usage_records WHERE period < $1", &[&period])
            .map_err(database)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same suite as the embedded store, against the real PostgreSQL that
    /// `scripts/with-postgres.sh` starts for `make test` (`HEARTH_TEST_POSTGRES_URL`).
    #[test]
    fn postgres_store_passes_the_store_suite() {
        let Ok(url) = std::env::var("HEARTH_TEST_POSTGRES_URL") else {
            assert!(
                std::env::var_os("HEARTH_REQUIRE_POSTGRES").is_none(),
                "HEARTH_REQUIRE_POSTGRES is set but HEARTH_TEST_POSTGRES_URL is not"
            );
            eprintln!("skipped: no PostgreSQL (run through `make test`, which starts one)");
            return;
        };
        let mut admin = Client::connect(&url, NoTls).expect("connects");
        admin
            .batch_execute("DROP TABLE IF EXISTS hearth_usage_records, hearth_usage_totals, hearth_meter_cursors, hearth_usage_outbox")
            .expect("clean slate");
        let store = PostgresStore::connect(&url, true).expect("store");
        crate::store::tests::store_suite(&store);
        assert_eq!(
            store.outbox(100).expect("outbox").len(),
            8,
            "each new record queued for export once, rejected ones included"
        );
        let keys: Vec<u64> = store
            .outbox(2)
            .expect("outbox")
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        store.remove_from_outbox(&keys).expect("removed");
        assert_eq!(store.outbox(100).expect("outbox").len(), 6);
    }
}
