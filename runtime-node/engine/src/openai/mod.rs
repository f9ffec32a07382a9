//! OpenAI API wire types, one file per endpoint family, plus the request fields both generation
//! endpoints share.

pub mod chat;
pub mod completions;
pub mod error;
pub mod models;

use serde::{Deserialize, Serialize};

use crate::engine::{GenerateRequest, Prompt};
use crate::sampler::SamplingParams;
pub use error::ApiError;

/// `stop`: one string or a list of them.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum StopSpec {
    /// A single stop string.
    One(String),
    /// Several stop strings.
    Many(Vec<String>),
}

/// `stream_options`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct StreamOptions {
    /// Send a final chunk with `usage` (and no choices) before `[DONE]`.
    #[serde(default)]
    pub include_usage: bool,
}

/// Token counts as OpenAI reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageBody {
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Tokens generated.
    pub completion_tokens: usize,
    /// Their sum.
    pub total_tokens: usize,
}

impl From<crate::engine::Usage> for UsageBody {
    fn from(u: crate::engine::Usage) -> Self {
        Self {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u.prompt_tokens + u.completion_tokens,
        }
    }
}

/// Generation fields shared by `/v1/chat/completions` and `/v1/completions` (OpenAI's, plus
/// vLLM's `top_k`, `min_p`, `repetition_penalty`, `stop_token_ids`, `ignore_eos`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct GenerationParams {
    /// Most tokens to generate.
    pub max_tokens: Option<usize>,
    /// Newer name for `max_tokens` (chat).
    pub max_completion_tokens: Option<usize>,
    /// Sampling temperature (default 1).
    pub temperature: Option<f32>,
    /// Nucleus sampling mass (default 1).
    pub top_p: Option<f32>,
    /// Keep the k most likely tokens (0 or -1 = all).
    pub top_k: Option<i64>,
    /// Relative probability floor.
    pub min_p: Option<f32>,
    /// Seed for reproducible sampling.
    pub seed: Option<u64>,
    /// OpenAI presence penalty.
    pub presence_penalty: Option<f32>,
    /// OpenAI frequency penalty.
    pub frequency_penalty: Option<f32>,
    /// Multiplicative repetition penalty (1 = off).
    pub repetition_penalty: Option<f32>,
    /// Stop strings.
    pub stop: Option<StopSpec>,
    /// Extra token ids that end generation.
    #[serde(default)]
    pub stop_token_ids: Vec<u32>,
    /// Ignore end-of-turn tokens.
    #[serde(default)]
    pub ignore_eos: bool,
    /// Number of choices, each sampled independently from the same prompt (1 to
    /// [`MAX_CHOICES`]).
    pub n: Option<usize>,
    /// Stream the answer as server-sent events.
    #[serde(default)]
    pub stream: bool,
    /// Streaming options.
    pub stream_options: Option<StreamOptions>,
    /// Chat: `true` to return each token's log-probability. Completions: the number of
    /// alternatives to return per token (0-20).
    pub logprobs: Option<serde_json::Value>,
    /// Chat: alternatives per token (0-20) when `logprobs` is `true`.
    pub top_logprobs: Option<usize>,
}

/// Most alternatives per token the API returns (OpenAI's limit).
pub const MAX_TOP_LOGPROBS: usize = 20;

/// Most choices (`n`) one request may ask for: each is a sequence in the batch.
pub const MAX_CHOICES: usize = 16;

/// One streamed chunk of either generation endpoint: the response's identity, the choices it
/// advances (none in the trailing usage chunk) and, in that last chunk only, the usage.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StreamChunk<C> {
    /// Same id for every chunk of a response.
    pub id: String,
    /// `chat.completion.chunk` or `text_completion`.
    pub object: String,
    /// Unix seconds.
    pub created: u64,
    /// The served model id.
    pub model: String,
    /// The choices this chunk advances, each with its `index`.
    pub choices: Vec<C>,
    /// Only in the final chunk, when `stream_options.include_usage`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<UsageBody>,
}

