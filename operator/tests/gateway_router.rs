//! The gateway's router driven with `oneshot` in front of a small real backend: keys, each
//! limit at its exact boundary, `Retry-After`, the tier's model allow-list, header stripping,
//! streaming with usage refunds, the body limit and live config changes.

mod gateway_support;

use std::collections::BTreeMap;
use std::time::Duration;

use axum::http::StatusCode;
use gateway_support::*;
use hearth_gateway::{GatewayOptions, GatewayState, app};
use hearth_local::source::LocalSource;
use serde_json::{Value, json};
use tower::ServiceExt;

/// Prompt bound of [`chat_body`]: "user" + "Say hi" = 10 bytes → 4, + 6 per message + 3.
const PROMPT_BOUND: u64 = 13;

struct Setup {
    _dir: TempDir,
    source: LocalSource,
    state: GatewayState,
    backend: FakeBackend,
}

/// A gateway over `documents`, tenants' keys `key-<tenant>` (key name `main`), and one backend
/// for every model named `m` or `other`.
async fn setup(documents: &[String], tenants: &[&str], backend: FakeBackend) -> Setup {
    let dir = TempDir::new("router");
    let config_dir = dir.path().join("config");
    std::fs::create_dir_all(&config_dir).expect("dir");
    write_config(&config_dir, documents);
    for tenant in tenants {
        write_key(&dir.path().join("keys"), tenant, "main", &format!("key-{tenant}"));
    }
    let backends = BTreeMap::from([
        ("m".to_string(), vec![backend.url()]),
        ("other".to_string(), vec![backend.url()]),
    ]);
    let source = LocalSource {
        config_dir,
        keys_dir: Some(dir.path().join("keys")),
        backends,
        statuses: None,
        down: None,
    };
    let config = source.load().expect("config loads");
    let state = GatewayState::new(config, GatewayOptions::default());
    Setup {
        _dir: dir,
        source,
        state,
        backend,
    }
}

fn basic(limits: &str) -> Vec<String> {
    vec![
        tier("gold", 0, 1, limits, ""),
        tenant("acme", "gold", "{name: main}, {name: old, revoked: true}", ""),
        tenant("paused", "gold", "{name: main}", "  suspended: true\n"),
        model("m", 64, ""),
    ]
}

async fn send(setup: &Setup, key: &str, body: Value) -> axum::response::Response {
    app(setup.state.clone())
        .oneshot(chat(key, body))
        .await
        .expect("response")
}

#[tokio::test]
async fn good_bad_revoked_and_suspended_keys() {
    let setup = setup(&basic(""), &["acme", "paused"], FakeBackend::start("a").await).await;
    write_key(&setup._dir.path().join("keys"), "acme", "old", "key-old");
    let setup = Setup {
        state: GatewayState::new(setup.source.load().expect("reload"), GatewayOptions::default()),
        ..setup
    };

    let ok = send(&setup, "key-acme", chat_body("m", Some(3), false)).await;
    assert_eq!(ok.status(), StatusCode::OK);
    let body: Value = serde_json::from_str(&text(ok).await).expect("json");
    assert_eq!(body["choices"][0]["message"]["content"], "Hi there!");

    for (key, status, code) in [
        ("nope", StatusCode::UNAUTHORIZED, "invalid_api_key"),
        ("key-old", StatusCode::UNAUTHORIZED, "revoked_api_key"),
        ("key-paused", StatusCode::FORBIDDEN, "tenant_suspended"),
    ] {
        let response = send(&setup, key, chat_body("m", Some(3), false)).await;
        assert_eq!(response.status(), status, "{key}");
        let error: Value = serde_json::from_str(&text(response).await).expect("json");
        assert_eq!(error["error"]["code"], code);
        assert!(
            error["error"]["message"].is_string()
                && error["error"].get("param").is_some()
                && error["error"]["type"].is_string()
        );
    }
    let anonymous = axum::http::Request::post("/v1/chat/completions")
        .body(axum::body::Body::from(chat_body("m", None, false).to_string()))
        .expect("request");
    let response = app(setup.state.clone())
        .oneshot(anonymous)
        .await
        .expect("response");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        setup.backend.seen().len(),
        1,
        "refused requests never reach the engine"
    );
}

