//! Export of usage records as CloudEvents (HTTP, structured mode) to a configurable sink, in
//! the shape OpenMeter ingests. Delivery is at least once from a transactional outbox; the
//! event `id` is the request id, so a sink that deduplicates by `id` + `source` sees each once.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use chrono::{DateTime, Utc};
use hearth_crds::usage::UsageRecord;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

use super::store::{UsageStore, blocking};

/// Events sent per request to the sink.
const BATCH: usize = 100;
/// Event type of a metered request.
pub const EVENT_TYPE: &str = "dev.hearth.usage.request";
/// CloudEvent type of a serving pod's GPU time over an interval (subject `gpu-time`; billing
/// systems share it out by the model's token usage, as Hearth's invoices do).
pub const GPU_TIME_EVENT_TYPE: &str = "dev.hearth.usage.gpu-time";

/// One record as a CloudEvent (specversion 1.0): `subject` is the tenant, as OpenMeter meters
/// group by subject; token counts and the model are in `data`.
pub fn to_cloudevent(record: &UsageRecord, source: &str) -> Value {
    let time =
        DateTime::<Utc>::from_timestamp_millis(i64::try_from(record.finished_at_ms).unwrap_or(i64::MAX))
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    if record.tenant == hearth_crds::usage::GPU_TIME {
        return json!({
            "specversion": "1.0",
            "id": record.request_id,
            "source": source,
            "type": GPU_TIME_EVENT_TYPE,
            "subject": record.tenant,
            "time": time,
            "datacontenttype": "application/json",
            "data": {
                "model": record.model,
                "gpu_milliseconds": record.gpu_milliseconds,
                "started_at_ms": record.started_at_ms,
                "finished_at_ms": record.finished_at_ms,
            },
        });
    }
    json!({
        "specversion": "1.0",
        "id": record.request_id,
        "source": source,
        "type": EVENT_TYPE,
        "subject": record.tenant,
        "time": time,
        "datacontenttype": "application/json",
        "data": {
            "model": record.model,
            "tier": record.tier,
            "prompt_tokens": record.prompt_tokens,
            "completion_tokens": record.completion_tokens,
            "total_tokens": record.prompt_tokens + record.completion_tokens,
            "estimated": record.estimated,
            "status": record.status,
        },
    })
}

/// Sends the outbox to a sink, one structured-mode event per POST (what OpenMeter's
/// `/api/v1/events` accepts), removing each batch once every event in it was accepted.
#[derive(Clone)]
pub struct Exporter {
    store: Arc<dyn UsageStore>,
    sink: String,
    source: String,
    client: Client<HttpConnector, Body>,
}

impl Exporter {
    /// An exporter from `store` to `sink`, naming events' `source`.
    pub fn new(store: Arc<dyn UsageStore>, sink: &str, source: &str) -> Self {
        Self {
            store,
            sink: sink.to_string(),
            source: source.to_string(),
            client: Client::builder(hyper_util::rt::TokioExecutor::new()).build_http(),
        }
    }

    /// Drains the outbox once; returns how many events were delivered. Stops at the first
    /// failure, leaving the rest for the next pass.
    pub async fn drain(&self) -> Result<usize, String> {
        let mut delivered = 0;
        loop {
            let batch = blocking(&self.store, |store| store.outbox(BATCH))
                .await
                .map_err(|e| e.to_string())?;
            if batch.is_empty() {
                return Ok(delivered);
            }
            let mut done = Vec::with_capacity(batch.len());
            for (key, record) in &batch {
                let event = to_cloudevent(record, &self.source);
                let request = http::Request::post(&self.sink)
                    .header("content-type", "application/cloudevents+json")
                    .body(Body::from(event.to_string()))
                    .map_err(|e| e.to_string())?;
                let accepted = match self.client.request(request).await {
                    Ok(response) => response.status().is_success(),
                    Err(error) => return self.finish(done, delivered, Err(error.to_string())).await,
                };
                if !accepted {
                    let refused = format!("sink refused event {}", record.request_id);
                    return self.finish(done, delivered, Err(refused)).await;
                }
                done.push(*key);
            }
            let removed = done.clone();
            blocking(&self.store, move |store| store.remove_from_outbox(&removed))
                .await
                .map_err(|e| e.to_string())?;
            delivered += done.len();
        }
    }

