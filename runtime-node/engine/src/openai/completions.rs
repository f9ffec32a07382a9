//! `POST /v1/completions` request and response bodies.

use serde::{Deserialize, Serialize};

use super::{ApiError, GenerationParams, UsageBody};
use crate::engine::{Prompt, TokenLogprob};

/// OpenAI's default `max_tokens` for legacy completions.
pub const DEFAULT_MAX_TOKENS: usize = 16;

/// The request body.
#[derive(Debug, Clone, Deserialize)]
pub struct CompletionRequest {
    /// The served model id.
    pub model: String,
    /// Text, a one-element list of text, or a list of token ids.
    pub prompt: PromptSpec,
    /// Prepend the prompt to the output.
    #[serde(default)]
    pub echo: bool,
    /// Text appended after the completion (not supported).
    pub suffix: Option<String>,
    /// Sampling and streaming fields.
    #[serde(flatten)]
    pub params: GenerationParams,
}

/// The shapes `prompt` may take.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum PromptSpec {
    /// One prompt.
    Text(String),
    /// Token ids.
    Tokens(Vec<u32>),
    /// Several prompts (only one is supported).
    Texts(Vec<String>),
}

impl CompletionRequest {
    /// The prompt as the engine takes it, plus its text for `echo`.
    pub fn engine_prompt(&self) -> Result<Prompt, ApiError> {
        if self.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
            return Err(ApiError::invalid("`suffix` is not supported", Some("suffix")));
        }
        match &self.prompt {
            PromptSpec::Text(t) => Ok(Prompt::Text(t.clone())),
            PromptSpec::Tokens(ids) => Ok(Prompt::Tokens(ids.clone())),
            PromptSpec::Texts(list) if list.len() == 1 => Ok(Prompt::Text(list[0].clone())),
            PromptSpec::Texts(_) => Err(ApiError::invalid(
                "batched prompts are not supported; send one prompt per request",
                Some("prompt"),
            )),
        }
    }
}

/// A non-streamed response (streamed chunks are [`super::StreamChunk`]s of the same shape).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Completion {
    /// `cmpl-...`.
    pub id: String,
    /// Always `text_completion`.
    pub object: String,
    /// Unix seconds.
    pub created: u64,
    /// The served model id.
    pub model: String,
    /// The completions, `n` of them.
    pub choices: Vec<CompletionChoice>,
    /// Token counts: the prompt once, the completions summed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<UsageBody>,
}

/// One completion.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompletionChoice {
    /// Position among the choices.
    pub index: usize,
    /// Generated text (or a streamed piece of it).
    pub text: String,
    /// `stop` or `length` on the last piece.
    pub finish_reason: Option<String>,
    /// Not implemented; always null.
    pub logprobs: Option<serde_json::Value>,
}

/// The legacy `logprobs` object: parallel `tokens`, `token_logprobs`, `top_logprobs` (token to
/// log-probability maps) and `text_offset` (character offset of each token, from `offset`).
pub fn completion_logprobs(tokens: &[TokenLogprob], offset: usize) -> serde_json::Value {
    let mut text_offset = Vec::with_capacity(tokens.len());
    let mut at = offset;
    for t in tokens {
        text_offset.push(at);
        at += t.token.chars().count();
    }
    let top: Vec<serde_json::Map<String, serde_json::Value>> = tokens
        .iter()
        .map(|t| {
            t.top
                .iter()
                .map(|(tok, lp)| (tok.clone(), serde_json::json!(lp)))
                .collect()
        })
        .collect();
    serde_json::json!({
        "tokens": tokens.iter().map(|t| t.token.as_str()).collect::<Vec<_>>(),
        "token_logprobs": tokens.iter().map(|t| t.logprob).collect::<Vec<_>>(),
        "top_logprobs": top,
        "text_offset": text_offset,
    })
}
