//! `POST /v1/chat/completions` request and response bodies.

use serde::{Deserialize, Serialize};

use super::{ApiError, GenerationParams, StreamChunk, UsageBody};
use crate::chat_template::TemplateMessage;
use crate::engine::TokenLogprob;

/// The request body.
#[derive(Debug, Clone, Deserialize)]
pub struct ChatCompletionRequest {
    /// The served model id.
    pub model: String,
    /// The conversation so far.
    pub messages: Vec<ChatMessage>,
    /// Sampling and streaming fields.
    #[serde(flatten)]
    pub params: GenerationParams,
}

/// One incoming message.
#[derive(Debug, Clone, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant`, `tool` (or `developer`, treated as `system`).
    pub role: String,
    /// Text, or a list of content parts of which only `text` parts are supported.
    #[serde(default)]
    pub content: Option<MessageContent>,
}

/// Message content: a string or typed parts.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum MessageContent {
    /// Plain text.
    Text(String),
    /// Content parts (`{"type": "text", "text": ...}`).
    Parts(Vec<ContentPart>),
}

/// One content part.
#[derive(Debug, Clone, Deserialize)]
pub struct ContentPart {
    /// The part type; only `text` is supported.
    #[serde(rename = "type")]
    pub kind: String,
    /// The text of a `text` part.
    #[serde(default)]
    pub text: Option<String>,
}

impl ChatCompletionRequest {
    /// The messages as the chat template sees them.
    pub fn template_messages(&self) -> Result<Vec<TemplateMessage>, ApiError> {
        if self.messages.is_empty() {
            return Err(ApiError::invalid(
                "`messages` must not be empty",
                Some("messages"),
            ));
        }
        self.messages
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let content = match &m.content {
                    None => String::new(),
                    Some(MessageContent::Text(t)) => t.clone(),
                    Some(MessageContent::Parts(parts)) => {
                        let mut text = String::new();
                        for part in parts {
                            match (part.kind.as_str(), &part.text) {
                                ("text", Some(t)) => text.push_str(t),
                                (kind, _) => {
                                    return Err(ApiError::invalid(
                                        format!("content part type `{kind}` is not supported (text only)"),
                                        Some(&format!("messages[{i}].content")),
                                    ));
                                }
                            }
                        }
                        text
                    }
                };
                let role = match m.role.as_str() {
                    "developer" => "system".to_string(),
                    "system" | "user" | "assistant" | "tool" => m.role.clone(),
                    other => {
                        return Err(ApiError::invalid(
                            format!("unknown role `{other}`"),
                            Some(&format!("messages[{i}].role")),
                        ));
                    }
                };
                Ok(TemplateMessage { role, content })
            })
            .collect()
    }
}

/// A non-streamed response.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatCompletion {
    /// `chatcmpl-...`.
    pub id: String,
    /// Always `chat.completion`.
    pub object: String,
    /// Unix seconds.
    pub created: u64,
    /// The served model id.
    pub model: String,
    /// The answers, `n` of them.
    pub choices: Vec<ChatChoice>,
    /// Token counts.
    pub usage: UsageBody,
}

/// One answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatChoice {
    /// Position among the choices.
    pub index: usize,
    /// The assistant message.
    pub message: AssistantMessage,
    /// `stop` or `length`.
    pub finish_reason: Option<String>,
    /// Not implemented; always null.
    pub logprobs: Option<serde_json::Value>,
}

/// The generated message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AssistantMessage {
    /// Always `assistant`.
    pub role: String,
    /// The generated text.
    pub content: String,
}

/// One streamed chunk.
pub type ChatCompletionChunk = StreamChunk<ChunkChoice>;

/// A streamed choice.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChunkChoice {
    /// Position among the choices.
    pub index: usize,
    /// What changed.
    pub delta: Delta,
    /// Set on the last content chunk.
    pub finish_reason: Option<String>,
    /// Not implemented; always null.
    pub logprobs: Option<serde_json::Value>,
}

/// The incremental message.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Delta {
    /// `assistant`, in the first chunk only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// New text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

/// The `logprobs` object of a chat choice: `{"content": [{token, logprob, bytes, top_logprobs}]}`.
pub fn chat_logprobs(tokens: &[TokenLogprob]) -> serde_json::Value {
    let entry = |token: &str, logprob: f32| serde_json::json!({"token": token, "logprob": logprob, "bytes": token.as_bytes()});
    let content: Vec<serde_json::Value> = tokens
        .iter()
        .map(|t| {
            let mut item = entry(&t.token, t.logprob);
            item["top_logprobs"] = t.top.iter().map(|(tok, lp)| entry(tok, *lp)).collect();
            item
        })
        .collect();
    serde_json::json!({ "content": content })
}
