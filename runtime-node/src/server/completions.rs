//! `POST /v1/completions`.

use std::cell::Cell;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};

use super::chat::rejection;
use super::generation::{ChunkFormat, collect, sse};
use super::{AppState, priority, response_id, unix_now};
use crate::engine::{FinishReason, Prompt, TokenLogprob, Usage};
use crate::openai::ApiError;
use crate::openai::completions::{
    Completion, CompletionChoice, CompletionRequest, DEFAULT_MAX_TOKENS, completion_logprobs,
};

#[tracing::instrument(skip_all, fields(id))]
pub async fn completions(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<CompletionRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(request) = body.map_err(rejection)?;
    state.check_model(&request.model)?;
    let id = response_id("cmpl");
    tracing::Span::current().record("id", id.as_str());
    let prompt = request.engine_prompt()?;
    let echo = match (&prompt, request.echo) {
        (Prompt::Text(text), true) => Some(text.clone()),
        (_, true) => return Err(ApiError::invalid("`echo` needs a text prompt", Some("echo"))),
        _ => None,
    };
    if echo.is_some() && request.params.stream {
        return Err(ApiError::invalid(
            "`echo` is not supported with `stream`",
            Some("echo"),
        ));
    }
    let generate = request
        .params
        .to_request(&id, prompt, Some(DEFAULT_MAX_TOKENS), priority(&headers)?)?;
    let with_logprobs = generate.logprobs.is_some();
    let stream = state.engine.submit(generate)?;
    let model = state.engine.model_id().to_string();
    let created = unix_now();
    if request.params.stream {
        let format = CompletionChunks {
            id,
            model,
            created,
            with_logprobs,
            offset: Cell::new(0),
        };
        return Ok(sse(stream, format, request.params.include_usage()).into_response());
    }
    let answer = collect(stream).await?;
    let offset = echo.as_ref().map_or(0, |p| p.chars().count());
    let logprobs = with_logprobs.then(|| completion_logprobs(&answer.logprobs, offset));
    let text = match echo {
        Some(prompt) => prompt + &answer.text,
        None => answer.text,
    };
    Ok(Json(Completion {
        id,
        object: "text_completion".into(),
        created,
        model,
        choices: vec![CompletionChoice {
            index: 0,
            text,
            finish_reason: Some(answer.reason.as_str().into()),
            logprobs,
        }],
        usage: Some(answer.usage.into()),
    })
    .into_response())
}

struct CompletionChunks {
    id: String,
    model: String,
    created: u64,
    with_logprobs: bool,
    // Characters streamed so far, for `text_offset`.
    offset: Cell<usize>,
}

impl CompletionChunks {
    fn chunk(
        &self,
        text: &str,
        logprobs: Option<serde_json::Value>,
        finish_reason: Option<FinishReason>,
        usage: Option<Usage>,
    ) -> String {
        let choices = if usage.is_some() {
            Vec::new()
        } else {
            vec![CompletionChoice {
                index: 0,
                text: text.to_string(),
                finish_reason: finish_reason.map(|r| r.as_str().to_string()),
                logprobs,
            }]
        };
        let chunk = Completion {
            id: self.id.clone(),
            object: "text_completion".into(),
            created: self.created,
            model: self.model.clone(),
            choices,
            usage: usage.map(Into::into),
        };
        serde_json::to_string(&chunk).unwrap_or_default()
    }
}

impl ChunkFormat for CompletionChunks {
    fn opening(&self) -> Option<String> {
        None
    }

    fn text(&self, text: &str, logprobs: &[TokenLogprob]) -> String {
        let logprobs = self
            .with_logprobs
            .then(|| completion_logprobs(logprobs, self.offset.get()));
        self.offset.set(self.offset.get() + text.chars().count());
        self.chunk(text, logprobs, None, None)
    }

    fn finish(&self, reason: FinishReason) -> String {
        self.chunk("", None, Some(reason), None)
    }

    fn usage(&self, usage: Usage) -> String {
        self.chunk("", None, None, Some(usage))
    }
}
