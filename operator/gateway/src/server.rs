//! The gateway's HTTP surface: `POST /v1/chat/completions`, `POST /v1/completions`,
//! `GET /v1/models`, `/metrics`, `/healthz`. A completion request goes: authenticate → read and
//! check the body → admit (atomic reservation) → wait for a slot in the model's queue → forward
//! to a replica (retried once before the first byte) → relay the response, settling the
//! reservation from the real usage when it ends.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use hearth_crds::constants::{
    HEADER_GATEWAY_TOKEN, HEADER_PRIORITY, HEADER_REQUEST_ID, HEADER_TENANT, HEADER_TIER,
};
use hearth_tenancy::meter_tokens::MeterRootKey;
use tracing::Instrument;

use super::admission::Admission;
use super::auth::{authenticate, bearer_token, fingerprint};
use super::config::{Config, ConfigHandle, ModelRoute, TenantPolicy, Variant};
use super::error::GatewayError;
use super::limiter::{Limiter, Unanswered};
use super::metrics::GatewayMetrics;
use super::proxy::{
    Answer, HttpClient, Outgoing, Upstream, drop_response_header, engine_headers, forward, http_client,
};
use super::queue::Ticket;
use super::request::{Endpoint, ParsedRequest, parse};
use super::router::{self, Replica, RouteRequest, default_router};
use super::runtime::Runtimes;
use super::scheduler::{Permit, QueueLimits, Slot};
use super::stream::{Completion, Mode, relay};
use super::wake::Waker;

/// Tunables of a gateway.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// Largest request body accepted (413 beyond).
    pub max_body_bytes: usize,
    /// Queue bounds per model.
    pub queue: QueueLimits,
    /// Longest wait for an engine's response head.
    pub upstream_timeout: Duration,
    /// Chooses the replica of a model that takes a request.
    pub router: Arc<dyn router::Router>,
    /// Root key of the meters' proxy tokens; each request carries its model's token.
    pub meter_key: Option<MeterRootKey>,
}

impl Default for GatewayOptions {
    fn default() -> Self {
        Self {
            max_body_bytes: 4 << 20,
            queue: QueueLimits::default(),
            upstream_timeout: Duration::from_secs(600),
            router: default_router(),
            meter_key: None,
        }
    }
}

struct Shared {
    config: ConfigHandle,
    limiter: Arc<dyn Limiter>,
    runtimes: Runtimes,
    waker: Option<Arc<Waker>>,
    ready: AtomicBool,
    metrics: GatewayMetrics,
    client: HttpClient,
    options: GatewayOptions,
}

/// Everything a gateway serves with; cheap to clone.
#[derive(Clone)]
pub struct GatewayState {
    shared: Arc<Shared>,
}

impl GatewayState {
    /// A gateway serving `config`.
    pub fn new(config: Config, options: GatewayOptions) -> Self {
        Self::with_handle(ConfigHandle::new(config), options)
    }

    /// A gateway reading its Config from `handle` (shared with whatever swaps it), limiting in
    /// memory, with no scale from zero: a model without ready replicas is answered 503 at once.
    pub fn with_handle(handle: ConfigHandle, options: GatewayOptions) -> Self {
        Self::with_parts(handle, options, Arc::new(Admission::new()), None)
    }

    /// [`Self::with_handle`] with its admission state in `limiter` (Redis for limits shared by
    /// several replicas).
    pub fn with_limiter(handle: ConfigHandle, options: GatewayOptions, limiter: Arc<dyn Limiter>) -> Self {
        Self::with_parts(handle, options, limiter, None)
    }

    /// [`Self::with_handle`] waking models at zero with `waker`.
    pub fn with_waker(handle: ConfigHandle, options: GatewayOptions, waker: Option<Arc<Waker>>) -> Self {
        Self::with_parts(handle, options, Arc::new(Admission::new()), waker)
    }

