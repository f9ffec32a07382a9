//! Reading usage out of OpenAI-shaped responses: the `usage` object of a JSON body, or of the
//! final SSE chunk; when an engine sends none, counting streamed content chunks instead.

use serde_json::Value;

/// Largest JSON body the tap buffers to find its usage.
const MAX_JSON_BYTES: usize = 8 << 20;
/// Longest SSE line the tap keeps while waiting for its end.
const MAX_LINE_BYTES: usize = 1 << 20;

/// Usage found in one response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    /// Model named by the response.
    pub model: Option<String>,
    /// Prompt tokens (reported, or estimated).
    pub prompt_tokens: u64,
    /// Completion tokens (reported, or estimated).
    pub completion_tokens: u64,
    /// True when no usage object was seen and the counts are estimates.
    pub estimated: bool,
}

/// Accumulates a response body as it streams past.
#[derive(Debug)]
pub struct UsageTap {
    streamed: bool,
    buffer: Vec<u8>,
    model: Option<String>,
    reported: Option<(u64, u64)>,
    content_chunks: u64,
    overflowed: bool,
}

fn usage_numbers(value: &Value) -> Option<(u64, u64)> {
    let usage = value.get("usage")?;
    Some((
        usage.get("prompt_tokens")?.as_u64()?,
        usage
            .get("completion_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(0),
    ))
}

/// True when a chunk carries generated text (chat delta or completion text).
fn has_content(value: &Value) -> bool {
    value
        .get("choices")
        .and_then(Value::as_array)
        .is_some_and(|choices| {
            choices.iter().any(|choice| {
                let delta = choice
                    .get("delta")
                    .and_then(|d| d.get("content"))
                    .and_then(Value::as_str);
                let text = choice.get("text").and_then(Value::as_str);
                delta.or(text).is_some_and(|t| !t.is_empty())
            })
        })
}

impl UsageTap {
    /// A tap for a response whose content type says SSE (`streamed`) or JSON.
    pub fn new(streamed: bool) -> Self {
        Self {
            streamed,
            buffer: Vec::new(),
            model: None,
            reported: None,
            content_chunks: 0,
            overflowed: false,
        }
    }

    /// Feeds the next bytes of the body.
    pub fn feed(&mut self, bytes: &[u8]) {
        if !self.streamed {
            if self.buffer.len() + bytes.len() <= MAX_JSON_BYTES {
                self.buffer.extend_from_slice(bytes);
            } else {
                self.overflowed = true;
            }
            return;
        }
        for &byte in bytes {
            if byte == b'\n' {
                let line = std::mem::take(&mut self.buffer);
                self.sse_line(&line);
            } else if self.buffer.len() < MAX_LINE_BYTES {
                self.buffer.push(byte);
            }
        }
    }

    fn sse_line(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(data) = line.strip_prefix(b"data:") else {
            return;
        };
        let data = data.strip_prefix(b" ").unwrap_or(data);
        if data == b"[DONE]" {
            return;
        }
        let Ok(value) = serde_json::from_slice::<Value>(data) else {
            return;
        };
        self.observe(&value);
        if has_content(&value) {
            self.content_chunks += 1;
        }
    }

    fn observe(&mut self, value: &Value) {
        if let Some(model) = value.get("model").and_then(Value::as_str) {
            self.model = Some(model.to_string());
        }
        if let Some(numbers) = usage_numbers(value) {
            self.reported = Some(numbers);
        }
    }

    /// Ends the body; `prompt_estimate` is used when the engine reported no usage.
    pub fn finish(mut self, prompt_estimate: u64) -> Usage {
        if self.streamed {
            let rest = std::mem::take(&mut self.buffer);
            self.sse_line(&rest);
        } else if !self.overflowed
            && let Ok(value) = serde_json::from_slice::<Value>(&self.buffer)
        {
            self.observe(&value);
        }
        match self.reported {
            Some((prompt_tokens, completion_tokens)) => Usage {
                model: self.model,
                prompt_tokens,
                completion_tokens,
                estimated: false,
            },
            None => Usage {
                model: self.model,
                prompt_tokens: prompt_estimate,
                completion_tokens: self.content_chunks,
                estimated: true,
            },
        }
    }
}

/// A prompt-token estimate from a request body (about 4 bytes of text per token), used only
/// when the engine reports no usage.
pub fn estimate_prompt_tokens(request: &Value) -> u64 {
    let text_bytes = match (request.get("messages"), request.get("prompt")) {
        (Some(Value::Array(messages)), _) => messages
            .iter()
            .map(|m| m.get("content").map(|c| c.to_string().len()).unwrap_or(0) + 4)
            .sum(),
        (_, Some(prompt)) => prompt.to_string().len(),
        _ => 0,
    };
    (text_bytes as u64).div_ceil(4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_usage_is_read() {
        let mut tap = UsageTap::new(false);
        let body = br#"{"model":"m","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":7,"total_tokens":19}}"#;
        tap.feed(&body[..10]);
        tap.feed(&body[10..]);
        assert_eq!(
            tap.finish(0),
            Usage {
                model: Some("m".into()),
                prompt_tokens: 12,
                completion_tokens: 7,
                estimated: false
            }
        );
    }

    #[test]
    fn final_sse_usage_chunk_wins_even_split_across_reads() {
        let stream = concat!(
            "data: {\"model\":\"m\",\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n",
            "data: {\"model\":\"m\",\"choices\":[{\"delta\":{\"content\":\" there\"}}]}\n\n",
            "data: {\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2}}\n\n",
            "data: [DONE]\n\n"
        );
        let mut tap = UsageTap::new(true);
        for piece in stream.as_bytes().chunks(7) {
            tap.feed(piece);
        }
        assert_eq!(
            tap.finish(99),
            Usage {
                model: Some("m".into()),
                prompt_tokens: 5,
                completion_tokens: 2,
                estimated: false
            }
        );
    }

    #[test]
    fn stream_without_usage_is_counted_and_marked_estimated() {
        let stream = "data: {\"choices\":[{\"text\":\"a\"}]}\r\n\r\ndata: {\"choices\":[{\"text\":\"\"}]}\n\ndata: {\"choices\":[{\"text\":\"b\"}]}\n\ndata: [DONE]\n\n";
        let mut tap = UsageTap::new(true);
        tap.feed(stream.as_bytes());
        let usage = tap.finish(3);
        assert_eq!(
            (usage.prompt_tokens, usage.completion_tokens, usage.estimated),
            (3, 2, true)
        );
    }

    #[test]
    fn prompt_estimate_counts_message_text() {
        let request =
            serde_json::json!({"messages": [{"role": "user", "content": "hello world, how are you"}]});
        assert_eq!(estimate_prompt_tokens(&request), 8);
    }
}
