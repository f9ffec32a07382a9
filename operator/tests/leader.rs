//! Leader election against a scripted API server: take a free lease, respect a live holder,
//! take over one that stayed unchanged for its lease duration (timed on our own monotonic
//! clock, whatever its `renewTime` says), lose a race gracefully, and step down when renewals
//! fail.

mod support;

use std::time::Duration;

use hearth_kube::leader::{LeadershipLost, LeaseClock, LeaseLock};
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

fn wall() -> Timestamp {
    "2026-11-25T10:00:00Z".parse().expect("timestamp")
}

/// The clocks `seconds` after the first attempt (the wall clock stands still: no decision
/// may depend on it).
fn at(start: tokio::time::Instant, seconds: u64) -> LeaseClock {
    LeaseClock {
        wall: wall(),
        monotonic: start + Duration::from_secs(seconds),
    }
}

fn lock(client: kube::Client) -> LeaseLock {
    LeaseLock::new(client, "hearth-system", "leader", "me", Duration::from_secs(15))
}

/// A lock on a 3 s lease: renewals every second, stepping down 2 s after the last success.
fn three_second_lock(client: kube::Client) -> LeaseLock {
    LeaseLock::new(client, "hearth-system", "leader", "me", Duration::from_secs(3))
}

/// One attempt per entry of `seconds` by one lock, against `expectations`.
async fn attempts(expectations: Vec<Expect>, seconds: &[u64]) -> (Vec<bool>, Vec<support::Seen>) {
    let (ctx, script) = scripted(expectations);
    let lock = lock(ctx.client.clone());
    let start = tokio::time::Instant::now();
    let mut held = Vec::new();
    for &second in seconds {
        held.push(
            lock.try_acquire_or_renew(at(start, second))
                .await
                .expect("no API error"),
        );
    }
    (held, script.await.expect("script ran"))
}

async fn attempt(expectations: Vec<Expect>) -> (bool, Vec<support::Seen>) {
    let (held, seen) = attempts(expectations, &[0]).await;
    (held[0], seen)
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
async fn a_lease_unchanged_for_its_duration_is_taken_over_with_optimistic_locking() {
    // Its renewTime is an hour old by our wall clock: that alone proves nothing (clocks
    // differ), so the first sighting waits; unchanged 15 s later on our own clock, it is taken.
    let stale = lease("other", "2026-11-25T09:00:00.000000Z");
    let (held, seen) = attempts(
        vec![
            Expect::get(LEASE, stale.clone()),
            Expect::get(LEASE, stale.clone()),
            Expect::get(LEASE, stale),
            Expect::new(Method::PUT, LEASE, StatusCode::OK, Value::Null),
        ],
        &[0, 14, 15],
    )
    .await;
    assert_eq!(held, [false, false, true]);
    let body = &seen[3].body;
    assert_eq!(
        body["metadata"]["resourceVersion"], "7",
        "replace is conditional on the version read"
    );
    assert_eq!(body["spec"]["holderIdentity"], "me");
    assert_eq!(body["spec"]["leaseTransitions"], 3);
}

#[tokio::test]
async fn a_lease_that_keeps_changing_is_never_taken_even_with_an_old_renew_time() {
    let mut renewed = lease("other", "2026-11-25T09:00:00.000000Z");
    let mut script = Vec::new();
    for version in 1..=4 {
        renewed["metadata"]["resourceVersion"] = json!(version.to_string());
        script.push(Expect::get(LEASE, renewed.clone()));
    }
    let (held, _) = attempts(script, &[0, 10, 20, 30]).await;
    assert_eq!(
        held, [false; 4],
        "a holder whose Lease changes is live, whatever our clock says"
    );
}

#[tokio::test]
async fn losing_the_race_is_not_an_error() {
    let conflict = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409, "message": "conflict"});
    let stale = lease("other", "2026-11-25T09:59:00.000000Z");
    let (held, _) = attempts(
        vec![
            Expect::get(LEASE, stale.clone()),
            Expect::get(LEASE, stale),
            Expect::new(Method::PUT, LEASE, StatusCode::CONFLICT, conflict),
        ],
        &[0, 15],
    )
    .await;
    assert_eq!(held, [false, false]);
}

#[tokio::test]
async fn a_leader_whose_renewals_fail_steps_down_within_the_renew_deadline() {
    let failure = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "InternalError", "code": 500, "message": "etcdserver: request timed out"});
    let (ctx, script) = scripted(vec![Expect::new(
        Method::GET,
        LEASE,
        StatusCode::INTERNAL_SERVER_ERROR,
        failure,
    )]);
    let lock = three_second_lock(ctx.client.clone());
    let acquired = tokio::time::Instant::now();
    let lost = tokio::time::timeout(Duration::from_secs(5), lock.keep_renewing(acquired))
        .await
        .expect("it stops on its own");
    let waited = acquired.elapsed();
    match lost {
        LeadershipLost::RenewDeadlinePassed(Some(error)) => {
            assert!(error.contains("request timed out"), "{error}")
        }
        other => panic!("expected the renew deadline to pass, got {other:?}"),
    }
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(3),
        "stepped down after {waited:?}: before the 3 s a standby waits"
    );
    script.await.expect("script ran");
}

#[tokio::test]
async fn a_leader_whose_lease_was_taken_stops_at_the_next_renewal() {
    let (ctx, script) = scripted(vec![Expect::get(
        LEASE,
        lease("other", "2026-11-25T10:00:00.000000Z"),
    )]);
    let lock = three_second_lock(ctx.client.clone());
    let lost = tokio::time::timeout(
        Duration::from_secs(5),
        lock.keep_renewing(tokio::time::Instant::now()),
    )
    .await
    .expect("it stops on its own");
    assert_eq!(lost, LeadershipLost::TakenOver);
    script.await.expect("script ran");
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
        Expect::get_missing(LEASE),
        Expect::new(Method::POST, LEASES, StatusCode::CREATED, Value::Null),
    ]);
    let lock = lock(ctx.client.clone()).with_annotation("hearth.dev/billing-url", "http://10.0.0.9:8090");
    let start = tokio::time::Instant::now();
    assert!(
        lock.try_acquire_or_renew(at(start, 0))
            .await
            .expect("no API error")
    );
    let seen = script.await.expect("script ran");
    assert_eq!(
        seen[1].body["metadata"]["annotations"]["hearth.dev/billing-url"],
        "http://10.0.0.9:8090"
    );
}

#[tokio::test]
async fn standbys_read_the_address_of_a_live_leader_only() {
    let live = annotated_lease("other", "2026-11-25T09:59:55.000000Z");
    let (ctx, script) = scripted(vec![
        Expect::get(LEASE, live.clone()),
        Expect::get(LEASE, live),
        Expect::get_missing(LEASE),
    ]);
    let lock = lock(ctx.client.clone());
    let start = tokio::time::Instant::now();
    let key = "hearth.dev/billing-url";
    let read = |seconds| lock.live_holder_annotation(key, start + Duration::from_secs(seconds));
    assert_eq!(
        read(0).await.expect("no API error").as_deref(),
        Some("http://10.0.0.7:8090")
    );
    assert_eq!(
        read(15).await.expect("no API error"),
        None,
        "a leader whose Lease stood still for its duration is not forwarded to"
    );
    assert_eq!(read(16).await.expect("no API error"), None);
    script.await.expect("script ran");
}