    /// A gateway with every part chosen. It reports ready (`/readyz`) from the start; a source
    /// still syncing calls [`Self::set_ready`] with `false` first.
    pub fn with_parts(
        handle: ConfigHandle,
        options: GatewayOptions,
        limiter: Arc<dyn Limiter>,
        waker: Option<Arc<Waker>>,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                config: handle,
                limiter,
                runtimes: Runtimes::new(options.queue),
                waker,
                ready: AtomicBool::new(true),
                metrics: GatewayMetrics::new(),
                client: http_client(),
                options,
            }),
        }
    }

    /// Swaps in a new Config; requests in flight finish on the one they started with.
    pub fn update(&self, config: Config) {
        self.shared.config.store(config);
    }

    /// The Config handle.
    pub fn config(&self) -> &ConfigHandle {
        &self.shared.config
    }

    /// The metrics.
    pub fn metrics(&self) -> &GatewayMetrics {
        &self.shared.metrics
    }

    /// Marks the gateway ready or not for `/readyz` (not ready until its source has synced).
    pub fn set_ready(&self, ready: bool) {
        self.shared.ready.store(ready, Ordering::Release);
    }
}

/// The gateway's public routes: the OpenAI API and the kubelet's probes. Metrics, which name
/// tenants and replica addresses, are on [`metrics_app`]'s own port.
pub fn app(state: GatewayState) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(list_models))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .with_state(state)
}

/// `/metrics` alone, served on the metrics port.
pub fn metrics_app(state: GatewayState) -> Router {
    Router::new().route("/metrics", get(metrics)).with_state(state)
}

async fn metrics(State(state): State<GatewayState>) -> impl IntoResponse {
    let metrics = &state.shared.metrics;
    // Gauges are read from the live state at scrape time, so they are never stale.
    metrics.replica_in_flight.reset();
    state.shared.runtimes.for_each(|model, replicas, scheduler| {
        for replica in replicas {
            metrics
                .replica_in_flight
                .with_label_values(&[model, &replica.url])
                .set(replica.in_flight() as i64);
        }
        let (_, queued) = scheduler.load();
        metrics.queue_depth.with_label_values(&[model]).set(queued as i64);
    });
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics.render(),
    )
}

async fn readyz(State(state): State<GatewayState>) -> Response {
    if state.shared.ready.load(Ordering::Acquire) {
        "ok".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "configuration not synced yet").into_response()
    }
}

async fn list_models(State(state): State<GatewayState>, headers: HeaderMap) -> Response {
    let config = state.shared.config.load();
    let tenant = match authenticate(&config, bearer_token(&headers)) {
        Ok(tenant) => tenant,
        Err(error) => return error.into_response(),
    };
    let data: Vec<_> = config
        .models
        .values()
        .filter(|m| m.allows(&tenant.tier))
        .map(|m| serde_json::json!({"id": m.served_name, "object": "model", "created": 0, "owned_by": "hearth"}))
        .collect();
    axum::Json(serde_json::json!({"object": "list", "data": data})).into_response()
}

async fn chat_completions(State(state): State<GatewayState>, headers: HeaderMap, body: Body) -> Response {
    handle(state, Endpoint::Chat, headers, body).await
}

async fn completions(State(state): State<GatewayState>, headers: HeaderMap, body: Body) -> Response {
    handle(state, Endpoint::Completions, headers, body).await
}

fn new_request_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Labels of a request known so far: `(model, tier)`, both bounded.
struct Labels {
    model: String,
    tier: String,
}

async fn handle(state: GatewayState, endpoint: Endpoint, headers: HeaderMap, body: Body) -> Response {
    let request_id = new_request_id();
    let span = tracing::info_span!("request", request_id = %request_id, endpoint = endpoint.path(), tenant = tracing::field::Empty);
    let mut labels = Labels {
        model: "unknown".into(),
        tier: "none".into(),
    };
    let result = serve(&state, endpoint, headers, body, &request_id, &mut labels)
        .instrument(span)
        .await;
    let mut response = result.unwrap_or_else(|error| {
        if let GatewayError::RateLimited { kind, .. } = &error {
            state
                .shared
                .metrics
                .rate_limited
                .with_label_values(&[&labels.tier, kind.label()])
                .inc();
        }
        tracing::info!(request_id = %request_id, category = error.category(), "request refused");
        error.into_response()
    });
    let code = response.status().as_u16().to_string();
    state
        .shared
        .metrics
        .requests
        .with_label_values(&[&labels.model, &labels.tier, &code])
        .inc();
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response
            .headers_mut()
            .insert(HeaderName::from_static("x-request-id"), value);
    }
    response
}

/// How much of a body past the limit is still read and dropped, so a client that sends its
/// whole body before reading (most do) gets the 413 instead of a reset connection; a longer
/// body is cut off there.
const DRAIN_BYTES: usize = 64 << 20;

