//! The billing API's front on every operator replica. Only the leader opens the billing store,
//! but the billing Service selects every replica: a standby forwards each request to the
//! leader, whose address it reads from the leader-election Lease, so an invoice request never
//! fails because it landed on a standby. Without a live leader the answer is 503 with
//! `Retry-After`. With a token every request needs it as `Authorization: Bearer` (401 otherwise),
//! checked here and again by the leader it is forwarded to.

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use subtle::ConstantTimeEq;
use tower::ServiceExt;

use hearth_kube::leader::LeaseLock;

/// Lease annotation where the leader advertises its billing API's base URL.
pub const BILLING_URL_ANNOTATION: &str = "hearth.dev/billing-url";

/// Where the current leader's billing API is, if there is a live leader.
pub trait LeaderBilling: Send + Sync {
    /// The leader's billing base URL (`http://host:port`).
    fn leader_url(&self) -> BoxFuture<'_, Option<String>>;
}

impl LeaderBilling for LeaseLock {
    fn leader_url(&self) -> BoxFuture<'_, Option<String>> {
        Box::pin(async move {
            match self
                .live_holder_annotation(BILLING_URL_ANNOTATION, tokio::time::Instant::now())
                .await
            {
                Ok(url) => url,
                Err(error) => {
                    tracing::warn!(%error, "reading the leader's billing address failed");
                    None
                }
            }
        })
    }
}

/// The front's state: the local billing API once this replica leads, and how to find the
/// leader until then.
#[derive(Clone)]
pub struct BillingFront {
    local: Arc<OnceLock<Router>>,
    leader: Arc<dyn LeaderBilling>,
    client: Client<HttpConnector, Body>,
    token: Option<Arc<str>>,
}

impl BillingFront {
    /// A front that forwards to the leader found through `leader`.
    pub fn new(leader: Arc<dyn LeaderBilling>) -> Self {
        Self {
            local: Arc::default(),
            leader,
            client: Client::builder(TokioExecutor::new()).build_http(),
            token: None,
        }
    }

    /// The same front, answering only requests that carry `token` as a bearer token.
    pub fn with_token(self, token: &str) -> Self {
        Self {
            token: Some(token.into()),
            ..self
        }
    }

    /// From now on serves `api` (the store-backed billing API) here: this replica leads.
    pub fn serve_locally(&self, api: Router) {
        let _ = self.local.set(api);
    }

    /// The front as a router for every billing path.
    pub fn app(self) -> Router {
        Router::new().fallback(dispatch).with_state(self)
    }
}

fn unavailable(message: &str) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, "5")],
        axum::Json(json!({"error": {"message": message, "type": "service_unavailable", "code": "no_billing_leader"}})),
    )
        .into_response()
}

/// Whether `request` carries `expected` as its bearer token (compared in constant time).
fn authorized(request: &Request, expected: &str) -> bool {
    request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|presented| bool::from(presented.as_bytes().ct_eq(expected.as_bytes())))
}

