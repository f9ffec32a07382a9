//! Reading an OpenAI request body just enough to admit and route it: the model, the completion
//! bound (`max_completion_tokens` or `max_tokens`), streaming and usage options, a prompt-token
//! bound, and the bytes that decide prefix affinity. The body is then rewritten for the engine.

use serde_json::{Map, Value};

use super::error::GatewayError;
use hearth_crds::constants::MAX_CHOICES;

/// Bytes per token assumed by the prompt bound. Llama-family BPE vocabularies average about four
/// bytes of English or code per token, so `bytes / 3` over-reserves ordinary text; text that
/// tokenises worse is corrected from the real usage when the response ends.
pub const BYTES_PER_TOKEN: usize = 3;
/// Tokens added per chat message for the role and the template's framing (OpenAI's own count
/// uses 3–4; chat templates of open models use up to about 5).
pub const TOKENS_PER_MESSAGE: u64 = 6;
/// Tokens added per chat request for the assistant's reply header.
pub const TOKENS_PER_REPLY: u64 = 3;
/// Prompt bytes hashed for prefix affinity (about the length of a system prompt).
pub const AFFINITY_PREFIX_BYTES: usize = 256;

/// Which endpoint a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/v1/chat/completions`.
    Chat,
    /// `/v1/completions`.
    Completions,
}

impl Endpoint {
    /// Path on the engine.
    pub fn path(self) -> &'static str {
        match self {
            Self::Chat => "/v1/chat/completions",
            Self::Completions => "/v1/completions",
        }
    }
}

/// What the gateway learned from a request body.
#[derive(Debug, Clone)]
pub struct ParsedRequest {
    /// The JSON object, to be rewritten and forwarded.
    pub body: Map<String, Value>,
    /// Requested model.
    pub model: String,
    /// `max_completion_tokens` or `max_tokens`, with the field name it came from.
    pub max_tokens: Option<(&'static str, u64)>,
    /// `n`: completions asked for, each up to the completion bound (1 when absent).
    pub choices: u64,
    /// Whether the client asked for SSE.
    pub stream: bool,
    /// Whether the client asked for the final usage chunk.
    pub include_usage: bool,
    /// Upper bound used to reserve the prompt's tokens (see [`BYTES_PER_TOKEN`]).
    pub prompt_tokens_bound: u64,
    /// First bytes of the prompt, for prefix affinity.
    pub affinity_key: Vec<u8>,
}

fn invalid(message: impl Into<String>, param: Option<&'static str>) -> GatewayError {
    GatewayError::InvalidRequest {
        message: message.into(),
        param,
    }
}

/// Collects the text of a message `content` (a string or an array of `{type:"text",text}` parts).
fn content_text(content: &Value, out: &mut String) {
    match content {
        Value::String(text) => out.push_str(text),
        Value::Array(parts) => {
            for part in parts {
                if let Some(text) = part.get("text").and_then(Value::as_str) {
                    out.push_str(text);
                } else {
                    // Non-text parts (images, audio) are counted by their JSON size.
                    out.push_str(&part.to_string());
                }
            }
        }
        Value::Null => {}
        other => out.push_str(&other.to_string()),
    }
}

/// Refuses a message without text where OpenAI requires it: only an assistant message (one that
/// made tool calls) may have no `content`.
fn check_content(index: usize, message: &Value) -> Result<(), GatewayError> {
    let role = message.get("role").and_then(Value::as_str).unwrap_or_default();
    match message.get("content") {
        Some(Value::String(_) | Value::Array(_)) => Ok(()),
        None | Some(Value::Null) if role == "assistant" => Ok(()),
        _ => Err(invalid(
            format!(
                "messages[{index}].content must be a string or an array of content parts for role '{role}'."
            ),
            Some("messages"),
        )),
    }
}

fn tokens_for_bytes(bytes: usize) -> u64 {
    bytes.div_ceil(BYTES_PER_TOKEN) as u64
}

/// The prompt text (for affinity) and its token bound.
fn prompt_of(endpoint: Endpoint, body: &Map<String, Value>) -> Result<(String, u64), GatewayError> {
    match endpoint {
        Endpoint::Chat => {
            let messages = body
                .get("messages")
                .and_then(Value::as_array)
                .ok_or_else(|| invalid("'messages' is a required array.", Some("messages")))?;
            let mut text = String::new();
            let mut extra = TOKENS_PER_REPLY;
            for (index, message) in messages.iter().enumerate() {
                check_content(index, message)?;
                for field in ["role", "name"] {
                    if let Some(value) = message.get(field).and_then(Value::as_str) {
                        text.push_str(value);
                    }
                }
                if let Some(content) = message.get("content") {
                    content_text(content, &mut text);
                }
                if let Some(calls) = message.get("tool_calls") {
                    text.push_str(&calls.to_string());
                }
                extra += TOKENS_PER_MESSAGE;
            }
            if let Some(tools) = body.get("tools") {
                text.push_str(&tools.to_string());
            }
            Ok((text.clone(), tokens_for_bytes(text.len()) + extra))
        }
        Endpoint::Completions => match body.get("prompt") {
            Some(Value::String(text)) => Ok((text.clone(), tokens_for_bytes(text.len()) + 1)),
            Some(Value::Array(items)) => {
                // A list of strings, or pre-tokenised prompts (arrays of integers: one token each).
                let mut text = String::new();
                let mut tokens = 0u64;
                for item in items {
                    match item {
                        Value::String(s) => {
                            tokens += tokens_for_bytes(s.len()) + 1;
                            text.push_str(s);
                        }
                        Value::Array(ids) => tokens += ids.len() as u64,
                        Value::Number(_) => tokens += 1,
                        _ => return Err(invalid("'prompt' must be a string or an array.", Some("prompt"))),
                    }
                }
                Ok((text, tokens))
            }
            _ => Err(invalid("'prompt' is required.", Some("prompt"))),
        },
    }
}

fn read_u64(
    body: &Map<String, Value>,
    field: &'static str,
) -> Result<Option<(&'static str, u64)>, GatewayError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value
            .as_u64()
            .map(|n| Some((field, n)))
            .ok_or_else(|| invalid(format!("'{field}' must be a non-negative integer."), Some(field))),
    }
}

