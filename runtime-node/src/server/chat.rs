//! `POST /v1/chat/completions`.

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};

use super::generation::{ChunkFormat, collect, sse};
use super::{AppState, priority, response_id, unix_now};
use crate::engine::{FinishReason, Prompt, TokenLogprob, Usage};
use crate::openai::chat::{
    AssistantMessage, ChatChoice, ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ChunkChoice,
    Delta, chat_logprobs,
};
use crate::openai::{ApiError, UsageBody};

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
    let stream = state.engine.submit(generate)?;
    let model = state.engine.model_id().to_string();
    let created = unix_now();
    if request.params.stream {
        let format = ChatChunks {
            id,
            model,
            created,
            with_logprobs,
        };
        return Ok(sse(stream, format, request.params.include_usage()).into_response());
    }
    let answer = collect(stream).await?;
    Ok(Json(ChatCompletion {
        id,
        object: "chat.completion".into(),
        created,
        model,
        choices: vec![ChatChoice {
            index: 0,
            message: AssistantMessage {
                role: "assistant".into(),
                content: answer.text,
            },
            finish_reason: Some(answer.reason.as_str().into()),
            logprobs: with_logprobs.then(|| chat_logprobs(&answer.logprobs)),
        }],
        usage: answer.usage.into(),
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
    id: String,
    model: String,
    created: u64,
    with_logprobs: bool,
}

impl ChatChunks {
    fn chunk(
        &self,
        delta: Delta,
        logprobs: Option<serde_json::Value>,
        finish_reason: Option<FinishReason>,
        usage: Option<Usage>,
    ) -> String {
        let choices = if usage.is_some() {
            Vec::new()
        } else {
            vec![ChunkChoice {
                index: 0,
                delta,
                finish_reason: finish_reason.map(|r| r.as_str().to_string()),
                logprobs,
            }]
        };
        let chunk = ChatCompletionChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".into(),
            created: self.created,
            model: self.model.clone(),
            choices,
            usage: usage.map(UsageBody::from),
        };
        serde_json::to_string(&chunk).unwrap_or_default()
    }
}

impl ChunkFormat for ChatChunks {
    fn opening(&self) -> Option<String> {
        let delta = Delta {
            role: Some("assistant".into()),
            content: Some(String::new()),
        };
        Some(self.chunk(delta, None, None, None))
    }

    fn text(&self, text: &str, logprobs: &[TokenLogprob]) -> String {
        let delta = Delta {
            role: None,
            content: Some(text.to_string()),
        };
        let logprobs = self.with_logprobs.then(|| chat_logprobs(logprobs));
        self.chunk(delta, logprobs, None, None)
    }

    fn finish(&self, reason: FinishReason) -> String {
        self.chunk(Delta::default(), None, Some(reason), None)
    }

    fn usage(&self, usage: Usage) -> String {
        self.chunk(Delta::default(), None, None, Some(usage))
    }
}