async fn dispatch(State(front): State<BillingFront>, request: Request) -> Response {
    if let Some(expected) = &front.token
        && !authorized(&request, expected)
    {
        let error = json!({"error": {"message": "invoices need the billing token as a bearer token", "type": "authentication_error", "code": null}});
        return (StatusCode::UNAUTHORIZED, axum::Json(error)).into_response();
    }
    if let Some(api) = front.local.get() {
        return match api.clone().oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
    }
    if request.method() != axum::http::Method::GET {
        return (StatusCode::METHOD_NOT_ALLOWED, "the billing API is read-only").into_response();
    }
    let Some(leader) = front.leader.leader_url().await else {
        return unavailable("no operator replica leads billing right now; retry shortly");
    };
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let mut forwarded = axum::http::Request::get(format!("{}{path}", leader.trim_end_matches('/')));
    if let Some(credential) = request.headers().get(header::AUTHORIZATION) {
        forwarded = forwarded.header(header::AUTHORIZATION, credential);
    }
    let forwarded = forwarded.body(Body::empty()).map_err(|error| error.to_string());
    let response = match forwarded {
        Ok(forwarded) => front.client.request(forwarded).await.map_err(|e| e.to_string()),
        Err(error) => Err(error),
    };
    match response {
        Ok(response) => response.map(Body::new).into_response(),
        Err(error) => {
            tracing::warn!(%error, %leader, "forwarding a billing request to the leader failed");
            unavailable("the billing leader did not answer; retry shortly")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use std::sync::Mutex;

    struct Fixed(Mutex<Option<String>>);

    impl LeaderBilling for Fixed {
        fn leader_url(&self) -> BoxFuture<'_, Option<String>> {
            let url = self.0.lock().ok().and_then(|u| u.clone());
            Box::pin(async move { url })
        }
    }

    async fn get_text(app: Router, uri: &str) -> (StatusCode, String) {
        let response = app
            .oneshot(Request::get(uri).body(Body::empty()).expect("request"))
            .await
            .expect("infallible");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    #[tokio::test]
    async fn a_standby_forwards_to_the_leader_and_serves_itself_once_it_leads() {
        // The leader's billing API on a real socket.
        let leader_api = Router::new().route(
            "/billing/invoices/{ns}/{tenant}",
            get(|uri: axum::http::Uri| async move { format!("leader answered {uri}") }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(async move { axum::serve(listener, leader_api).await });

        let lookup = Arc::new(Fixed(Mutex::new(None)));
        let front = BillingFront::new(lookup.clone());
        let (status, body) = get_text(front.clone().app(), "/billing/invoices/ns/acme").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(body.contains("no_billing_leader"));

        *lookup.0.lock().expect("lock") = Some(format!("http://{address}"));
        let (status, body) = get_text(front.clone().app(), "/billing/invoices/ns/acme?period=2026-11").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "leader answered /billing/invoices/ns/acme?period=2026-11");

        front.serve_locally(
            Router::new().route("/billing/invoices/{ns}/{tenant}", get(|| async { "served here" })),
        );
        let (_, body) = get_text(front.app(), "/billing/invoices/ns/acme").await;
        assert_eq!(body, "served here");
    }

    #[tokio::test]
    async fn with_a_token_invoices_need_it_and_the_leader_gets_it_forwarded() {
        let leader_api = Router::new().route(
            "/billing/invoices/{ns}/{tenant}",
            get(|headers: axum::http::HeaderMap| async move {
                format!("{:?}", headers.get(header::AUTHORIZATION))
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(async move { axum::serve(listener, leader_api).await });
        let front = BillingFront::new(Arc::new(Fixed(Mutex::new(Some(format!("http://{address}"))))))
            .with_token("invoice-token");
        let (status, body) = get_text(front.clone().app(), "/billing/invoices/ns/acme").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        let with = |token: &str| {
            Request::get("/billing/invoices/ns/acme")
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .body(Body::empty())
                .expect("request")
        };
        let wrong = front
            .clone()
            .app()
            .oneshot(with("guess"))
            .await
            .expect("infallible");
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
        let right = front
            .app()
            .oneshot(with("invoice-token"))
            .await
            .expect("infallible");
        assert_eq!(right.status(), StatusCode::OK);
        let bytes = axum::body::to_bytes(right.into_body(), 1 << 20)
            .await
            .expect("body");
        assert!(
            String::from_utf8_lossy(&bytes).contains("Bearer invoice-token"),
            "forwarded with the token"
        );
    }

    #[tokio::test]
    async fn a_leader_that_does_not_answer_is_a_503_not_a_hang() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address");
        drop(listener);
        let front = BillingFront::new(Arc::new(Fixed(Mutex::new(Some(format!("http://{address}"))))));
        let (status, _) = get_text(front.app(), "/billing/invoices/ns/acme").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }
}
