//! `POST /v1/completions`.

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};

use super::chat::rejection;
use super::generation::{ChunkFormat, ChunkHeader, collect_all, sse, submit_choices, total_usage};
use super::{AppState, priority, response_id, unix_now};
use crate::engine::{FinishReason, Prompt, TokenLogprob};
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
    let n = request.params.choices();
    let streams = submit_choices(state.engine.as_ref(), &generate, n)?;
    let model = state.engine.model_id().to_string();
    let created = unix_now();
    if request.params.stream {
        let header = ChunkHeader { id, model, created };
        let format = CompletionChunks {
            with_logprobs,
            offsets: vec![0; n],
        };
        return Ok(sse(streams, header, format, request.params.include_usage()).into_response());
    }
    let answers = collect_all(streams).await?;
    let usage = total_usage(answers.iter().map(|a| a.usage));
    let offset = echo.as_ref().map_or(0, |p| p.chars().count());
    let choices = answers
        .into_iter()
        .enumerate()
        .map(|(index, answer)| CompletionChoice {
            index,
            logprobs: with_logprobs.then(|| completion_logprobs(&answer.logprobs, offset)),
            text: match &echo {
                Some(prompt) => format!("{prompt}{}", answer.text),
                None => answer.text,
            },
            finish_reason: Some(answer.reason.as_str().into()),
        })
        .collect();
    Ok(Json(Completion {
        id,
        object: "text_completion".into(),
        created,
        model,
        choices,
        usage: Some(usage.into()),
    })
    .into_response())
}

struct CompletionChunks {
    with_logprobs: bool,
    // Characters streamed so far by each choice, for `text_offset`.
    offsets: Vec<usize>,
}

impl ChunkFormat for CompletionChunks {
    type Choice = CompletionChoice;
    const OBJECT: &'static str = "text_completion";

    fn opening(&self, _index: usize) -> Option<CompletionChoice> {
        None
    }

    fn text(&mut self, index: usize, text: &str, logprobs: &[TokenLogprob]) -> CompletionChoice {
        let offset = &mut self.offsets[index];
        let logprobs = self.with_logprobs.then(|| completion_logprobs(logprobs, *offset));
        *offset += text.chars().count();
        CompletionChoice {
            index,
            text: text.to_string(),
            finish_reason: None,
            logprobs,
        }
    }

    fn finish(&self, index: usize, reason: FinishReason) -> CompletionChoice {
        CompletionChoice {
            index,
            text: String::new(),
            finish_reason: Some(reason.as_str().to_string()),
            logprobs: None,
        }
    }
}