#[tokio::test]
async fn the_eleventh_request_in_a_minute_is_refused_with_retry_after() {
    let setup = setup(
        &basic("requestsPerMinute: 10"),
        &["acme"],
        FakeBackend::start("a").await,
    )
    .await;
    for i in 0..10 {
        let response = send(&setup, "key-acme", chat_body("m", Some(1), false)).await;
        assert_eq!(response.status(), StatusCode::OK, "request {i}");
        assert_eq!(header(&response, "x-ratelimit-limit-requests"), Some("10"));
        assert_eq!(
            header(&response, "x-ratelimit-remaining-requests"),
            Some((9 - i).to_string().as_str())
        );
    }
    let refused = send(&setup, "key-acme", chat_body("m", Some(1), false)).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    // 10 a minute refill one request every 6 s.
    assert_eq!(header(&refused, "retry-after"), Some("6"));
    assert_eq!(header(&refused, "x-ratelimit-remaining-requests"), Some("0"));
    assert!(header(&refused, "x-ratelimit-reset-requests").is_some_and(|v| v.ends_with('s')));
    let error: Value = serde_json::from_str(&text(refused).await).expect("json");
    assert_eq!(
        (error["error"]["type"].as_str(), error["error"]["code"].as_str()),
        (Some("requests"), Some("rate_limit_exceeded"))
    );
}

#[tokio::test]
async fn fifty_concurrent_requests_with_room_for_ten_admit_exactly_ten() {
    let reservation = PROMPT_BOUND + 10;
    let limits = format!("tokensPerMinute: {}", 10 * reservation);
    // Answers are held until all admissions are decided, so no refund can make room early.
    let backend = FakeBackend::start_with("a", false, Duration::ZERO).await;
    let setup = setup(&basic(&limits), &["acme"], backend).await;
    assert_eq!(
        fifty_concurrent_requests("key-acme", |_| app(setup.state.clone()), &setup.backend).await,
        (10, 40)
    );
}

#[tokio::test]
async fn unused_tokens_are_refunded_from_usage_json_and_stream() {
    // Each request reserves 13 + 50 = 63 and uses 5 + 3 = 8: 79 = 63 + 8 + 8 leaves room for
    // the third reservation only if both earlier ones were refunded.
    let setup = setup(
        &basic("tokensPerMinute: 79"),
        &["acme"],
        FakeBackend::start("a").await,
    )
    .await;
    let first = send(&setup, "key-acme", chat_body("m", Some(50), false)).await;
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(header(&first, "x-ratelimit-remaining-tokens"), Some("16"));
    let _ = text(first).await;
    let streamed = send(&setup, "key-acme", chat_body("m", Some(50), true)).await;
    assert_eq!(streamed.status(), StatusCode::OK);
    assert_eq!(header(&streamed, "content-type"), Some("text/event-stream"));
    let events = text(streamed).await;
    assert_eq!(
        events.matches("data: ").count(),
        4,
        "3 pieces and [DONE], usage chunk stripped: {events}"
    );
    assert!(!events.contains("\"usage\""), "{events}");
    let engine_body = &setup.backend.seen()[1].body;
    assert_eq!(
        engine_body["stream_options"]["include_usage"], true,
        "the gateway always asks for usage"
    );
    // The stream's usage was read although the client never saw it: 79 - 16 = 63 free.
    let mut asked = chat_body("m", Some(50), true);
    asked["stream_options"] = json!({"include_usage": true});
    let with_usage = send(&setup, "key-acme", asked).await;
    assert_eq!(with_usage.status(), StatusCode::OK);
    let events = text(with_usage).await;
    assert!(
        events.contains("\"usage\"") && events.ends_with("data: [DONE]\n\n"),
        "{events}"
    );
}