    /// Removes what was delivered before a failure, then reports the failure.
    async fn finish(
        &self,
        done: Vec<u64>,
        delivered: usize,
        error: Result<usize, String>,
    ) -> Result<usize, String> {
        let count = done.len();
        blocking(&self.store, move |store| store.remove_from_outbox(&done))
            .await
            .map_err(|e| e.to_string())?;
        error.map(|_| delivered + count)
    }

    /// Drains every `interval` until the task is dropped.
    pub async fn run(self, interval: Duration) {
        loop {
            if let Err(error) = self.drain().await {
                tracing::warn!(%error, "CloudEvents export paused; retrying");
            }
            tokio::time::sleep(interval).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use axum::Router;
    use axum::extract::State;
    use axum::http::StatusCode;
    use axum::routing::post;

    use super::*;
    use crate::store::EmbeddedStore;
    use crate::store::tests::{fresh_store_path, record};

    #[tokio::test]
    async fn outbox_is_delivered_as_structured_cloudevents_and_retried_after_a_refusal() {
        #[derive(Clone, Default)]
        struct Sink {
            events: Arc<Mutex<Vec<(String, Value)>>>,
            refuse_next: Arc<Mutex<bool>>,
        }
        async fn receive(
            State(sink): State<Sink>,
            headers: axum::http::HeaderMap,
            body: String,
        ) -> StatusCode {
            if std::mem::take(&mut *sink.refuse_next.lock().expect("lock")) {
                return StatusCode::SERVICE_UNAVAILABLE;
            }
            let content_type = headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            sink.events
                .lock()
                .expect("lock")
                .push((content_type, serde_json::from_str(&body).expect("json")));
            StatusCode::NO_CONTENT
        }
        let sink = Sink::default();
        *sink.refuse_next.lock().expect("lock") = true;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let app = Router::new()
            .route("/api/v1/events", post(receive))
            .with_state(sink.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });

        let path = fresh_store_path("outbox");
        let store: Arc<dyn UsageStore> =
            Arc::new(EmbeddedStore::open_with_export(&path, true).expect("store"));
        let batch = vec![
            record("a", "ns/acme", "llama", 10, 2, 1_795_000_000_000),
            record("b", "ns/acme", "llama", 1, 1, 1_795_000_000_000),
        ];
        store.store_batch("m", &batch, 2).expect("stored");
        store
            .store_batch("m", &batch, 2)
            .expect("duplicates do not re-enter the outbox");
        let exporter = Exporter::new(
            store.clone(),
            &format!("http://{address}/api/v1/events"),
            "hearth/test",
        );

        assert!(exporter.drain().await.is_err(), "a refusal stops the pass");
        assert_eq!(store.outbox(10).expect("outbox").len(), 2, "nothing is lost");
        assert_eq!(exporter.drain().await, Ok(2));
        assert!(store.outbox(10).expect("outbox").is_empty());
        let events = sink.events.lock().expect("lock").clone();
        assert_eq!(events.len(), 2);
        let (content_type, event) = &events[0];
        assert_eq!(content_type, "application/cloudevents+json");
        assert_eq!(event["specversion"], "1.0");
        assert_eq!(event["id"], "a");
        assert_eq!(event["subject"], "ns/acme");
        assert_eq!(event["type"], EVENT_TYPE);
        assert_eq!(event["data"]["total_tokens"], 12);
        assert_eq!(event["time"], "2026-11-18T11:06:40.000Z");
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn gpu_time_records_are_their_own_event_type() {
        let mut gpu = record(
            "gpu/pod-1/1000",
            hearth_crds::usage::GPU_TIME,
            "llama",
            0,
            0,
            61_000,
        )
        .record;
        gpu.started_at_ms = 1_000;
        gpu.gpu_milliseconds = 120_000;
        let event = to_cloudevent(&gpu, "hearth/test");
        assert_eq!(event["type"], GPU_TIME_EVENT_TYPE);
        assert_eq!(event["id"], "gpu/pod-1/1000");
        assert_eq!(event["data"]["gpu_milliseconds"], 120_000);
        assert_eq!(event["data"]["model"], "llama");
        assert!(event["data"].get("total_tokens").is_none());
    }
}
