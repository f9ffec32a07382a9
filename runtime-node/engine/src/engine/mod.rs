//! The boundary between the HTTP layer and inference: the [`Engine`] trait, the request and event
//! types that cross it, and the real implementation ([`LocalEngine`]) driving a model on a
//! scheduler thread.

mod local;
mod scheduler;
mod sequence;
pub mod text;

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::chat_template::{TemplateError, TemplateMessage};
use crate::sampler::SamplingParams;

pub use local::{EngineConfig, LocalEngine, StartError, completion_budget};

/// What to generate from.
#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    /// Raw text, tokenized as is (`/v1/completions`).
    Text(String),
    /// A conversation, rendered with the model's chat template (`/v1/chat/completions`).
    Chat(Vec<TemplateMessage>),
    /// Token ids, used as they are.
    Tokens(Vec<u32>),
}

/// One generation request.
#[derive(Debug, Clone)]
pub struct GenerateRequest {
    /// Request id, for logs.
    pub id: String,
    /// What to continue.
    pub prompt: Prompt,
    /// Most tokens to generate; `None` = up to the context limit.
    pub max_tokens: Option<usize>,
    /// How to pick tokens.
    pub sampling: SamplingParams,
    /// Strings that end generation (not included in the output).
    pub stop: Vec<String>,
    /// Token ids that end generation, in addition to the model's end-of-turn tokens.
    pub stop_token_ids: Vec<u32>,
    /// Keep going past the model's end-of-turn tokens (benchmarks).
    pub ignore_eos: bool,
    /// Admission order under load: higher first (from `x-hearth-priority`).
    pub priority: i32,
    /// Report each generated token's log-probability and this many most likely alternatives.
    pub logprobs: Option<usize>,
}

impl GenerateRequest {
    /// A request with default sampling for `prompt`.
    pub fn new(id: impl Into<String>, prompt: Prompt) -> Self {
        Self {
            id: id.into(),
            prompt,
            max_tokens: None,
            sampling: SamplingParams::default(),
            stop: Vec::new(),
            stop_token_ids: Vec::new(),
            ignore_eos: false,
            priority: 0,
            logprobs: None,
        }
    }
}

/// Token counts of a finished (or failed) request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Tokens generated.
    pub completion_tokens: usize,
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-turn token, stop token or stop string.
    Stop,
    /// `max_tokens` or the context limit.
    Length,
}

impl FinishReason {
    /// The OpenAI `finish_reason` string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
        }
    }
}

/// A generated token's log-probability under the model (before penalties and temperature).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    /// The token's text.
    pub token: String,
    /// Its natural-log probability.
    pub logprob: f32,
    /// The most likely tokens at that position, most likely first.
    pub top: Vec<(String, f32)>,
}

/// What the engine reports while a request runs, in order: deltas, then exactly one of
/// `Finished` or `Failed`.
#[derive(Debug, Clone, PartialEq)]
pub enum GenerationEvent {
    /// New output: text (empty only when it carries log-probabilities of tokens whose text is
    /// still held back) and, when asked for, the log-probabilities of the tokens it completes.
    Delta {
        /// New text.
        text: String,
        /// One entry per token since the previous delta (empty unless requested).
        logprobs: Vec<TokenLogprob>,
    },
    /// Generation ended normally.
    Finished {
        /// Why it ended.
        reason: FinishReason,
        /// Final token counts.
        usage: Usage,
    },
    /// Generation failed after it started.
    Failed(String),
}

/// A running request: its prompt size and the stream of its events. Dropping the receiver
/// cancels the request at the engine's next step.
#[derive(Debug)]
pub struct GenerationStream {
    /// Tokens in the (rendered) prompt.
    pub prompt_tokens: usize,
    /// The request's events.
    pub events: mpsc::UnboundedReceiver<GenerationEvent>,
}

/// Why a request was refused before it started.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    /// Prompt plus requested completion do not fit the context window.
    #[error(
        "This model's maximum context length is {limit} tokens. However, you requested {} tokens ({prompt_tokens} in the messages, {max_tokens} in the completion). Please reduce the length of the messages or completion.",
        prompt_tokens.saturating_add(*max_tokens)
    )]
    ContextLengthExceeded {
        /// Tokens in the prompt.
        prompt_tokens: usize,
        /// Tokens requested for the completion.
        max_tokens: usize,
        /// The engine's context limit.
        limit: usize,
    },
    /// The request is malformed in a way only the engine can tell (e.g. empty prompt).
    #[error("{0}")]
    InvalidRequest(String),
    /// The chat template is missing or refused the conversation.
    #[error(transparent)]
    Template(#[from] Arc<TemplateError>),
    /// The engine is not running (shut down or crashed).
    #[error("the engine is not running")]
    Unavailable,
}

/// The inference backend the HTTP layer talks to; a fake implements it in tests.
pub trait Engine: Send + Sync + 'static {
    /// The OpenAI model id this engine serves.
    fn model_id(&self) -> &str;
    /// Longest sequence (prompt + completion) accepted, in tokens.
    fn max_context_tokens(&self) -> usize;
    /// Whether the model is loaded and the engine accepts work.
    fn is_ready(&self) -> bool;
    /// False once the engine can never serve again (its scheduler stopped): `/health` then
    /// fails so the pod is restarted.
    fn is_alive(&self) -> bool {
        true
    }
    /// Starts `request`; errors are the request's fault or the engine being down.
    fn submit(&self, request: GenerateRequest) -> Result<GenerationStream, EngineError>;
}