/// Reads the body, up to `limit` bytes; past it (declared or sent), the rest is drained (up to
/// [`DRAIN_BYTES`]) and the request refused with 413.
async fn read_body(body: Body, headers: &HeaderMap, limit: usize) -> Result<bytes::Bytes, GatewayError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let mut too_large = declared.is_some_and(|n| n > limit);
    let mut kept = Vec::new();
    let mut received = 0usize;
    let mut frames = body.into_data_stream();
    while let Some(frame) = frames.next().await {
        let chunk = frame.map_err(|error| GatewayError::InvalidRequest {
            message: format!("The request body could not be read: {error}"),
            param: None,
        })?;
        received = received.saturating_add(chunk.len());
        too_large |= received > limit;
        if !too_large {
            kept.extend_from_slice(&chunk);
        } else if received > limit.saturating_add(DRAIN_BYTES) {
            break;
        }
    }
    if too_large {
        return Err(GatewayError::BodyTooLarge { limit });
    }
    Ok(bytes::Bytes::from(kept))
}

/// The completion bound: the request's `max_tokens` (never above the tier's cap or the model's
/// context), else the tier's cap (sent to the engine as `max_tokens`), else the model's context
/// (the engine then takes what the prompt leaves of it).
fn completion_bound(
    parsed: &ParsedRequest,
    tenant: &TenantPolicy,
    route: &ModelRoute,
) -> Result<CompletionBound, GatewayError> {
    let cap = tenant.limits.max_tokens_per_request;
    let context = u64::from(route.max_context_tokens);
    match (parsed.max_tokens, cap) {
        (Some((field, requested)), Some(limit)) if requested > u64::from(limit) => {
            Err(GatewayError::MaxTokensTooLarge {
                field,
                requested,
                limit,
            })
        }
        (Some((field, requested)), _) if requested > context => Err(GatewayError::InvalidRequest {
            message: format!(
                "{field} is {requested}, above the model's context of {context} tokens (prompt included)."
            ),
            param: Some(field),
        }),
        (Some((_, requested)), _) => Ok(CompletionBound {
            tokens: requested,
            tier_cap: None,
        }),
        (None, Some(limit)) => Ok(CompletionBound {
            tokens: u64::from(limit),
            tier_cap: Some(u64::from(limit)),
        }),
        (None, None) => Ok(CompletionBound {
            tokens: context,
            tier_cap: None,
        }),
    }
}

/// How many completion tokens a request is reserved for, and the tier's cap when that is what
/// bounds it.
struct CompletionBound {
    tokens: u64,
    tier_cap: Option<u64>,
}

/// Refuses with 400 a reservation no wait could admit: more tokens than the tier grants in a
/// minute or a month.
fn check_fits(tokens: u64, tenant: &TenantPolicy) -> Result<(), GatewayError> {
    let limits = [
        ("tokensPerMinute", tenant.limits.tokens_per_minute),
        ("tokensPerMonth", tenant.limits.tokens_per_month),
    ];
    for (limit_name, limit) in limits {
        if let Some(limit) = limit
            && tokens > limit
        {
            return Err(GatewayError::NeverFits {
                tokens,
                limit,
                limit_name,
            });
        }
    }
    Ok(())
}

/// A request that passed authentication and parsing, with the model it may call.
struct Accepted {
    tenant: Arc<TenantPolicy>,
    parsed: ParsedRequest,
    /// The completion bound of each of the `n` choices.
    completion: CompletionBound,
    /// Tokens reserved: the prompt bound plus `n` completion bounds.
    tokens: u64,
}

