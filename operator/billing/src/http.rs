//! The billing API: `GET /billing/invoices/{namespace}/{tenant}?period=YYYY-MM[&format=csv]`.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::json;

use super::invoice::build_invoice;
use super::pricing::{Prices, parse_period, period_of};
use super::store::{UsageStore, blocking};

/// What the invoice endpoint reads.
#[derive(Clone)]
pub struct BillingState {
    /// The usage store.
    pub store: Arc<dyn UsageStore>,
    /// Prices per tenant (`namespace/name`), refreshed by the aggregator from Tenants and Tiers.
    pub prices: Arc<RwLock<BTreeMap<String, Prices>>>,
}

#[derive(Deserialize)]
struct InvoiceQuery {
    period: Option<String>,
    format: Option<String>,
}

fn error(status: StatusCode, message: String) -> Response {
    (
        status,
        axum::Json(json!({"error": {"message": message, "type": "invalid_request_error"}})),
    )
        .into_response()
}

async fn invoice(
    State(state): State<BillingState>,
    Path((namespace, name)): Path<(String, String)>,
    Query(query): Query<InvoiceQuery>,
) -> Response {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let period = query.period.unwrap_or_else(|| period_of(now_ms));
    if let Err(e) = parse_period(&period) {
        return error(StatusCode::BAD_REQUEST, format!("query parameter period: {e}"));
    }
    let tenant = format!("{namespace}/{name}");
    let prices = state.prices.read().ok().and_then(|p| p.get(&tenant).cloned());
    let Some(prices) = prices else {
        return error(
            StatusCode::NOT_FOUND,
            format!("tenant {tenant} is not known to billing"),
        );
    };
    let (tenant_key, period_key) = (tenant.clone(), period.clone());
    let totals = match blocking(&state.store, move |store| store.totals(&tenant_key, &period_key)).await {
        Ok(totals) => totals,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let invoice = build_invoice(&tenant, &period, &prices, &totals);
    match query.format.as_deref() {
        Some("csv") => (
            [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            invoice.to_csv(),
        )
            .into_response(),
        None | Some("json") => axum::Json(invoice).into_response(),
        Some(other) => error(
            StatusCode::BAD_REQUEST,
            format!("query parameter format: {other:?} must be json or csv"),
        ),
    }
}

/// The billing routes.
pub fn app(state: BillingState) -> Router {
    Router::new()
        .route("/billing/invoices/{namespace}/{tenant}", get(invoice))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::EmbeddedStore;
    use crate::store::tests::fresh_store_path;
    use axum::body::Body;
    use hearth_crds::usage::{Sequenced, UsageRecord};
    use tower::ServiceExt;

    #[tokio::test]
    async fn invoices_render_as_json_and_csv_and_bad_periods_are_named() {
        let path = fresh_store_path("invoice-http");
        let store = Arc::new(EmbeddedStore::open(&path).expect("store"));
        let record = UsageRecord {
            request_id: "r1".into(),
            tenant: "ns/acme".into(),
            tier: "gold".into(),
            model: "llama".into(),
            prompt_tokens: 1_000_000,
            completion_tokens: 500_000,
            estimated: false,
            status: 200,
            streamed: true,
            started_at_ms: 1_795_000_000_000,
            finished_at_ms: 1_795_000_000_000,
            gpu_milliseconds: 0,
            rejected: None,
        };
        store
            .store_batch("m", &[Sequenced { sequence: 1, record }], 1)
            .expect("stored");
        let prices = BTreeMap::from([(
            "ns/acme".to_string(),
            Prices::parse("USD", "0.50", "1.50").expect("prices"),
        )]);
        let state = BillingState {
            store,
            prices: Arc::new(RwLock::new(prices)),
        };
        let get = |uri: &str| {
            let app = app(state.clone());
            let request = axum::http::Request::get(uri)
                .body(Body::empty())
                .expect("request");
            async move {
                let response = app.oneshot(request).await.expect("response");
                let status = response.status();
                let body = axum::body::to_bytes(response.into_body(), 1 << 20)
                    .await
                    .expect("body");
                (status, String::from_utf8(body.to_vec()).expect("utf8"))
            }
        };
        let (status, body) = get("/billing/invoices/ns/acme?period=2026-11").await;
        assert_eq!(status, StatusCode::OK);
        let invoice: serde_json::Value = serde_json::from_str(&body).expect("json");
        // 1,000,000 × 0.50 + 500,000 × 1.50 per million = 0.50 + 0.75 = $1.25.
        assert_eq!(invoice["total"], "1.25");
        let (_, csv) = get("/billing/invoices/ns/acme?period=2026-11&format=csv").await;
        assert!(
            csv.contains("ns/acme,2026-11,USD,llama,1,1000000,500000,0.50,1.50,0,0,1.25"),
            "{csv}"
        );
        let (status, body) = get("/billing/invoices/ns/acme?period=2026-13").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.contains("period"), "{body}");
        let (status, _) = get("/billing/invoices/ns/nobody?period=2026-11").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let _ = std::fs::remove_file(&path);
    }
}
