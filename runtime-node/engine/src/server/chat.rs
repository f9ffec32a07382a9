//! `POST /v1/chat/completions`.

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};

use super::generation::{ChunkFormat, ChunkHeader, collect_all, sse, submit_choices, total_usage};
use super::{AppState, priority, response_id, unix_now};
use crate::engine::{FinishReason, Prompt, TokenLogprob};
use crate::openai::ApiError;
use crate::openai::chat::{
    AssistantMessage, ChatChoice, ChatCompletion, ChatCompletionRequest, ChunkChoice, Delta, chat_logprobs,
};

#[tracing::instrument(skip_all, fields(id))]
pub async fn chat_completions(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<ChatCompletionRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(request) = body.map_err(rejection)?;
    state.check_model(&request.model)?;
    let id = response_id("chatcmpl");
    tracing::Span::current().record("id", id.as_str());
    let messages = request.template_messages()?;
    let generate = request
        .params
        .to_request(&id, Prompt::Chat(messages), None, priority(&headers)?)?;
    let with_logprobs = generate.logprobs.is_some();
    let streams = submit_choices(state.engine.as_ref(), &generate, request.params.choices())?;
    let model = state.engine.model_id().to_string();
    let created = unix_now();
    if request.params.stream {
        let header = ChunkHeader { id, model, created };
        let format = ChatChunks { with_logprobs };
        return Ok(sse(streams, header, format, request.params.include_usage()).into_response());
    }
    let answers = collect_all(streams).await?;
    let usage = total_usage(answers.iter().map(|a| a.usage));
    let choices = answers
        .into_iter()
        .enumerate()
        .map(|(index, answer)| ChatChoice {
            index,
            message: AssistantMessage {
                role: "assistant".into(),
                content: answer.text,
            },
            finish_reason: Some(answer.reason.as_str().into()),
            logprobs: with_logprobs.then(|| chat_logprobs(&answer.logprobs)),
        })
        .collect();
    Ok(Json(ChatCompletion {
        id,
        object: "chat.completion".into(),
        created,
        model,
        choices,
        usage: usage.into(),
    })
    .into_response())
}

/// Maps axum's JSON extraction failures (bad JSON, wrong fields, body too large) to OpenAI errors.
pub(super) fn rejection(err: JsonRejection) -> ApiError {
    ApiError {
        status: err.status(),
        ..ApiError::invalid(err.body_text(), None)
    }
}

struct ChatChunks {
    with_logprobs: bool,
}

impl ChunkFormat for ChatChunks {
    type Choice = ChunkChoice;
    const OBJECT: &'static str = "chat.completion.chunk";

    fn opening(&self, index: usize) -> Option<ChunkChoice> {
        let delta = Delta {
            role: Some("assistant".into()),
            content: Some(String::new()),
        };
        Some(choice(index, delta, None, None))
    }

    fn text(&mut self, index: usize, text: &str, logprobs: &[TokenLogprob]) -> ChunkChoice {
        let delta = Delta {
            role: None,
            content: Some(text.to_string()),
        };
        let logprobs = self.with_logprobs.then(|| chat_logprobs(logprobs));
        choice(index, delta, logprobs, None)
    }

    fn finish(&self, index: usize, reason: FinishReason) -> ChunkChoice {
        choice(index, Delta::default(), None, Some(reason))
    }
}

fn choice(
    index: usize,
    delta: Delta,
    logprobs: Option<serde_json::Value>,
    finish_reason: Option<FinishReason>,
) -> ChunkChoice {
    ChunkChoice {
        index,
        delta,
        finish_reason: finish_reason.map(|r| r.as_str().to_string()),
        logprobs,
    }
}