#[tokio::test]
async fn max_tokens_cap_concurrency_cap_and_monthly_quota_at_their_boundaries() {
    let limits = "maxTokensPerRequest: 100, maxConcurrentRequests: 2";
    let mut documents = basic(limits);
    // A tenant whose override tightens the tier's monthly quota of 10,000 to 129 tokens.
    documents[0] = tier("gold", 0, 1, limits, "  quota: {tokensPerMonth: 10000}\n");
    documents.push(tenant(
        "metered",
        "gold",
        "{name: main}",
        "  overrides: {quota: {tokensPerMonth: 129}}\n",
    ));
    let backend = FakeBackend::start_with("a", false, Duration::ZERO).await;
    let setup = setup(&documents, &["acme", "metered"], backend).await;

    let too_many = send(&setup, "key-acme", chat_body("m", Some(101), false)).await;
    assert_eq!(too_many.status(), StatusCode::BAD_REQUEST);
    let error: Value = serde_json::from_str(&text(too_many).await).expect("json");
    assert_eq!(error["error"]["param"], "max_tokens");
    assert!(
        error["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("101") && m.contains("100"))
    );
    let at_cap =
        tokio::spawn(app(setup.state.clone()).oneshot(chat("key-acme", chat_body("m", Some(100), false))));

    // Two held requests fill the concurrency cap; the third is refused.
    let second =
        tokio::spawn(app(setup.state.clone()).oneshot(chat("key-acme", chat_body("m", None, false))));
    while setup.backend.seen().len() < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let third = send(&setup, "key-acme", chat_body("m", Some(1), false)).await;
    assert_eq!(third.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&third, "retry-after"), Some("1"));
    let error: Value = serde_json::from_str(&text(third).await).expect("json");
    assert_eq!(error["error"]["type"], "concurrency");
    setup.backend.open();
    for request in [at_cap, second] {
        assert_eq!(
            request.await.expect("task").expect("response").status(),
            StatusCode::OK
        );
    }
    assert_eq!(
        setup.backend.seen()[1].body["max_tokens"],
        100,
        "the tier's cap bounds a request that set none"
    );

    // Quota 129: each request reserves 13 + 100 and settles at 5 + 3 = 8 used.
    for used_before in [0, 8, 16] {
        let response = send(&setup, "key-metered", chat_body("m", Some(100), false)).await;
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "{used_before} used + 113 fits in 129"
        );
        let _ = text(response).await;
    }
    // 24 used, 105 left: a reservation of 106 is the first one refused.
    let refused = send(&setup, "key-metered", chat_body("m", Some(93), false)).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let error: Value = serde_json::from_str(&text(refused).await).expect("json");
    assert_eq!(error["error"]["code"], "insufficient_quota");
    assert_eq!(
        send(&setup, "key-metered", chat_body("m", Some(92), false))
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn models_are_listed_and_served_only_to_allowed_tiers() {
    let documents = vec![
        tier("gold", 0, 1, "", "  models: [m]\n"),
        tier("free", 0, 1, "", ""),
        tenant("acme", "gold", "{name: main}", ""),
        tenant("cheap", "free", "{name: main}", ""),
        model("m", 8, ""),
        model("other", 8, "free"),
    ];
    let setup = setup(&documents, &["acme", "cheap"], FakeBackend::start("a").await).await;
    let list = |key: &str| {
        axum::http::Request::get("/v1/models")
            .header("authorization", format!("Bearer {key}"))
            .body(axum::body::Body::empty())
            .expect("request")
    };
    let ids = |body: String| -> Vec<String> {
        let value: Value = serde_json::from_str(&body).expect("json");
        value["data"]
            .as_array()
            .map(|d| {
                d.iter()
                    .filter_map(|m| m["id"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let gold = app(setup.state.clone())
        .oneshot(list("key-acme"))
        .await
        .expect("response");
    assert_eq!(ids(text(gold).await), ["m"]);
    let free = app(setup.state.clone())
        .oneshot(list("key-cheap"))
        .await
        .expect("response");
    assert_eq!(ids(text(free).await), ["m", "other"]);
    let denied = send(&setup, "key-acme", chat_body("other", Some(1), false)).await;
    assert_eq!(denied.status(), StatusCode::NOT_FOUND);
    let error: Value = serde_json::from_str(&text(denied).await).expect("json");
    assert_eq!(
        (error["error"]["code"].as_str(), error["error"]["param"].as_str()),
        (Some("model_not_found"), Some("model"))
    );
    assert_eq!(
        send(&setup, "key-cheap", chat_body("other", Some(1), false))
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn forged_hearth_headers_are_replaced_by_the_gateways() {
    let documents = vec![
        tier("gold", 7, 2, "", ""),
        tenant("acme", "gold", "{name: main}", ""),
        model("m", 8, ""),
    ];
    let setup = setup(&documents, &["acme"], FakeBackend::start("a").await).await;
    let mut request = chat("key-acme", chat_body("m", Some(1), false));
    for (name, value) in [
        ("x-hearth-tenant", "victim/tenant"),
        ("x-hearth-priority", "1000"),
        ("x-hearth-tier", "platinum"),
        ("x-hearth-debug", "1"),
    ] {
        request.headers_mut().insert(name, value.parse().expect("value"));
    }
    let response = app(setup.state.clone()).oneshot(request).await.expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    let request_id = header(&response, "x-request-id")
        .map(String::from)
        .expect("request id");
    let seen = &setup.backend.seen()[0].headers;
    let get = |name: &str| seen.get(name).and_then(|v| v.to_str().ok());
    assert_eq!(get("x-hearth-tenant"), Some("acme/acme"));
    assert_eq!(get("x-hearth-tier"), Some("gold"));
    assert_eq!(get("x-hearth-priority"), Some("7"));
    assert_eq!(get("x-hearth-request-id"), Some(request_id.as_str()));
    assert_eq!(get("x-hearth-debug"), None);
    assert_eq!(
        get("authorization"),
        None,
        "the tenant's key stays at the gateway"
    );
}

#[tokio::test]
async fn oversized_bodies_are_413_in_openai_shape() {
    let setup = setup(&basic(""), &["acme"], FakeBackend::start("a").await).await;
    let state = GatewayState::new(
        setup.source.load().expect("config"),
        GatewayOptions {
            max_body_bytes: 1024,
            ..GatewayOptions::default()
        },
    );
    let big = json!({"model": "m", "messages": [{"role": "user", "content": "x".repeat(2000)}]});
    let response = app(state).oneshot(chat("key-acme", big)).await.expect("response");
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let error: Value = serde_json::from_str(&text(response).await).expect("json");
    assert_eq!(error["error"]["code"], "request_too_large");
}

#[tokio::test]
async fn editing_a_tier_takes_effect_without_restart_and_metrics_count_it() {
    let setup = setup(
        &basic("requestsPerMinute: 1"),
        &["acme"],
        FakeBackend::start("a").await,
    )
    .await;
    let watcher = tokio::spawn(
        setup
            .source
            .clone()
            .watch(setup.state.clone(), Duration::from_millis(20)),
    );
    let first = send(&setup, "key-acme", chat_body("m", Some(1), false)).await;
    assert_eq!(first.status(), StatusCode::OK);
    let _ = text(first).await;
    assert_eq!(
        send(&setup, "key-acme", chat_body("m", Some(1), false))
            .await
            .status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    // Raise the limit in the YAML: the bucket grows to 100 without a restart.
    std::fs::write(
        setup.source.config_dir.join("00.yaml"),
        tier("gold", 0, 1, "requestsPerMinute: 100", ""),
    )
    .expect("edit");
    let mut status = StatusCode::TOO_MANY_REQUESTS;
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        status = send(&setup, "key-acme", chat_body("m", Some(1), false))
            .await
            .status();
        if status == StatusCode::OK {
            break;
        }
    }
    watcher.abort();
    assert_eq!(status, StatusCode::OK);
    let public = app(setup.state.clone())
        .oneshot(
            axum::http::Request::get("/metrics")
                .body(axum::body::Body::empty())
                .expect("request"),
        )
        .await
        .expect("response");
    assert_eq!(
        public.status(),
        StatusCode::NOT_FOUND,
        "tenants' names stay off the public port"
    );
    let metrics = hearth_gateway::metrics_app(setup.state.clone())
        .oneshot(
            axum::http::Request::get("/metrics")
                .body(axum::body::Body::empty())
                .expect("request"),
        )
        .await
        .expect("response");
    let metrics = text(metrics).await;
    assert!(
        metrics.contains("hearth_gateway_requests_total{code=\"200\",model=\"m\",tier=\"gold\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("hearth_gateway_rate_limited_total{limit=\"requests\",tier=\"gold\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("hearth_gateway_tenant_tokens_total{kind=\"completion\",tenant=\"acme/acme\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("hearth_gateway_replica_in_flight{"), "{metrics}");
}

/// Sends 24 requests with different prompts, one after another, to a model with replicas `a`
/// and `b` under `router`; returns how many each replica got.
async fn spread_under(router: &str) -> (usize, usize) {
    let (a, b) = (FakeBackend::start("a").await, FakeBackend::start("b").await);
    let dir = TempDir::new("routers");
    let config_dir = dir.path().join("config");
    std::fs::create_dir_all(&config_dir).expect("dir");
    write_config(&config_dir, &basic(""));
    write_key(&dir.path().join("keys"), "acme", "main", "key-acme");
    let source = LocalSource {
        config_dir,
        keys_dir: Some(dir.path().join("keys")),
        backends: BTreeMap::from([("m".to_string(), vec![a.url(), b.url()])]),
        statuses: None,
        down: None,
    };
    let options = GatewayOptions {
        router: hearth_gateway::router::router_named(router).expect("a registered router"),
        ..GatewayOptions::default()
    };
    let state = GatewayState::new(source.load().expect("config loads"), options);
    for i in 0..24 {
        let body = json!({"model": "m", "max_tokens": 3, "messages": [{"role": "user", "content": format!("question {i}")}]});
        let response = app(state.clone())
            .oneshot(chat("key-acme", body))
            .await
            .expect("response");
        assert_eq!(response.status(), StatusCode::OK);
        let _ = text(response).await;
    }
    (a.seen().len(), b.seen().len())
}

#[tokio::test]
async fn the_router_option_chooses_how_replicas_are_picked() {
    // Idle replicas tie on load: least-outstanding takes the first every time, prefix affinity
    // spreads different prompts over both by their hash.
    assert_eq!(spread_under("least-outstanding").await, (24, 0));
    let (a, b) = spread_under("prefix-affinity").await;
    assert_eq!(a + b, 24);
    assert!(a > 0 && b > 0, "prefix affinity sent {a} to a and {b} to b");
}

#[tokio::test]
async fn a_max_tokens_beyond_the_context_is_a_400_naming_the_field_not_a_wrap_or_a_429() {
    let setup = setup(
        &basic("tokensPerMinute: 1000"),
        &["acme"],
        FakeBackend::start("a").await,
    )
    .await;
    for huge in [u64::MAX, 1 << 63, 4097] {
        let response = send(&setup, "key-acme", chat_body("m", Some(huge), false)).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "max_tokens {huge}");
        let error: Value = serde_json::from_str(&text(response).await).expect("json");
        assert_eq!(error["error"]["param"], "max_tokens");
        let message = error["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("context of 4096"), "{message}");
    }
    assert!(setup.backend.seen().is_empty(), "nothing reached the engine");
}

#[tokio::test]
async fn a_request_no_wait_could_admit_is_a_400_not_a_429() {
    // 13 prompt + 10 completion = 23 tokens against 20 a minute: retrying never helps.
    let setup = setup(
        &basic("tokensPerMinute: 20"),
        &["acme"],
        FakeBackend::start("a").await,
    )
    .await;
    let response = send(&setup, "key-acme", chat_body("m", Some(10), false)).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(header(&response, "retry-after").is_none());
    let error: Value = serde_json::from_str(&text(response).await).expect("json");
    assert_eq!(error["error"]["code"], "request_exceeds_limit");
    let message = error["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("23 tokens") && message.contains("tokensPerMinute of 20"),
        "{message}"
    );
    assert!(setup.backend.seen().is_empty());
}

#[tokio::test]
async fn every_one_of_n_choices_is_reserved() {
    let setup = setup(
        &basic("tokensPerMinute: 1000"),
        &["acme"],
        FakeBackend::start("a").await,
    )
    .await;
    let mut body = chat_body("m", Some(10), false);
    body["n"] = json!(3);
    let response = send(&setup, "key-acme", body).await;
    assert_eq!(response.status(), StatusCode::OK);
    // 13 prompt + 3 × 10 completion reserved at admission.
    assert_eq!(header(&response, "x-ratelimit-remaining-tokens"), Some("957"));
}

#[tokio::test]
async fn without_max_tokens_or_a_tier_cap_the_engine_takes_the_context_left() {
    let setup = setup(&basic(""), &["acme"], FakeBackend::start("a").await).await;
    let response = send(&setup, "key-acme", chat_body("m", None, false)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let _ = text(response).await;
    let sent = &setup.backend.seen()[0].body;
    assert!(
        sent.get("max_tokens").is_none(),
        "the gateway filled in max_tokens: {sent}"
    );
    // A tier cap is sent, so the engine stops where the reservation does.
    let capped = setup_capped().await;
    let response = send(&capped, "key-acme", chat_body("m", None, false)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let _ = text(response).await;
    assert_eq!(capped.backend.seen()[0].body["max_tokens"], 32);
}

async fn setup_capped() -> Setup {
    setup(
        &basic("maxTokensPerRequest: 32"),
        &["acme"],
        FakeBackend::start("a").await,
    )
    .await
}

#[tokio::test]
async fn a_client_sending_a_body_past_the_limit_reads_the_413_instead_of_a_reset() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let setup = setup(&basic(""), &["acme"], FakeBackend::start("a").await).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let server = tokio::spawn(hearth_gateway::serve(
        listener,
        setup.state.clone(),
        std::future::pending(),
    ));
    // 5 MiB against the default limit of 4 MiB, sent whole as a client does before reading.
    let content = "x".repeat(5 << 20);
    let body = json!({"model": "m", "messages": [{"role": "user", "content": content}]}).to_string();
    for declared in [true, false] {
        let mut stream = tokio::net::TcpStream::connect(address).await.expect("connect");
        let framing = if declared {
            format!("content-length: {}\r\n", body.len())
        } else {
            "transfer-encoding: chunked\r\n".to_string()
        };
        let head = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: gateway\r\nconnection: close\r\nauthorization: Bearer key-acme\r\ncontent-type: application/json\r\n{framing}\r\n"
        );
        stream.write_all(head.as_bytes()).await.expect("head");
        let sent = if declared {
            stream.write_all(body.as_bytes()).await
        } else {
            let chunk = format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len());
            stream.write_all(chunk.as_bytes()).await
        };
        sent.unwrap_or_else(|e| panic!("the gateway reset the upload (declared length: {declared}): {e}"));
        let mut answer = Vec::new();
        let read = stream.read_to_end(&mut answer).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            read.is_ok() && answer.starts_with("HTTP/1.1 413"),
            "declared length {declared}: {read:?} {}",
            answer.lines().next().unwrap_or_default()
        );
        assert!(answer.contains("request_too_large"), "{answer}");
    }
    server.abort();
}

#[tokio::test]
async fn each_request_carries_its_models_meter_token_and_never_the_clients() {
    use hearth_tenancy::meter_tokens::{MeterCredential, MeterRootKey};
    let key = MeterRootKey::new(MeterCredential::Proxy, b"root-key-of-this-install-0123456789").expect("key");
    let base = setup(&basic(""), &["acme"], FakeBackend::start("a").await).await;
    let options = GatewayOptions {
        meter_key: Some(key.clone()),
        ..GatewayOptions::default()
    };
    let state = GatewayState::new(base.source.load().expect("config"), options);
    let mut request = chat("key-acme", chat_body("m", Some(1), false));
    request
        .headers_mut()
        .insert("x-hearth-gateway-token", "forged".parse().expect("value"));
    let response = app(state).oneshot(request).await.expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    let seen = &base.backend.seen()[0].headers;
    let token = seen.get("x-hearth-gateway-token").and_then(|v| v.to_str().ok());
    assert_eq!(token, Some(key.token_for("acme/m").as_str()));

    let without_key = setup(&basic(""), &["acme"], FakeBackend::start("b").await).await;
    let response = app(without_key.state.clone())
        .oneshot(chat("key-acme", chat_body("m", Some(1), false)))
        .await
        .expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        without_key.backend.seen()[0]
            .headers
            .get("x-hearth-gateway-token")
            .is_none()
    );
}

/// A replica that answers every request 503 and notes each `x-hearth-request-id` it got.
async fn failing_replica() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let ids = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let noted = ids.clone();
    let app = axum::Router::new().fallback(move |headers: axum::http::HeaderMap| {
        let noted = noted.clone();
        async move {
            let id = headers.get("x-hearth-request-id").and_then(|v| v.to_str().ok());
            noted
                .lock()
                .expect("lock")
                .push(id.unwrap_or_default().to_string());
            StatusCode::SERVICE_UNAVAILABLE
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, ids)
}

#[tokio::test]
async fn a_retry_on_another_replica_carries_its_own_attempt_id() {
    let (failing, failed_ids) = failing_replica().await;
    let mut setup = setup(&basic(""), &["acme"], FakeBackend::start("a").await).await;
    setup
        .source
        .backends
        .insert("m".into(), vec![failing, setup.backend.url()]);
    setup.state = GatewayState::new(setup.source.load().expect("config"), GatewayOptions::default());
    // Distinct prompts, so prefix affinity does not keep every request on one replica.
    for i in 0..16 {
        let mut body = chat_body("m", Some(3), false);
        body["messages"][0]["content"] = json!(format!("Say hi, {i}"));
        let response = send(&setup, "key-acme", body).await;
        assert_eq!(response.status(), StatusCode::OK, "the retry answers");
        if !failed_ids.lock().expect("lock").is_empty() {
            break;
        }
    }
    let failed = failed_ids.lock().expect("lock").clone();
    let [first] = failed.as_slice() else {
        panic!("one request should have tried the failing replica first: {failed:?}");
    };
    let answered: Vec<String> = setup
        .backend
        .seen()
        .iter()
        .filter_map(|seen| {
            seen.headers
                .get("x-hearth-request-id")?
                .to_str()
                .ok()
                .map(String::from)
        })
        .collect();
    assert!(!first.is_empty() && !first.contains('.'), "{first}");
    assert!(
        answered.contains(&format!("{first}.1")),
        "the retry of {first} must be billed apart from the failed attempt: {answered:?}"
    );
    // With no replica left to answer, the client learns nothing of the replicas' addresses.
    let (only_failing, _) = failing_replica().await;
    setup
        .source
        .backends
        .insert("m".into(), vec![only_failing.clone()]);
    setup.state = GatewayState::new(setup.source.load().expect("config"), GatewayOptions::default());
    let response = send(&setup, "key-acme", chat_body("m", Some(3), false)).await;
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    let body = text(response).await;
    let port = only_failing.rsplit(':').next().expect("port");
    assert!(!body.contains(port) && !body.contains("503"), "{body}");
}