/// Parses and checks a request body.
pub fn parse(endpoint: Endpoint, bytes: &[u8]) -> Result<ParsedRequest, GatewayError> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| invalid(format!("The request body is not valid JSON: {e}"), None))?;
    let Value::Object(body) = value else {
        return Err(invalid("The request body must be a JSON object.", None));
    };
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .ok_or_else(|| invalid("'model' is required.", Some("model")))?
        .to_string();
    let max_tokens = match read_u64(&body, "max_completion_tokens")? {
        Some(found) => Some(found),
        None => read_u64(&body, "max_tokens")?,
    };
    let choices = match read_u64(&body, "n")? {
        None => 1,
        Some((_, 0)) => return Err(invalid("'n' must be at least 1.", Some("n"))),
        Some((_, n)) if n > MAX_CHOICES => {
            return Err(invalid(
                format!("'n' is {n}; at most {MAX_CHOICES} choices may be asked for."),
                Some("n"),
            ));
        }
        Some((_, n)) => n,
    };
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let include_usage = stream
        && body
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
    let (prompt, prompt_tokens_bound) = prompt_of(endpoint, &body)?;
    let mut cut = prompt.len().min(AFFINITY_PREFIX_BYTES);
    while !prompt.is_char_boundary(cut) {
        cut -= 1;
    }
    Ok(ParsedRequest {
        model,
        max_tokens,
        choices,
        stream,
        include_usage,
        prompt_tokens_bound,
        affinity_key: prompt.as_bytes()[..cut].to_vec(),
        body,
    })
}

