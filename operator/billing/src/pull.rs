//! Pulling a meter: read its ledger after our stored cursor, store the batch (records and the
//! new cursor in one transaction), and only then acknowledge it, so the meter may drop those
//! segments. A crash anywhere in between re-delivers at worst, which the store deduplicates.

use std::sync::Arc;

use axum::body::Body;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use serde::Deserialize;

use super::discovery::Meter;
use super::sanity::{KnownTenants, RecordChecks, Verdict};
use super::store::{StoreError, Stored, UsageStore, blocking};
use hearth_crds::usage::{Sequenced, UsageRecord};

/// Records asked for per request.
pub const PAGE: usize = 1000;
/// Longest wait for one meter call, so a stalled meter cannot hold billing up.
const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// Largest response read from a meter (a page of records is far smaller).
const MAX_RESPONSE_BYTES: usize = 16 << 20;

/// Pull failures.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The meter could not be reached or answered badly.
    #[error("meter {meter}: {message}")]
    Meter {
        /// Meter id.
        meter: String,
        /// What went wrong.
        message: String,
    },
    /// The store failed; nothing was acknowledged.
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Deserialize)]
struct Page {
    records: Vec<Sequenced>,
    next: u64,
    /// The meter's own acknowledged cursor, when it reports one.
    #[serde(default)]
    acked: Option<u64>,
}

/// Pulls meters over HTTP into a store.
#[derive(Clone)]
pub struct Puller {
    store: Arc<dyn UsageStore>,
    client: Client<HttpConnector, Body>,
}

impl Puller {
    /// A puller writing into `store`.
    pub fn new(store: Arc<dyn UsageStore>) -> Self {
        Self {
            store,
            client: Client::builder(hyper_util::rt::TokioExecutor::new()).build_http(),
        }
    }

    async fn call(&self, meter: &str, request: http::Request<Body>) -> Result<bytes::Bytes, PullError> {
        let failed = |message: String| PullError::Meter {
            meter: meter.to_string(),
            message,
        };
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| e.to_string())?;
            let status = response.status();
            let body = http_body_util::Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| format!("reading the response: {e}"))?
                .to_bytes();
            Ok::<_, String>((status, body))
        };
        let (status, body) = tokio::time::timeout(CALL_TIMEOUT, exchange)
            .await
            .map_err(|_| failed(format!("no answer within {}s", CALL_TIMEOUT.as_secs())))?
            .map_err(failed)?;
        if !status.is_success() {
            return Err(failed(format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&body)
            )));
        }
        Ok(body)
    }

    /// Pulls everything `meter` has after our cursor, judging each record against `tenants`
    /// and the meter's model; `ack` false skips the acknowledgement (the crash window, for
    /// tests). Returns what was stored in total.
    pub async fn pull(&self, meter: &Meter, tenants: &KnownTenants, ack: bool) -> Result<Stored, PullError> {
        let checks = RecordChecks {
            tenants,
            bounds: meter.bounds,
        };
        let calls = MeterCalls {
            puller: self,
            meter,
            bearer: meter.token.as_ref().map(|t| format!("Bearer {t}")),
        };
        let mut total = Stored::default();
        loop {
            let id = meter.id.clone();
            let cursor = blocking(&self.store, move |store| store.cursor(&id)).await?;
            let page = calls.page_after(cursor).await?;
            let count = page.records.len();
            let (records, undecided) = judged(&checks, &meter.id, page.records);
            let next = match (undecided, records.last()) {
                (false, Some(_)) => page.next,
                (true, Some(last)) => last.sequence,
                (_, None) => cursor,
            };
            if !records.is_empty() {
                let id = meter.id.clone();
                let stored =
                    blocking(&self.store, move |store| store.store_batch(&id, &records, next)).await?;
                total.inserted += stored.inserted;
                total.duplicates += stored.duplicates;
            }
            // Also re-send an ack the meter missed (we crashed after storing, before acking).
            let acked_behind = cursor > 0 && page.acked.is_some_and(|acked| acked < cursor);
            if ack && (next > cursor || acked_behind) {
                calls.acknowledge(next).await?;
            }
            if undecided || count < PAGE {
                return Ok(total);
            }
        }
    }
}

/// The calls to one meter, with billing's token.
struct MeterCalls<'a> {
    puller: &'a Puller,
    meter: &'a Meter,
    bearer: Option<String>,
}