/// One completion request, from the client's headers to the relayed response. Every refusal
/// after admission drops the [`Unanswered`] reservation, which gives its tokens back.
async fn serve(
    state: &GatewayState,
    endpoint: Endpoint,
    headers: HeaderMap,
    body: Body,
    request_id: &str,
    labels: &mut Labels,
) -> Result<Response, GatewayError> {
    let started = Instant::now();
    let shared = &state.shared;
    let config = shared.config.load();
    let (request, wake) = accept(shared, &config, endpoint, &headers, body, labels).await?;
    let reservation = Unanswered::new(shared.limiter.admit(&request.tenant, request.tokens).await?);
    let config = match wake {
        Some(variant) => wake_and_wait(shared, &request.parsed.model, &variant).await?,
        None => config.clone(),
    };
    let route = find_route(&config, &request.parsed.model, &request.tenant)?;
    let permit = queue_for_slot(shared, route, &request.tenant).await?;
    let answer = dispatch(shared, route, &request, endpoint, &headers, request_id).await?;
    shared
        .metrics
        .first_byte
        .with_label_values(&[&route.served_name])
        .observe(started.elapsed().as_secs_f64());
    let completion = Completion {
        reservation: reservation.answered(),
        permit: Some(permit),
        in_flight: None,
        metrics: shared.metrics.clone(),
        model: route.served_name.clone(),
        tenant: request.tenant.id.clone(),
        started,
        usage: None,
        succeeded: false,
    };
    Ok(respond(answer, &request.parsed, completion))
}

/// Authenticates, reads and parses the body, finds the model the tenant may call and bounds the
/// completion; also says which variant to wake when the model has no replica.
async fn accept(
    shared: &Shared,
    config: &Config,
    endpoint: Endpoint,
    headers: &HeaderMap,
    body: Body,
    labels: &mut Labels,
) -> Result<(Accepted, Option<Variant>), GatewayError> {
    let tenant = authenticate(config, bearer_token(headers))?;
    tracing::Span::current().record("tenant", fingerprint(&tenant.id));
    labels.tier = tenant.tier.name.to_string();
    let bytes = read_body(body, headers, shared.options.max_body_bytes).await?;
    let parsed = parse(endpoint, &bytes)?;
    let route = find_route(config, &parsed.model, &tenant)?;
    labels.model = route.served_name.clone();
    let completion = completion_bound(&parsed, &tenant, route)?;
    let tokens = parsed
        .prompt_tokens_bound
        .saturating_add(completion.tokens.saturating_mul(parsed.choices));
    check_fits(tokens, &tenant)?;
    let wake = cold_start(route, shared.waker.as_ref())?;
    let accepted = Accepted {
        tenant,
        parsed,
        completion,
        tokens,
    };
    Ok((accepted, wake))
}

/// Asks for a replica of `variant` and waits until the served name has one.
async fn wake_and_wait(shared: &Shared, model: &str, variant: &Variant) -> Result<Arc<Config>, GatewayError> {
    let Some(waker) = &shared.waker else {
        return Err(GatewayError::NoReplicas(model.to_string()));
    };
    waker
        .wake_and_wait(&shared.config, model, variant)
        .await
        .map_err(|error| {
            shared
                .metrics
                .shed
                .with_label_values(&[model, error.label()])
                .inc();
            GatewayError::Starting {
                model: model.to_string(),
                reason: error.label(),
                retry_after: STARTING_RETRY_AFTER,
            }
        })
}

/// Waits for a slot in the model's queue, by priority and fair share.
async fn queue_for_slot(
    shared: &Shared,
    route: &ModelRoute,
    tenant: &TenantPolicy,
) -> Result<Permit, GatewayError> {
    let scheduler = shared.runtimes.scheduler(route);
    let ticket = Ticket {
        tenant: tenant.id.clone(),
        tier: tenant.tier.name.clone(),
        priority: tenant.tier.priority,
        weight: tenant.tier.weight,
    };
    let queued_at = Instant::now();
    let permit = match scheduler.acquire(&ticket) {
        Ok(Slot::Ready(permit)) => Ok(permit),
        Ok(Slot::Queued(waiting)) => waiting.wait().await,
        Err(shed) => Err(shed),
    };
    let permit = permit.map_err(|shed| {
        shared
            .metrics
            .shed
            .with_label_values(&[&route.served_name, shed.label()])
            .inc();
        GatewayError::Overloaded {
            model: route.served_name.clone(),
            reason: shed.label(),
            retry_after: scheduler.limits().max_wait.min(Duration::from_secs(30)),
        }
    })?;
    shared
        .metrics
        .queue_wait
        .with_label_values(&[route.served_name.as_str(), &*tenant.tier.name])
        .observe(queued_at.elapsed().as_secs_f64());
    Ok(permit)
}