impl GenerationParams {
    /// Builds the engine request, refusing what the engine cannot honour.
    pub fn to_request(
        &self,
        id: &str,
        prompt: Prompt,
        default_max_tokens: Option<usize>,
        priority: i32,
    ) -> Result<GenerateRequest, ApiError> {
        if let Some(n) = self.n
            && !(1..=MAX_CHOICES).contains(&n)
        {
            return Err(ApiError::invalid(
                format!("`n` must be between 1 and {MAX_CHOICES}, got {n}"),
                Some("n"),
            ));
        }
        let logprobs = self.logprobs_request()?;
        let top_k = match self.top_k {
            None | Some(-1) | Some(0) => 0,
            Some(k) if k > 0 => k as usize,
            Some(k) => {
                return Err(ApiError::invalid(
                    format!("`top_k` must be -1, 0 or positive, got {k}"),
                    Some("top_k"),
                ));
            }
        };
        let defaults = SamplingParams::default();
        let sampling = SamplingParams {
            temperature: self.temperature.unwrap_or(defaults.temperature),
            top_k,
            top_p: self.top_p.unwrap_or(defaults.top_p),
            min_p: self.min_p.unwrap_or(defaults.min_p),
            repetition_penalty: self.repetition_penalty.unwrap_or(defaults.repetition_penalty),
            presence_penalty: self.presence_penalty.unwrap_or(defaults.presence_penalty),
            frequency_penalty: self.frequency_penalty.unwrap_or(defaults.frequency_penalty),
            seed: self.seed,
        };
        sampling
            .validate()
            .map_err(|e| ApiError::invalid(e.to_string(), Some(e.field)))?;
        let stop = match &self.stop {
            None => Vec::new(),
            Some(StopSpec::One(s)) => vec![s.clone()],
            Some(StopSpec::Many(v)) => v.clone(),
        };
        if stop.len() > 16 {
            return Err(ApiError::invalid(
                "at most 16 stop strings are allowed",
                Some("stop"),
            ));
        }
        Ok(GenerateRequest {
            id: id.to_string(),
            prompt,
            max_tokens: self
                .max_completion_tokens
                .or(self.max_tokens)
                .or(default_max_tokens),
            sampling,
            stop,
            stop_token_ids: self.stop_token_ids.clone(),
            ignore_eos: self.ignore_eos,
            priority,
            logprobs,
        })
    }

    /// Alternatives per token when log-probabilities are requested (chat's `logprobs: true` with
    /// `top_logprobs`, or completions' integer `logprobs`).
    fn logprobs_request(&self) -> Result<Option<usize>, ApiError> {
        use serde_json::Value;
        let top = match &self.logprobs {
            None | Some(Value::Null) | Some(Value::Bool(false)) => return Ok(None),
            Some(Value::Bool(true)) => self.top_logprobs.unwrap_or(0),
            Some(Value::Number(n)) => match n.as_u64() {
                Some(n) => n as usize,
                None => {
                    return Err(ApiError::invalid(
                        "`logprobs` must be a non-negative integer",
                        Some("logprobs"),
                    ));
                }
            },
            Some(_) => {
                return Err(ApiError::invalid(
                    "`logprobs` must be a boolean or an integer",
                    Some("logprobs"),
                ));
            }
        };
        if top > MAX_TOP_LOGPROBS {
            return Err(ApiError::invalid(
                format!("at most {MAX_TOP_LOGPROBS} alternatives per token, got {top}"),
                Some("top_logprobs"),
            ));
        }
        Ok(Some(top))
    }

    /// How many choices to generate (`n`, 1 when absent; checked by [`Self::to_request`]).
    pub fn choices(&self) -> usize {
        self.n.unwrap_or(1)
    }

    /// Whether a streamed response should end with a usage chunk.
    pub fn include_usage(&self) -> bool {
        self.stream_options.as_ref().is_some_and(|o| o.include_usage)
    }
}