impl MeterCalls<'_> {
    fn request(&self, builder: http::request::Builder, body: Body) -> Result<http::Request<Body>, PullError> {
        let builder = match &self.bearer {
            Some(value) => builder.header(http::header::AUTHORIZATION, value),
            None => builder,
        };
        builder.body(body).map_err(|e| self.failed(e.to_string()))
    }

    fn failed(&self, message: String) -> PullError {
        PullError::Meter {
            meter: self.meter.id.clone(),
            message,
        }
    }

    async fn page_after(&self, cursor: u64) -> Result<Page, PullError> {
        let url = format!("{}/usage?after={cursor}&limit={PAGE}", self.meter.url);
        let request = self.request(http::Request::get(url), Body::empty())?;
        serde_json::from_slice(&self.puller.call(&self.meter.id, request).await?)
            .map_err(|e| self.failed(e.to_string()))
    }

    async fn acknowledge(&self, cursor: u64) -> Result<(), PullError> {
        let request = self.request(
            http::Request::post(format!("{}/usage/ack", self.meter.url))
                .header("content-type", "application/json"),
            Body::from(serde_json::json!({"cursor": cursor}).to_string()),
        )?;
        self.puller.call(&self.meter.id, request).await.map(drop)
    }
}

/// The records of `page` billing can judge now, each with its verdict, and whether the page
/// stopped early at one it cannot judge yet; a rejected record is logged by request id and
/// reason.
fn judged(checks: &RecordChecks<'_>, meter: &str, page: Vec<Sequenced>) -> (Vec<Sequenced>, bool) {
    let mut records = Vec::with_capacity(page.len());
    for Sequenced { sequence, record } in page {
        let record = match checks.verdict(&record) {
            Verdict::Undecided => return (records, true),
            Verdict::Billed => UsageRecord {
                rejected: None,
                ..record
            },
            Verdict::Rejected(reason) => {
                tracing::warn!(meter, request_id = %record.request_id, %reason, "usage record rejected; kept unbilled");
                UsageRecord {
                    rejected: Some(reason),
                    ..record
                }
            }
        };
        records.push(Sequenced { sequence, record });
    }
    (records, false)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use axum::Router;
    use axum::extract::{Query, State};
    use axum::routing::{get, post};

    use super::*;
    use crate::store::EmbeddedStore;
    use crate::store::tests::{fresh_store_path, record};

    #[derive(Clone, Default)]
    struct FakeMeter {
        records: Arc<Vec<Sequenced>>,
        acks: Arc<Mutex<Vec<u64>>>,
    }

    #[derive(Deserialize)]
    struct After {
        after: u64,
        limit: usize,
    }

    /// A meter speaking the `/usage` and `/usage/ack` protocol over a fixed ledger.
    async fn serve(meter: FakeMeter) -> String {
        async fn usage(
            State(meter): State<FakeMeter>,
            headers: http::HeaderMap,
            Query(q): Query<After>,
        ) -> Result<axum::Json<serde_json::Value>, http::StatusCode> {
            if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer usage-token") {
                return Err(http::StatusCode::UNAUTHORIZED);
            }
            let records: Vec<&Sequenced> = meter
                .records
                .iter()
                .filter(|r| r.sequence > q.after)
                .take(q.limit)
                .collect();
            let next = records.last().map_or(q.after, |r| r.sequence);
            let acked = meter.acks.lock().expect("lock").last().copied().unwrap_or(0);
            Ok(axum::Json(
                serde_json::json!({"records": records, "next": next, "acked": acked}),
            ))
        }
        async fn ack(State(meter): State<FakeMeter>, axum::Json(body): axum::Json<serde_json::Value>) {
            meter
                .acks
                .lock()
                .expect("lock")
                .push(body["cursor"].as_u64().unwrap_or(0));
        }
        let app = Router::new()
            .route("/usage", get(usage))
            .route("/usage/ack", post(ack))
            .with_state(meter);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{address}")
    }

    #[tokio::test]
    async fn crash_between_store_and_ack_and_duplicate_delivery_count_nothing_twice() {
        let records: Vec<Sequenced> = (1..=2500u64)
            .map(|i| {
                let mut r = record(&format!("req-{i}"), "ns/acme", "llama", 10, 1, 1_795_000_000_000);
                r.sequence = i;
                r
            })
            .collect();
        let meter = FakeMeter {
            records: Arc::new(records),
            ..FakeMeter::default()
        };
        let url = serve(meter.clone()).await;
        let path = fresh_store_path("pull");
        let store: Arc<dyn UsageStore> = Arc::new(EmbeddedStore::open(&path).expect("store"));
        let puller = Puller::new(store.clone());
        let at = |id: &str, token: Option<&str>| Meter {
            id: id.into(),
            url: url.clone(),
            token: token.map(String::from),
            bounds: None,
        };
        let tenants = KnownTenants::listed_now(&[]);
        let tenants = KnownTenants {
            ids: ["ns/acme".to_string()].into(),
            ..tenants
        };
        let error = puller
            .pull(&at("meter-a", None), &tenants, true)
            .await
            .expect_err("no token");
        assert!(error.to_string().contains("401"), "{error}");
        let error = puller
            .pull(&at("meter-a", Some("other")), &tenants, true)
            .await
            .expect_err("wrong token");
        assert!(error.to_string().contains("401"), "{error}");

        // Crash window: stored, never acknowledged.
        let first = puller
            .pull(&at("meter-a", Some("usage-token")), &tenants, false)
            .await
            .expect("pull");
        assert_eq!(
            first,
            Stored {
                inserted: 2500,
                duplicates: 0
            }
        );
        assert!(meter.acks.lock().expect("lock").is_empty());
        // After "restart" the cursor is durable: nothing new, and the missed ack goes out.
        let again = puller
            .pull(&at("meter-a", Some("usage-token")), &tenants, true)
            .await
            .expect("pull");
        assert_eq!(again, Stored::default());
        assert_eq!(*meter.acks.lock().expect("lock"), vec![2500]);
        // The same ledger delivered again under another meter id (a pod renamed, a restored
        // backup): every record is a duplicate.
        let duplicate = puller
            .pull(&at("meter-a-restarted", Some("usage-token")), &tenants, true)
            .await
            .expect("pull");
        assert_eq!(
            duplicate,
            Stored {
                inserted: 0,
                duplicates: 2500
            }
        );
        assert_eq!(*meter.acks.lock().expect("lock"), vec![2500, 1000, 2000, 2500]);
        let totals = store.totals("ns/acme", "2026-11").expect("totals");
        assert_eq!(
            (totals["llama"].requests, totals["llama"].prompt_tokens),
            (2500, 25_000)
        );
        let _ = std::fs::remove_file(&path);
    }

    #[tokio::test]
    async fn records_billing_cannot_bill_are_kept_unbilled_and_a_new_tenant_waits_for_the_next_list() {
        let at_ms = 1_795_000_000_000;
        let mut records = vec![
            record("req-1", "ns/acme", "llama", 10, 1, at_ms),
            record("req-2", "ns/deleted", "llama", 7, 1, at_ms),
            record("req-3", "ns/made-since", "llama", 5, 1, at_ms + 3_600_000),
            record("req-4", "ns/acme", "llama", 10, 1, at_ms + 3_600_000),
        ];
        for (i, r) in records.iter_mut().enumerate() {
            r.sequence = i as u64 + 1;
        }
        let meter = FakeMeter {
            records: Arc::new(records),
            ..FakeMeter::default()
        };
        let url = serve(meter.clone()).await;
        let path = fresh_store_path("pull-sanity");
        let store: Arc<dyn UsageStore> = Arc::new(EmbeddedStore::open(&path).expect("store"));
        let puller = Puller::new(store.clone());
        let meter_a = Meter {
            id: "meter-a".into(),
            url,
            token: Some("usage-token".into()),
            bounds: None,
        };
        let listed = |ids: &[&str], listed_at_ms| KnownTenants {
            ids: ids.iter().map(|id| id.to_string()).collect(),
            listed_at_ms,
        };
        // Listed an hour after req-1 and req-2 finished, before req-3 did.
        let first = puller
            .pull(&meter_a, &listed(&["ns/acme"], at_ms + 3_600_000), true)
            .await
            .expect("pull");
        assert_eq!(
            first.inserted, 2,
            "req-3's tenant may be newer than the list: it waits"
        );
        assert_eq!(*meter.acks.lock().expect("lock"), vec![2]);
        let totals = |tenant: &str| store.totals(tenant, "2026-11").expect("totals");
        assert_eq!(totals("ns/acme")["llama"].prompt_tokens, 10);
        assert_eq!(totals(hearth_crds::usage::REJECTED)["llama"].prompt_tokens, 7);
        assert!(
            totals("ns/deleted").is_empty(),
            "nothing billed to a tenant that does not exist"
        );
        // The next list has the new tenant: the rest is billed.
        let second = puller
            .pull(
                &meter_a,
                &listed(&["ns/acme", "ns/made-since"], at_ms + 7_200_000),
                true,
            )
            .await
            .expect("pull");
        assert_eq!(second.inserted, 2);
        assert_eq!(*meter.acks.lock().expect("lock"), vec![2, 4]);
        assert_eq!(totals("ns/made-since")["llama"].prompt_tokens, 5);
        let _ = std::fs::remove_file(&path);
    }
}
