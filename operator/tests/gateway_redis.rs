//! Two gateways sharing one real Redis (`scripts/with-redis.sh` starts one and exports
//! HEARTH_TEST_REDIS_URL): each limit holds across both instances at its exact boundary, a
//! refund on one instance makes room on the other, a dropped request's concurrency slot is
//! freed, a dead gateway's lease expires while a live one's is renewed, and an unreachable
//! Redis fails closed with an OpenAI-shaped 503.

mod gateway_support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use gateway_support::*;
use hearth_gateway::config::{TenantPolicy, TierPolicy};
use hearth_gateway::error::GatewayError;
use hearth_gateway::{
    ConfigHandle, GatewayOptions, GatewayState, Limiter, RedisLimiter, RedisLimiterOptions, app,
};
use hearth_local::source::LocalSource;
use hearth_tenancy::limits::Limits;
use serde_json::Value;
use tower::ServiceExt;

/// Prompt bound of [`chat_body`] (as in `gateway_router.rs`).
const PROMPT_BOUND: u64 = 13;

/// The test Redis, or `None` (test skipped) when there is none and none is required.
fn redis_url() -> Option<String> {
    match std::env::var("HEARTH_TEST_REDIS_URL") {
        Ok(url) => Some(url),
        Err(_) => {
            assert!(
                std::env::var_os("HEARTH_REQUIRE_REDIS").is_none_or(|v| v != "1"),
                "HEARTH_REQUIRE_REDIS=1 but HEARTH_TEST_REDIS_URL is not set"
            );
            eprintln!(
                "skipped: no Redis (run through scripts/with-redis.sh or `make test`, which start one)"
            );
            None
        }
    }
}

/// Limiter options with a key prefix of this test's own, so tests sharing the server never meet.
fn options(url: &str, test: &str) -> RedisLimiterOptions {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    RedisLimiterOptions {
        key_prefix: format!("hearth-test:{test}:{}:{nanos}", std::process::id()),
        timeout: Duration::from_secs(2),
        ..RedisLimiterOptions::new(url)
    }
}

struct TwoGateways {
    _dir: TempDir,
    a: GatewayState,
    b: GatewayState,
    backend: FakeBackend,
}

/// Two gateways over one config (tier `gold` with `limits`, tenant `acme` with key `key-acme`)
/// and one backend, each with its own connection to the same Redis keys.
async fn two_gateways(url: &str, test: &str, limits: &str, backend: FakeBackend) -> TwoGateways {
    let dir = TempDir::new("redis");
    let config_dir = dir.path().join("config");
    std::fs::create_dir_all(&config_dir).expect("dir");
    write_config(
        &config_dir,
        &[
            tier("gold", 0, 1, limits, ""),
            tenant("acme", "gold", "{name: main}", ""),
            model("m", 64, ""),
        ],
    );
    write_key(&dir.path().join("keys"), "acme", "main", "key-acme");
    let source = LocalSource {
        config_dir,
        keys_dir: Some(dir.path().join("keys")),
        backends: BTreeMap::from([("m".to_string(), vec![backend.url()])]),
        statuses: None,
        down: None,
    };
    let shared = options(url, test);
    let gateway = || {
        let limiter = RedisLimiter::new(shared.clone()).expect("limiter");
        let handle = ConfigHandle::new(source.load().expect("config loads"));
        GatewayState::with_limiter(handle, GatewayOptions::default(), Arc::new(limiter))
    };
    let (a, b) = (gateway(), gateway());
    TwoGateways {
        _dir: dir,
        a,
        b,
        backend,
    }
}

async fn send(state: &GatewayState, max_tokens: u64) -> axum::response::Response {
    app(state.clone())
        .oneshot(chat("key-acme", chat_body("m", Some(max_tokens), false)))
        .await
        .expect("response")
}