/// Chooses the variant and sends the request to one of its replicas, with the gateway's
/// attribution headers.
async fn dispatch(
    shared: &Shared,
    route: &ModelRoute,
    request: &Accepted,
    endpoint: Endpoint,
    headers: &HeaderMap,
    request_id: &str,
) -> Result<Answer, GatewayError> {
    let Some(choice) = shared.runtimes.choose(route, &request.tenant.tier.name) else {
        return Err(GatewayError::NoReplicas(route.served_name.clone()));
    };
    if let (Some(cold), Some(waker)) = (&choice.cold, &shared.waker) {
        waker.nudge(cold);
    }
    tracing::debug!(variant = %choice.variant, "variant chosen");
    let tenant = &request.tenant;
    let mut hearth = vec![
        (HEADER_TENANT, tenant.id.to_string()),
        (HEADER_TIER, tenant.tier.name.to_string()),
        (HEADER_PRIORITY, tenant.tier.priority.to_string()),
        (HEADER_REQUEST_ID, request_id.to_string()),
    ];
    if let Some(key) = &shared.options.meter_key {
        hearth.push((HEADER_GATEWAY_TOKEN, key.token_for(&choice.variant)));
    }
    let upstream_headers = engine_headers(headers, &hearth);
    let body = bytes::Bytes::from(request.parsed.engine_body(request.completion.tier_cap));
    let upstream = Upstream {
        client: &shared.client,
        router: &*shared.options.router,
        timeout: shared.options.upstream_timeout,
    };
    let outgoing = Outgoing {
        endpoint,
        headers: &upstream_headers,
        body: &body,
        route: RouteRequest {
            affinity_key: &request.parsed.affinity_key,
        },
    };
    let on_failure = |_: &Replica, _: &str| {
        shared
            .metrics
            .upstream_failures
            .with_label_values(&[&route.served_name])
            .inc()
    };
    forward(upstream, &choice.replicas, outgoing, &on_failure).await
}

/// The client's response: the engine's status and headers (minus hop-by-hop ones, plus the
/// rate-limit headers) over a body relayed as it comes, which settles `completion` at its end.
fn respond(answer: Answer, parsed: &ParsedRequest, mut completion: Completion) -> Response {
    let (parts, upstream_body) = answer.response.into_parts();
    let is_sse = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let mode = if parsed.stream && is_sse {
        Mode::Sse {
            strip_usage: !parsed.include_usage,
        }
    } else {
        Mode::Json
    };
    let mut response_headers = HeaderMap::new();
    for (name, value) in &parts.headers {
        if !drop_response_header(name) {
            response_headers.append(name.clone(), value.clone());
        }
    }
    completion.reservation.headers().write(&mut response_headers);
    completion.in_flight = Some(answer.in_flight);
    completion.succeeded = parts.status.is_success();
    let mut response = Response::new(relay(upstream_body, mode, completion));
    *response.status_mut() = parts.status;
    *response.headers_mut() = response_headers;
    response
}

/// `Retry-After` of a request refused because its model is still starting from zero.
pub const STARTING_RETRY_AFTER: Duration = Duration::from_secs(10);

/// The route of `model` if the tenant's tier may call it.
fn find_route<'c>(
    config: &'c Config,
    model: &str,
    tenant: &TenantPolicy,
) -> Result<&'c ModelRoute, GatewayError> {
    config
        .models
        .get(model)
        .filter(|route| route.allows(&tenant.tier))
        .ok_or_else(|| GatewayError::ModelNotFound(model.to_string()))
}

/// For a served name with no ready replica: the variant to wake (the heaviest one the gateway
/// may scale), or 503 at once when there is no waker or no variant it may scale. `None` when
/// the name has replicas.
fn cold_start(route: &ModelRoute, waker: Option<&Arc<Waker>>) -> Result<Option<Variant>, GatewayError> {
    if route.replica_count() > 0 {
        return Ok(None);
    }
    waker
        .and_then(|_| {
            route
                .variants
                .iter()
                .filter(|v| v.scale.is_some())
                .max_by_key(|v| v.weight)
        })
        .map(|v| Some(v.clone()))
        .ok_or_else(|| GatewayError::NoReplicas(route.served_name.clone()))
}

/// Answers 404 in OpenAI's shape for unknown paths.
pub async fn not_found() -> Response {
    let body = serde_json::json!({"error": {"message": "Unknown path.", "type": "invalid_request_error", "param": null, "code": "not_found"}});
    (StatusCode::NOT_FOUND, axum::Json(body)).into_response()
}
