//! Leader election against a scripted API server: take a free lease, respect a live holder,
//! take over an expired one, and lose a race gracefully.

mod support;

use std::time::Duration;

use hearth_kube::leader::LeaseLock;
use http::{Method, StatusCode};
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};
use support::{Expect, scripted};

const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/hearth-system/leases/leader";
const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/hearth-system/leases";

fn lease(holder: &str, renewed: &str) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "leader", "namespace": "hearth-system", "resourceVersion": "7"},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "renewTime": renewed, "acquireTime": renewed, "leaseTransitions": 2}
    })
}

fn now() -> Timestamp {
    "2026-11-25T10:00:00Z".parse().expect("timestamp")
}

async fn attempt(expectations: Vec<Expect>) -> (bool, Vec<support::Seen>) {
    let (ctx, script) = scripted(expectations);
    let lock = LeaseLock::new(
        ctx.client.clone(),
        "hearth-system",
        "leader",
        "me",
        Duration::from_secs(15),
    );
    let held = lock.try_acquire_or_renew(now()).await.expect("no API error");
    (held, script.await.expect("script ran"))
}

#[tokio::test]
async fn free_lease_is_created_with_us_as_holder() {
    let (held, seen) = attempt(vec![
        Expect::get_missing(LEASE),
        Expect::new(Method::POST, LEASES, StatusCode::CREATED, Value::Null),
    ])
    .await;
    assert!(held);
    assert_eq!(seen[1].body["spec"]["holderIdentity"], "me");
    assert_eq!(seen[1].body["spec"]["leaseDurationSeconds"], 15);
}

#[tokio::test]
async fn live_lease_of_another_holder_is_left_alone() {
    let (held, seen) = attempt(vec![Expect::get(
        LEASE,
        lease("other", "2026-11-25T09:59:55.000000Z"),
    )])
    .await;
    assert!(!held);
    assert_eq!(seen.len(), 1, "no write while another replica leads");
}

#[tokio::test]
async fn expired_lease_is_taken_over_with_optimistic_locking() {
    let (held, seen) = attempt(vec![
        Expect::get(LEASE, lease("other", "2026-11-25T09:59:00.000000Z")),
        Expect::new(Method::PUT, LEASE, StatusCode::OK, Value::Null),
    ])
    .await;
    assert!(held);
    let body = &seen[1].body;
    assert_eq!(
        body["metadata"]["resourceVersion"], "7",
        "replace is conditional on the version read"
    );
    assert_eq!(body["spec"]["holderIdentity"], "me");
    assert_eq!(body["spec"]["leaseTransitions"], 3);
}

#[tokio::test]
async fn losing_the_race_is_not_an_error() {
    let conflict = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409, "message": "conflict"});
    let (held, _) = attempt(vec![
        Expect::get(LEASE, lease("other", "2026-11-25T09:59:00.000000Z")),
        Expect::new(Method::PUT, LEASE, StatusCode::CONFLICT, conflict),
    ])
    .await;
    assert!(!held);
}

#[tokio::test]
async fn our_own_lease_is_renewed_without_a_transition() {
    let (held, seen) = attempt(vec![
        Expect::get(LEASE, lease("me", "2026-11-25T09:59:55.000000Z")),
        Expect::new(Method::PUT, LEASE, StatusCode::OK, Value::Null),
    ])
    .await;
    assert!(held);
    assert_eq!(seen[1].body["spec"]["leaseTransitions"], 2);
    assert_eq!(seen[1].body["spec"]["renewTime"], "2026-11-25T10:00:00.000000Z");
}

fn annotated_lease(holder: &str, renewed: &str) -> Value {
    let mut lease = lease(holder, renewed);
    lease["metadata"]["annotations"] = json!({"hearth.dev/billing-url": "http://10.0.0.7:8090"});
    lease
}

#[tokio::test]
async fn the_leader_advertises_its_billing_address_on_the_lease() {
    let (ctx, script) = scripted(vec![
        Expect::get(LEASE, lease("other", "2026-11-25T09:59:00.000000Z")),
        Expect::new(Method::PUT, LEASE, StatusCode::OK, Value::Null),
    ]);
    let lock = LeaseLock::new(
        ctx.client.clone(),
        "hearth-system",
        "leader",
        "me",
        Duration::from_secs(15),
    )
    .with_annotation("hearth.dev/billing-url", "http://10.0.0.9:8090");
    assert!(lock.try_acquire_or_renew(now()).await.expect("no API error"));
    let seen = script.await.expect("script ran");
    assert_eq!(
        seen[1].body["metadata"]["annotations"]["hearth.dev/billing-url"],
        "http://10.0.0.9:8090"
    );
}

#[tokio::test]
async fn standbys_read_the_address_of_a_live_leader_only() {
    let (ctx, script) = scripted(vec![
        Expect::get(LEASE, annotated_lease("other", "2026-11-25T09:59:55.000000Z")),
        Expect::get(LEASE, annotated_lease("other", "2026-11-25T09:59:00.000000Z")),
        Expect::get_missing(LEASE),
    ]);
    let lock = LeaseLock::new(
        ctx.client.clone(),
        "hearth-system",
        "leader",
        "me",
        Duration::from_secs(15),
    );
    let key = "hearth.dev/billing-url";
    let live = lock
        .live_holder_annotation(key, now())
        .await
        .expect("no API error");
    assert_eq!(live.as_deref(), Some("http://10.0.0.7:8090"));
    let expired = lock
        .live_holder_annotation(key, now())
        .await
        .expect("no API error");
    assert_eq!(expired, None, "an expired leader is not forwarded to");
    assert_eq!(
        lock.live_holder_annotation(key, now())
            .await
            .expect("no API error"),
        None
    );
    script.await.expect("script ran");
}
