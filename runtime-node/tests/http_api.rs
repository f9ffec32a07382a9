//! The HTTP layer against a fake engine, driven through `app(state)` with `oneshot` (no socket).

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use hearth_engine::engine::{
    Engine, EngineError, FinishReason, GenerateRequest, GenerationEvent, GenerationStream, Prompt,
    TokenLogprob, Usage,
};
use hearth_engine::server::{AppState, app};
use http_body_util::BodyExt;
use prometheus::Registry;
use serde_json::{Value, json};
use tower::ServiceExt;

const MODEL: &str = "fake-model";
const LIMIT: usize = 64;

/// Answers every request with "Hello, world" in three pieces ("Hello, world#7" when seeded
/// with 7, so choices can be told apart); prompt tokens = words.
#[derive(Default)]
struct FakeEngine {
    last: Mutex<Option<GenerateRequest>>,
    seeds: Mutex<Vec<Option<u64>>>,
    /// Its scheduler has stopped.
    dead: bool,
}

impl Engine for FakeEngine {
    fn model_id(&self) -> &str {
        MODEL
    }

    fn max_context_tokens(&self) -> usize {
        LIMIT
    }

    fn is_ready(&self) -> bool {
        !self.dead
    }

    fn is_alive(&self) -> bool {
        !self.dead
    }

    fn submit(&self, request: GenerateRequest) -> Result<GenerationStream, EngineError> {
        let prompt_tokens = match &request.prompt {
            Prompt::Text(t) => t.split_whitespace().count(),
            Prompt::Chat(m) => m.iter().map(|m| m.content.split_whitespace().count() + 2).sum(),
            Prompt::Tokens(ids) => ids.len(),
        };
        let max_tokens = request.max_tokens.unwrap_or(LIMIT - prompt_tokens);
        if prompt_tokens + max_tokens > LIMIT {
            return Err(EngineError::ContextLengthExceeded {
                prompt_tokens,
                max_tokens,
                limit: LIMIT,
            });
        }
        let last = match request.sampling.seed {
            Some(seed) => format!("world#{seed}"),
            None => "world".to_string(),
        };
        let pieces = ["Hello", ", ", last.as_str()];
        let n = pieces.len().min(max_tokens);
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        for piece in &pieces[..n] {
            let logprobs = match request.logprobs {
                Some(top) => vec![TokenLogprob {
                    token: piece.to_string(),
                    logprob: -0.5,
                    top: (0..top).map(|i| (format!("alt{i}"), -1.0 - i as f32)).collect(),
                }],
                None => Vec::new(),
            };
            let _ = tx.send(GenerationEvent::Delta {
                text: piece.to_string(),
                logprobs,
            });
        }
        let reason = if n < pieces.len() {
            FinishReason::Length
        } else {
            FinishReason::Stop
        };
        let _ = tx.send(GenerationEvent::Finished {
            reason,
            usage: Usage {
                prompt_tokens,
                completion_tokens: n,
            },
        });
        self.seeds.lock().expect("lock").push(request.sampling.seed);
        *self.last.lock().expect("lock") = Some(request);
        Ok(GenerationStream {
            prompt_tokens,
            events: rx,
        })
    }
}

fn state(engine: Arc<FakeEngine>) -> AppState {
    AppState::new(engine, Registry::new(), 1024)
}

async fn send(engine: Arc<FakeEngine>, request: Request<Body>) -> (StatusCode, String) {
    let response = app(state(engine)).oneshot(request).await.expect("infallible");
    let status = response.status();
    let bytes = response.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

fn post(uri: &str, body: Value) -> Request<Body> {
    Request::post(uri)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .expect("request")
}

fn chat(extra: Value) -> Value {
    let mut body = json!({"model": MODEL, "messages": [{"role": "user", "content": "Say hello"}]});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    body
}

fn json_body(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The JSON chunks of an SSE body, checking it ends with `[DONE]`.
fn sse_chunks(body: &str) -> Vec<Value> {
    let events: Vec<&str> = body
        .split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            e.strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not an SSE data event: {e:?}"))
        })
        .collect();
    assert_eq!(events.last(), Some(&"[DONE]"), "{body}");
    events[..events.len() - 1].iter().map(|e| json_body(e)).collect()
}