impl ParsedRequest {
    /// The body sent to the engine: `max_tokens` set to `tier_cap` when the client set none (so
    /// the engine stops where the reservation does; without a cap the engine takes the context
    /// left after the prompt), and for streams `stream_options.include_usage = true` so the
    /// gateway always sees the final usage.
    pub fn engine_body(&self, tier_cap: Option<u64>) -> Vec<u8> {
        let mut body = self.body.clone();
        if let (None, Some(cap)) = (self.max_tokens, tier_cap) {
            body.insert("max_tokens".into(), Value::from(cap));
        }
        if self.stream {
            let options = body
                .entry("stream_options")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(options) = options {
                options.insert("include_usage".into(), Value::Bool(true));
            } else {
                *options = serde_json::json!({"include_usage": true});
            }
        }
        serde_json::to_vec(&Value::Object(body)).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_bound_counts_bytes_over_three_plus_framing() {
        let body = br#"{"model":"m","max_tokens":7,"messages":[{"role":"user","content":"hello world"}]}"#;
        let parsed = parse(Endpoint::Chat, body).expect("valid");
        // "user" + "hello world" = 15 bytes -> 5, + 6 per message + 3 reply.
        assert_eq!(parsed.prompt_tokens_bound, 14);
        assert_eq!(parsed.max_tokens, Some(("max_tokens", 7)));
        assert!(!parsed.stream);
        assert_eq!(parsed.affinity_key, b"userhello world");
    }

    #[test]
    fn streams_always_ask_the_engine_for_usage_and_unbounded_requests_get_the_cap() {
        let body = br#"{"model":"m","stream":true,"prompt":"abcd"}"#;
        let parsed = parse(Endpoint::Completions, body).expect("valid");
        assert!(parsed.stream && !parsed.include_usage);
        assert_eq!(parsed.prompt_tokens_bound, 3);
        let sent: Value = serde_json::from_slice(&parsed.engine_body(Some(64))).expect("json");
        assert_eq!(sent["stream_options"]["include_usage"], true);
        assert_eq!(sent["max_tokens"], 64);
        // Without a tier cap the engine takes the context left after the prompt.
        let sent: Value = serde_json::from_slice(&parsed.engine_body(None)).expect("json");
        assert!(sent.get("max_tokens").is_none(), "{sent}");
    }

    #[test]
    fn malformed_bodies_name_the_field() {
        let error = parse(Endpoint::Chat, br#"{"messages":[]}"#).expect_err("no model");
        assert_eq!(error.body()["error"]["param"], "model");
        let error =
            parse(Endpoint::Chat, br#"{"model":"m","max_tokens":-1,"messages":[]}"#).expect_err("negative");
        assert_eq!(error.body()["error"]["param"], "max_tokens");
        assert!(parse(Endpoint::Chat, b"not json").is_err());
        let error = parse(Endpoint::Chat, br#"{"model":"m","n":0,"messages":[]}"#).expect_err("no choice");
        assert_eq!(error.body()["error"]["param"], "n");
        let parsed = parse(Endpoint::Chat, br#"{"model":"m","n":3,"messages":[]}"#).expect("valid");
        assert_eq!(parsed.choices, 3);
        let error = parse(Endpoint::Chat, br#"{"model":"m","n":129,"messages":[]}"#).expect_err("too many");
        assert_eq!(error.body()["error"]["param"], "n");
        assert!(error.to_string().contains("at most 128"), "{error}");
        let null_user = br#"{"model":"m","messages":[{"role":"user","content":null}]}"#;
        let error = parse(Endpoint::Chat, null_user).expect_err("a user message needs content");
        assert_eq!(error.body()["error"]["param"], "messages");
        assert!(error.to_string().contains("messages[0].content"), "{error}");
        let tool_call = br#"{"model":"m","messages":[{"role":"user","content":"hi"},{"role":"assistant","content":null,"tool_calls":[]}]}"#;
        assert!(parse(Endpoint::Chat, tool_call).is_ok());
    }
}