/// Sends through `state` until a request is admitted (refused ones take nothing), or panics
/// after `within`.
async fn admitted_within(
    state: &GatewayState,
    max_tokens: u64,
    within: Duration,
) -> axum::response::Response {
    let deadline = Instant::now() + within;
    loop {
        let response = send(state, max_tokens).await;
        if response.status() == StatusCode::OK || Instant::now() > deadline {
            assert_eq!(response.status(), StatusCode::OK, "never admitted");
            return response;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn fifty_concurrent_requests_across_two_gateways_admit_exactly_ten() {
    let Some(url) = redis_url() else { return };
    let reservation = PROMPT_BOUND + 10;
    let limits = format!("tokensPerMinute: {}", 10 * reservation);
    // Answers are held until all admissions are decided, so no refund can make room early.
    let backend = FakeBackend::start_with("a", false, Duration::ZERO).await;
    let gateways = two_gateways(&url, "fifty", &limits, backend).await;
    let routed = |i: usize| {
        app(if i.is_multiple_of(2) {
            gateways.a.clone()
        } else {
            gateways.b.clone()
        })
    };
    assert_eq!(
        fifty_concurrent_requests("key-acme", routed, &gateways.backend).await,
        (10, 40)
    );
}

#[tokio::test]
async fn the_eleventh_request_in_a_minute_across_two_gateways_is_refused_with_retry_after() {
    let Some(url) = redis_url() else { return };
    let backend = FakeBackend::start("a").await;
    let gateways = two_gateways(&url, "eleventh", "requestsPerMinute: 10", backend).await;
    for i in 0..10 {
        let gateway = if i < 5 { &gateways.a } else { &gateways.b };
        let response = send(gateway, 1).await;
        assert_eq!(response.status(), StatusCode::OK, "request {i}");
        assert_eq!(header(&response, "x-ratelimit-limit-requests"), Some("10"));
        assert_eq!(
            header(&response, "x-ratelimit-remaining-requests"),
            Some((9 - i).to_string().as_str())
        );
    }
    for gateway in [&gateways.a, &gateways.b] {
        let refused = send(gateway, 1).await;
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        // 10 a minute refill one request every 6 s (less whatever the test has taken so far).
        let retry: u64 = header(&refused, "retry-after")
            .and_then(|v| v.parse().ok())
            .expect("Retry-After");
        assert!((5..=6).contains(&retry), "Retry-After {retry}");
        assert_eq!(header(&refused, "x-ratelimit-remaining-requests"), Some("0"));
        let error: Value = serde_json::from_str(&text(refused).await).expect("json");
        assert_eq!(
            (error["error"]["type"].as_str(), error["error"]["code"].as_str()),
            (Some("requests"), Some("rate_limit_exceeded"))
        );
    }
    assert_eq!(gateways.backend.seen().len(), 10);
}

#[tokio::test]
async fn a_refund_on_one_gateway_makes_room_on_the_other() {
    let Some(url) = redis_url() else { return };
    // A reserves 13 + 80 = 93 of 100 and uses 5 + 3 = 8: B's 93 fits only after A's refund.
    let backend = FakeBackend::start("a").await;
    let gateways = two_gateways(&url, "refund", "tokensPerMinute: 100", backend).await;
    let first = send(&gateways.a, 80).await;
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(header(&first, "x-ratelimit-remaining-tokens"), Some("7"));
    let refused = send(&gateways.b, 80).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(header(&refused, "retry-after").is_some());
    // Reading A's body to the end settles its reservation (8 used, 85 refunded).
    let _ = text(first).await;
    let second = admitted_within(&gateways.b, 80, Duration::from_secs(5)).await;
    let remaining: u64 = header(&second, "x-ratelimit-remaining-tokens")
        .and_then(|v| v.parse().ok())
        .expect("remaining tokens");
    // 100 - 8 (A's usage) - 93 (B's reservation), plus the refill while the test ran.
    assert!(remaining < 7, "{remaining}");
}

#[tokio::test]
async fn a_dropped_requests_concurrency_slot_is_freed_on_the_other_gateway() {
    let Some(url) = redis_url() else { return };
    let backend = FakeBackend::start_with("a", false, Duration::ZERO).await;
    let gateways = two_gateways(&url, "dropped", "maxConcurrentRequests: 1", backend).await;
    let router = app(gateways.a.clone());
    let held = tokio::spawn(async move {
        router
            .oneshot(chat("key-acme", chat_body("m", Some(3), false)))
            .await
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    while gateways.backend.seen().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the first request never reached the backend"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let refused = send(&gateways.b, 3).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let error: Value = serde_json::from_str(&text(refused).await).expect("json");
    assert_eq!(error["error"]["type"], "concurrency");
    // The client goes away mid-request: its slot must come back, on either gateway.
    held.abort();
    let _ = held.await;
    gateways.backend.open();
    let _ = admitted_within(&gateways.b, 3, Duration::from_secs(5)).await;
}

fn capped_tenant() -> TenantPolicy {
    TenantPolicy {
        id: "acme/leases".into(),
        tier: Arc::new(TierPolicy {
            name: "gold".into(),
            priority: 0,
            weight: 1,
            models: vec![],
        }),
        limits: Limits {
            max_concurrent_requests: Some(1),
            ..Limits::default()
        },
        suspended: false,
        budget_blocked: false,
        reported_usage: None,
    }
}

#[tokio::test]
async fn a_live_lease_is_renewed_and_a_dead_gateways_lease_expires() {
    let Some(url) = redis_url() else { return };
    let options = RedisLimiterOptions {
        lease_ttl: Duration::from_secs(1),
        ..options(&url, "lease")
    };
    let tenant = capped_tenant();
    let survivor = RedisLimiter::new(options.clone()).expect("limiter");

    // A live request outlasting its lease TTL keeps its slot: the lease is renewed.
    let live = survivor.admit(&tenant, 1).await.expect("admitted");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(matches!(
        survivor.admit(&tenant, 1).await,
        Err(GatewayError::RateLimited { .. })
    ));
    drop(live);

    // A gateway that dies mid-request (its runtime gone, nothing released): the slot comes
    // back once the lease expires.
    let dead_options = options.clone();
    let dead_tenant = tenant.clone();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let limiter = RedisLimiter::new(dead_options).expect("limiter");
            // The live request's release is asynchronous: wait for its slot.
            let deadline = Instant::now() + Duration::from_secs(5);
            let reservation = loop {
                match limiter.admit(&dead_tenant, 1).await {
                    Ok(reservation) => break reservation,
                    Err(error) => assert!(Instant::now() < deadline, "never released: {error}"),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            std::mem::forget(reservation);
        });
    })
    .join()
    .expect("dead gateway thread");
    assert!(matches!(
        survivor.admit(&tenant, 1).await,
        Err(GatewayError::RateLimited { .. })
    ));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match survivor.admit(&tenant, 1).await {
            Ok(_) => break,
            Err(error) => assert!(Instant::now() < deadline, "slot never freed: {error}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_quota_refusal_takes_nothing_from_the_buckets_and_every_key_expires() {
    let Some(url) = redis_url() else { return };
    let options = options(&url, "quota");
    let prefix = options.key_prefix.clone();
    let limiter = RedisLimiter::new(options).expect("limiter");
    let tenant = TenantPolicy {
        limits: Limits {
            requests_per_minute: Some(10),
            tokens_per_minute: Some(1000),
            max_concurrent_requests: Some(5),
            tokens_per_month: Some(100),
            ..Limits::default()
        },
        ..capped_tenant()
    };
    let first = limiter.admit(&tenant, 60).await.expect("room for 60");
    assert!(matches!(
        limiter.admit(&tenant, 41).await,
        Err(GatewayError::QuotaExhausted { .. })
    ));
    // All or nothing: the refused request took no request, no tokens and no slot.
    let second = limiter.admit(&tenant, 40).await.expect("room for 40");
    assert_eq!(
        second.headers().requests.map(|(_, remaining, _)| remaining),
        Some(8)
    );
    assert_eq!(
        second.headers().tokens.map(|(_, remaining, _)| remaining),
        Some(900)
    );

    let client = redis::Client::open(url.as_str()).expect("client");
    let mut connection = client.get_multiplexed_async_connection().await.expect("connects");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut connection)
        .await
        .expect("keys");
    assert_eq!(keys.len(), 4, "{keys:?}");
    for key in keys {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&key)
            .query_async(&mut connection)
            .await
            .expect("ttl");
        assert!(ttl > 0, "{key} has no expiry");
    }
    drop((first, second));
}

#[tokio::test]
async fn an_unreachable_redis_fails_closed_with_an_openai_error() {
    // A port nothing listens on: no Redis needed for this one.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let backend = FakeBackend::start("a").await;
    let gateways = two_gateways(&format!("redis://127.0.0.1:{port}/"), "closed", "", backend).await;
    let response = send(&gateways.a, 3).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(header(&response, "retry-after"), Some("1"));
    let error: Value = serde_json::from_str(&text(response).await).expect("json");
    assert_eq!(error["error"]["code"], "limiter_unavailable");
    assert_eq!(error["error"]["type"], "server_error");
    assert!(gateways.backend.seen().is_empty(), "nothing reaches the engine");
}
