//! What both generation endpoints share: collecting a whole answer, or streaming it as
//! server-sent events that end with `data: [DONE]`.

use std::collections::VecDeque;
use std::convert::Infallible;

use axum::http::StatusCode;
use axum::response::sse::{Event, Sse};
use futures::Stream;

use crate::engine::{FinishReason, GenerationEvent, GenerationStream, TokenLogprob, Usage};
use crate::openai::ApiError;

/// A whole answer.
#[derive(Debug)]
pub struct Collected {
    /// The generated text.
    pub text: String,
    /// Why it ended.
    pub reason: FinishReason,
    /// Token counts.
    pub usage: Usage,
    /// Per-token log-probabilities, when requested.
    pub logprobs: Vec<TokenLogprob>,
}

/// Waits for the whole answer. Dropping the future (client gone) cancels the request.
pub async fn collect(mut stream: GenerationStream) -> Result<Collected, ApiError> {
    let mut text = String::new();
    let mut all_logprobs = Vec::new();
    while let Some(event) = stream.events.recv().await {
        match event {
            GenerationEvent::Delta {
                text: delta,
                logprobs,
            } => {
                text.push_str(&delta);
                all_logprobs.extend(logprobs);
            }
            GenerationEvent::Finished { reason, usage } => {
                return Ok(Collected {
                    text,
                    reason,
                    usage,
                    logprobs: all_logprobs,
                });
            }
            GenerationEvent::Failed(message) => return Err(server_error(message)),
        }
    }
    Err(server_error(
        "the engine stopped before the answer finished".into(),
    ))
}

fn server_error(message: String) -> ApiError {
    ApiError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        message,
        kind: "server_error",
        param: None,
        code: None,
    }
}

/// How an endpoint writes its stream chunks (each a JSON document).
pub trait ChunkFormat: Send + 'static {
    /// Sent before any text (chat sends the assistant role here).
    fn opening(&self) -> Option<String>;
    /// A piece of text and the log-probabilities of the tokens behind it (empty unless asked).
    fn text(&self, text: &str, logprobs: &[TokenLogprob]) -> String;
    /// The end of the answer.
    fn finish(&self, reason: FinishReason) -> String;
    /// The trailing usage chunk.
    fn usage(&self, usage: Usage) -> String;
}

struct StreamState<F> {
    events: tokio::sync::mpsc::UnboundedReceiver<GenerationEvent>,
    format: F,
    include_usage: bool,
    queue: VecDeque<String>,
    done: bool,
}

/// Streams `stream` as SSE: the opening chunk, text chunks, a finish chunk, the usage chunk when
/// asked for, then `[DONE]`. A failure becomes an error event followed by `[DONE]`. Dropping the
/// response (client gone) drops the receiver, which cancels the request.
pub fn sse<F: ChunkFormat>(
    stream: GenerationStream,
    format: F,
    include_usage: bool,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let mut queue = VecDeque::new();
    if let Some(opening) = format.opening() {
        queue.push_back(opening);
    }
    let state = StreamState {
        events: stream.events,
        format,
        include_usage,
        queue,
        done: false,
    };
    let events = futures::stream::unfold(state, |mut state| async move {
        loop {
            if let Some(data) = state.queue.pop_front() {
                return Some((Ok(Event::default().data(data)), state));
            }
            if state.done {
                return None;
            }
            match state.events.recv().await {
                Some(GenerationEvent::Delta { text, logprobs }) => {
                    let chunk = state.format.text(&text, &logprobs);
                    state.queue.push_back(chunk);
                }
                Some(GenerationEvent::Finished { reason, usage }) => {
                    let finish = state.format.finish(reason);
                    state.queue.push_back(finish);
                    if state.include_usage {
                        let usage = state.format.usage(usage);
                        state.queue.push_back(usage);
                    }
                    state.queue.push_back("[DONE]".into());
                    state.done = true;
                }
                Some(GenerationEvent::Failed(message)) => {
                    let error = server_error(message);
                    let body = serde_json::to_string(&error.body()).unwrap_or_else(|_| "{}".into());
                    state.queue.push_back(body);
                    state.queue.push_back("[DONE]".into());
                    state.done = true;
                }
                None => {
                    let error = server_error("the engine stopped before the answer finished".into());
                    let body = serde_json::to_string(&error.body()).unwrap_or_else(|_| "{}".into());
                    state.queue.push_back(body);
                    state.queue.push_back("[DONE]".into());
                    state.done = true;
                }
            }
        }
    });
    Sse::new(events)
}