#[tokio::test]
async fn lists_the_served_model() {
    let (status, body) = send(
        Arc::default(),
        Request::get("/v1/models").body(Body::empty()).expect("req"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let body = json_body(&body);
    assert_eq!(body["object"], "list");
    assert_eq!(body["data"][0]["id"], MODEL);
    assert_eq!(body["data"][0]["max_model_len"], LIMIT);
}

#[tokio::test]
async fn chat_completion_with_usage() {
    let (status, body) = send(Arc::default(), post("/v1/chat/completions", chat(json!({})))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let body = json_body(&body);
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], MODEL);
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert_eq!(body["choices"][0]["message"]["content"], "Hello, world");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["prompt_tokens"], 4);
    assert_eq!(body["usage"]["completion_tokens"], 3);
    assert_eq!(body["usage"]["total_tokens"], 7);
    assert!(body["id"].as_str().is_some_and(|id| id.starts_with("chatcmpl-")));
}

#[tokio::test]
async fn chat_stream_has_role_deltas_finish_usage_and_done() {
    let request = chat(json!({"stream": true, "stream_options": {"include_usage": true}}));
    let (status, body) = send(Arc::default(), post("/v1/chat/completions", request)).await;
    assert_eq!(status, StatusCode::OK);
    let events: Vec<&str> = body
        .split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            e.strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not an SSE data event: {e:?}"))
        })
        .collect();
    assert_eq!(events.last(), Some(&"[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(|e| json_body(e)).collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Hello, world");
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    let usage = &chunks[chunks.len() - 1];
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 3);
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk"));
}

