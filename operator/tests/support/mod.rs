#![allow(dead_code)] // Each test binary uses a different part of this shared harness.

//! A scripted fake API server on `tower_test::mock::pair`: each expected call names the method
//! and path it must see and the response to give; the script records every request body so
//! tests can assert the exact sequence of calls and patch bodies.

use std::sync::Arc;
use std::time::Duration;

use hearth_controller::backoff::Backoff;
use hearth_controller::context::{Context, Settings};
use hearth_controller::metrics::Metrics;
use http::{Method, Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};

/// One call the fake API server expects, in order.
pub struct Expect {
    /// HTTP method.
    pub method: Method,
    /// Path (without query) the request must have.
    pub path: String,
    /// Status code to answer with.
    pub status: StatusCode,
    /// JSON body to answer with (for `text/plain`, a string sent as it is).
    pub response: Value,
    /// Content type of the answer.
    pub content_type: &'static str,
}

impl Expect {
    /// A GET answered with 404.
    pub fn get_missing(path: &str) -> Self {
        Self::new(Method::GET, path, StatusCode::NOT_FOUND, not_found())
    }

    /// A GET answered as a real kube-apiserver answers a GET in an API group it does not
    /// serve (a CRD that is not installed): 404 with a plain-text body, not a JSON `Status`.
    pub fn get_unserved(path: &str) -> Self {
        Self::plain(Method::GET, path, StatusCode::NOT_FOUND, "404 page not found\n")
    }

    /// A call answered with a plain-text body.
    pub fn plain(method: Method, path: &str, status: StatusCode, text: &str) -> Self {
        Self {
            content_type: "text/plain; charset=utf-8",
            ..Self::new(method, path, status, Value::String(text.to_string()))
        }
    }

    /// A GET answered with `object`.
    pub fn get(path: &str, object: Value) -> Self {
        Self::new(Method::GET, path, StatusCode::OK, object)
    }

    /// A call answered with `response`.
    pub fn new(method: Method, path: &str, status: StatusCode, response: Value) -> Self {
        Self {
            method,
            path: path.to_string(),
            status,
            response,
            content_type: "application/json",
        }
    }

    /// A server-side-apply PATCH that echoes the applied body back (as the server would).
    pub fn apply(path: &str) -> Self {
        Self::new(Method::PATCH, path, StatusCode::OK, Value::Null)
    }

    /// A status PATCH answered with `object` carrying the patched status, as the server would.
    pub fn apply_status(path: &str, object: Value) -> Self {
        Self::new(
            Method::PATCH,
            path,
            StatusCode::OK,
            json!({"mergeStatusInto": object}),
        )
    }
}

/// What the fake server saw.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Method.
    pub method: Method,
    /// Path and query.
    pub uri: String,
    /// Parsed JSON body (Null when empty).
    pub body: Value,
}

/// A Kubernetes `Status` 404 body.
pub fn not_found() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"})
}

/// A context whose client talks to a script; returns the context and the running script.
pub fn scripted(expectations: Vec<Expect>) -> (Arc<Context>, tokio::task::JoinHandle<Vec<Seen>>) {
    scripted_with_backoff(expectations, Arc::new(Backoff::default()))
}

/// As [`scripted`], with the retry delays of an earlier context (a later reconcile of the
/// same controller process).
pub fn scripted_with_backoff(
    expectations: Vec<Expect>,
    backoff: Arc<Backoff>,
) -> (Arc<Context>, tokio::task::JoinHandle<Vec<Seen>>) {
    scripted_with(expectations, backoff, Settings::default())
}

/// As [`scripted`], with the operator's `settings`.
pub fn scripted_with_settings(
    expectations: Vec<Expect>,
    settings: Settings,
) -> (Arc<Context>, tokio::task::JoinHandle<Vec<Seen>>) {
    scripted_with(expectations, Arc::new(Backoff::default()), settings)
}

fn scripted_with(
    expectations: Vec<Expect>,
    backoff: Arc<Backoff>,
    settings: Settings,
) -> (Arc<Context>, tokio::task::JoinHandle<Vec<Seen>>) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let ctx = Arc::new(Context {
        backoff,
        ..Context::new(client, Metrics::new(), settings)
    });
    let script = tokio::spawn(async move {
        let mut seen = Vec::new();
        for expect in expectations {
            let (request, send) = tokio::time::timeout(Duration::from_secs(5), handle.next_request())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "expected {} {} but no request came; saw {seen:#?}",
                        expect.method, expect.path
                    )
                })
                .expect("client alive");
            let method = request.method().clone();
            let uri = request.uri().to_string();
            let body = request.into_body().collect_bytes().await.expect("request body");
            let body: Value = if body.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&body).expect("JSON body")
            };
            assert_eq!(
                (&method, uri.split('?').next().unwrap_or_default()),
                (&expect.method, expect.path.as_str()),
                "unexpected call #{}; earlier calls: {seen:#?}",
                seen.len() + 1
            );
            let response = match expect.response.get("mergeStatusInto") {
                Some(object) => {
                    let mut object = object.clone();
                    object["status"] = body["status"].clone();
                    object
                }
                None if expect.response.is_null() => body.clone(),
                None => expect.response.clone(),
            };
            seen.push(Seen { method, uri, body });
            let bytes = match &response {
                Value::String(text) if expect.content_type.starts_with("text/plain") => {
                    text.clone().into_bytes()
                }
                json => serde_json::to_vec(json).expect("serialisable"),
            };
            send.send_response(
                Response::builder()
                    .status(expect.status)
                    .header("content-type", expect.content_type)
                    .body(Body::from(bytes))
                    .expect("response"),
            );
        }
        // Any further call is a failure: answer it with an error the test will see.
        if let Ok(Some((request, send))) =
            tokio::time::timeout(Duration::from_millis(200), handle.next_request()).await
        {
            let uri = request.uri().to_string();
            send.send_error(format!("unexpected extra call {} {uri}", request.method()));
            panic!(
                "unexpected extra call {} {uri}; after {seen:#?}",
                request.method()
            );
        }
        seen
    });
    (ctx, script)
}

/// Number of writes (non-GET/LIST calls) among `seen`.
pub fn writes(seen: &[Seen]) -> usize {
    seen.iter().filter(|s| s.method != Method::GET).count()
}