#[tokio::test]
async fn completion_defaults_and_length_finish() {
    let body = json!({"model": MODEL, "prompt": "Once upon a time", "max_tokens": 2});
    let (status, body) = send(Arc::default(), post("/v1/completions", body)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let body = json_body(&body);
    assert_eq!(body["object"], "text_completion");
    assert_eq!(body["choices"][0]["text"], "Hello, ");
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    assert_eq!(body["usage"]["prompt_tokens"], 4);
}

#[tokio::test]
async fn completion_stream_ends_with_done() {
    let body = json!({"model": MODEL, "prompt": "Hi", "stream": true});
    let (status, body) = send(Arc::default(), post("/v1/completions", body)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.ends_with("data: [DONE]\n\n"), "{body}");
    assert!(body.contains("\"text\":\"world\""), "{body}");
    assert!(!body.contains("\"usage\""), "usage only when asked for: {body}");
}

#[tokio::test]
async fn context_length_error_names_both_numbers() {
    let (status, body) = send(
        Arc::default(),
        post("/v1/chat/completions", chat(json!({"max_tokens": 100}))),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let body = json_body(&body);
    assert_eq!(body["error"]["code"], "context_length_exceeded");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    let message = body["error"]["message"].as_str().expect("message");
    assert!(
        message.contains("64") && message.contains("104") && message.contains("100"),
        "{message}"
    );
}

#[tokio::test]
async fn unknown_model_is_404() {
    let mut request = chat(json!({}));
    request["model"] = json!("gpt-4");
    let (status, body) = send(Arc::default(), post("/v1/chat/completions", request)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(json_body(&body)["error"]["code"], "model_not_found");
}

#[tokio::test]
async fn malformed_json_is_an_openai_error() {
    let request = Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Body::from("{not json"))
        .expect("request");
    let (status, body) = send(Arc::default(), request).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(json_body(&body)["error"]["type"], "invalid_request_error");
}

#[tokio::test]
async fn oversized_body_is_413() {
    let big = "word ".repeat(400);
    let (status, body) = send(
        Arc::default(),
        post("/v1/completions", json!({"model": MODEL, "prompt": big})),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(json_body(&body)["error"]["message"].is_string());
}

#[tokio::test]
async fn bad_sampling_parameter_names_the_field() {
    let (status, body) = send(
        Arc::default(),
        post("/v1/chat/completions", chat(json!({"temperature": 5}))),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(json_body(&body)["error"]["param"], "temperature");
}

#[tokio::test]
async fn priority_header_reaches_the_engine() {
    let engine = Arc::new(FakeEngine::default());
    let mut request = post(
        "/v1/chat/completions",
        chat(json!({"temperature": 0, "seed": 5, "stop": ["\n"], "top_k": 3})),
    );
    request
        .headers_mut()
        .insert("x-hearth-priority", "7".parse().expect("header"));
    let (status, _) = send(engine.clone(), request).await;
    assert_eq!(status, StatusCode::OK);
    let seen = engine.last.lock().expect("lock").clone().expect("a request");
    assert_eq!(seen.priority, 7);
    assert_eq!(seen.sampling.seed, Some(5));
    assert_eq!(seen.sampling.top_k, 3);
    assert_eq!(seen.stop, vec!["\n".to_string()]);

    let mut request = post("/v1/chat/completions", chat(json!({})));
    request
        .headers_mut()
        .insert("x-hearth-priority", "high".parse().expect("header"));
    let (status, _) = send(engine, request).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn chat_logprobs_have_openai_shape() {
    let request = chat(json!({"logprobs": true, "top_logprobs": 2}));
    let (status, body) = send(Arc::default(), post("/v1/chat/completions", request)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let content = &json_body(&body)["choices"][0]["logprobs"]["content"];
    assert_eq!(content.as_array().map(Vec::len), Some(3));
    assert_eq!(content[0]["token"], "Hello");
    assert_eq!(content[0]["logprob"], -0.5);
    assert_eq!(content[0]["bytes"], json!(b"Hello".to_vec()));
    assert_eq!(content[0]["top_logprobs"][1]["token"], "alt1");

    let (_, body) = send(Arc::default(), post("/v1/chat/completions", chat(json!({})))).await;
    assert!(
        json_body(&body)["choices"][0]["logprobs"].is_null(),
        "absent unless requested"
    );
    let request = chat(json!({"logprobs": true, "top_logprobs": 21}));
    let (status, _) = send(Arc::default(), post("/v1/chat/completions", request)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn completion_logprobs_have_legacy_shape() {
    let body = json!({"model": MODEL, "prompt": "Hi there", "logprobs": 1, "echo": true});
    let (status, body) = send(Arc::default(), post("/v1/completions", body)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let choice = &json_body(&body)["choices"][0];
    assert_eq!(choice["text"], "Hi thereHello, world");
    let logprobs = &choice["logprobs"];
    assert_eq!(logprobs["tokens"], json!(["Hello", ", ", "world"]));
    assert_eq!(logprobs["token_logprobs"], json!([-0.5, -0.5, -0.5]));
    assert_eq!(
        logprobs["text_offset"],
        json!([8, 13, 15]),
        "offsets count the echoed prompt"
    );
    assert_eq!(logprobs["top_logprobs"][0], json!({"alt0": -1.0}));
}

#[tokio::test]
async fn health_ready_and_metrics() {
    for path in ["/health", "/ready", "/metrics"] {
        let (status, _) = send(
            Arc::default(),
            Request::get(path).body(Body::empty()).expect("req"),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn an_engine_whose_scheduler_stopped_fails_health_so_the_pod_restarts() {
    let dead = Arc::new(FakeEngine {
        dead: true,
        ..FakeEngine::default()
    });
    for path in ["/health", "/ready"] {
        let (status, body) = send(dead.clone(), Request::get(path).body(Body::empty()).expect("req")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert!(json_body(&body)["error"]["message"].is_string(), "{body}");
    }
}

#[tokio::test]
async fn n_choices_are_seeded_apart_and_count_the_prompt_once() {
    let engine = Arc::new(FakeEngine::default());
    let request = chat(json!({"n": 3, "temperature": 0.8, "seed": 7}));
    let (status, body) = send(engine.clone(), post("/v1/chat/completions", request)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let body = json_body(&body);
    let choices = body["choices"].as_array().expect("choices");
    assert_eq!(choices.len(), 3);
    for (i, choice) in choices.iter().enumerate() {
        assert_eq!(choice["index"], i);
        // Choice i samples with seed + i: reproducible one by one.
        assert_eq!(choice["message"]["content"], format!("Hello, world#{}", 7 + i));
        assert_eq!(choice["finish_reason"], "stop");
    }
    assert_eq!(
        *engine.seeds.lock().expect("lock"),
        vec![Some(7), Some(8), Some(9)]
    );
    assert_eq!(body["usage"]["prompt_tokens"], 4, "the prompt is counted once");
    assert_eq!(body["usage"]["completion_tokens"], 9, "completions are summed");
    assert_eq!(body["usage"]["total_tokens"], 13);

    let request =
        json!({"model": MODEL, "prompt": "Once upon a time", "n": 2, "max_tokens": 2, "echo": true});
    let (status, body) = send(Arc::default(), post("/v1/completions", request)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let body = json_body(&body);
    assert_eq!(body["choices"][0]["text"], "Once upon a timeHello, ");
    assert_eq!(body["choices"][1]["index"], 1);
    assert_eq!(body["choices"][1]["text"], "Once upon a timeHello, ");
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 4, "completion_tokens": 4, "total_tokens": 8})
    );
}

#[tokio::test]
async fn streamed_choices_carry_their_index_and_share_one_usage_chunk() {
    let request = chat(json!({"n": 2, "seed": 1, "stream": true, "stream_options": {"include_usage": true}}));
    let (status, body) = send(Arc::default(), post("/v1/chat/completions", request)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let chunks = sse_chunks(&body);
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk"));
    for index in 0..2usize {
        let mine: Vec<&Value> = chunks
            .iter()
            .flat_map(|c| c["choices"].as_array().into_iter().flatten())
            .filter(|choice| choice["index"] == index)
            .collect();
        assert_eq!(
            mine[0]["delta"]["role"], "assistant",
            "each choice opens with the role"
        );
        let text: String = mine
            .iter()
            .filter_map(|c| c["delta"]["content"].as_str())
            .collect();
        assert_eq!(text, format!("Hello, world#{}", 1 + index));
        let finishes: Vec<&&Value> = mine.iter().filter(|c| !c["finish_reason"].is_null()).collect();
        assert_eq!(finishes.len(), 1, "one finish per choice");
        assert_eq!(finishes[0]["finish_reason"], "stop");
    }
    let usage: Vec<&Value> = chunks.iter().filter(|c| !c["usage"].is_null()).collect();
    assert_eq!(usage.len(), 1, "one usage chunk: {body}");
    assert_eq!(usage[0]["choices"], json!([]));
    assert_eq!(
        usage[0]["usage"],
        json!({"prompt_tokens": 4, "completion_tokens": 6, "total_tokens": 10})
    );
    assert_eq!(
        chunks.last(),
        Some(usage[0]),
        "usage comes after every choice finished"
    );

    let request = json!({"model": MODEL, "prompt": "Hi", "n": 2, "stream": true, "logprobs": 0});
    let (status, body) = send(Arc::default(), post("/v1/completions", request)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let chunks = sse_chunks(&body);
    for index in 0..2usize {
        let offsets: Vec<&Value> = chunks
            .iter()
            .map(|c| &c["choices"][0])
            .filter(|c| c["index"] == index && c["text"] != "")
            .map(|c| &c["logprobs"]["text_offset"][0])
            .collect();
        assert_eq!(
            offsets,
            [&json!(0), &json!(5), &json!(7)],
            "offsets are per choice"
        );
    }
}

#[tokio::test]
async fn n_beyond_the_limit_names_the_field_and_the_limit() {
    for (uri, body) in [
        ("/v1/chat/completions", chat(json!({"n": 17}))),
        (
            "/v1/completions",
            json!({"model": MODEL, "prompt": "Hi", "n": 17}),
        ),
        ("/v1/chat/completions", chat(json!({"n": 0}))),
    ] {
        let engine = Arc::new(FakeEngine::default());
        let (status, text) = send(engine.clone(), post(uri, body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {text}");
        let error = &json_body(&text)["error"];
        assert_eq!(error["param"], "n");
        assert_eq!(error["type"], "invalid_request_error");
        assert!(
            error["message"].as_str().is_some_and(|m| m.contains("16")),
            "{text}"
        );
        assert!(
            engine.seeds.lock().expect("lock").is_empty(),
            "nothing reached the engine"
        );
    }
}
