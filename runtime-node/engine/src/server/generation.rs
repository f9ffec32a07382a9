//! What both generation endpoints share: starting the `n` choices of a request, collecting
//! whole answers, or streaming them as server-sent events that end with `data: [DONE]`.

use std::collections::VecDeque;
use std::convert::Infallible;

use axum::http::StatusCode;
use axum::response::sse::{Event, Sse};
use futures::stream::{BoxStream, SelectAll};
use futures::{Stream, StreamExt};
use serde::Serialize;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::engine::{
    Engine, FinishReason, GenerateRequest, GenerationEvent, GenerationStream, TokenLogprob, Usage,
};
use crate::openai::{ApiError, StreamChunk, UsageBody};

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

/// Starts the `n` choices of `request`, each its own sequence over the same prompt (the prefix
/// cache shares the prompt's KV blocks between them). A seeded request gives choice `i` the seed
/// `seed + i`, so each choice is reproducible on its own. If the engine refuses one, the choices
/// already started are dropped, which cancels them.
pub fn submit_choices(
    engine: &dyn Engine,
    request: &GenerateRequest,
    n: usize,
) -> Result<Vec<GenerationStream>, ApiError> {
    (0..n)
        .map(|i| {
            let mut choice = request.clone();
            if n > 1 {
                choice.id = format!("{}-{i}", request.id);
            }
            choice.sampling.seed = request.sampling.seed.map(|seed| seed.wrapping_add(i as u64));
            engine.submit(choice).map_err(ApiError::from)
        })
        .collect()
}

/// Waits for every choice; the first failure cancels the rest.
pub async fn collect_all(streams: Vec<GenerationStream>) -> Result<Vec<Collected>, ApiError> {
    futures::future::try_join_all(streams.into_iter().map(collect)).await
}

/// The usage of a response whose choices share one prompt: the prompt once, completions summed.
pub fn total_usage(usages: impl IntoIterator<Item = Usage>) -> Usage {
    usages.into_iter().fold(Usage::default(), |total, u| Usage {
        prompt_tokens: total.prompt_tokens.max(u.prompt_tokens),
        completion_tokens: total.completion_tokens + u.completion_tokens,
    })
}

/// What every chunk of one streamed response repeats.
#[derive(Debug, Clone)]
pub struct ChunkHeader {
    /// The response id.
    pub id: String,
    /// The served model id.
    pub model: String,
    /// Unix seconds.
    pub created: u64,
}

/// How an endpoint writes the choices of its stream chunks; the envelope
/// ([`StreamChunk`]) is shared.
pub trait ChunkFormat: Send + 'static {
    /// The endpoint's streamed choice.
    type Choice: Serialize + Send;
    /// The chunks' `object`.
    const OBJECT: &'static str;
    /// Sent for each choice before any text (chat sends the assistant role here).
    fn opening(&self, index: usize) -> Option<Self::Choice>;
    /// A piece of choice `index`'s text and the log-probabilities of the tokens behind it
    /// (empty unless asked).
    fn text(&mut self, index: usize, text: &str, logprobs: &[TokenLogprob]) -> Self::Choice;
    /// The end of choice `index`.
    fn finish(&self, index: usize, reason: FinishReason) -> Self::Choice;
}

/// A choice's events, tagged with its index and ended by `None` when its channel closes (so a
/// choice that stops without finishing is noticed at once).
type ChoiceEvents = BoxStream<'static, (usize, Option<GenerationEvent>)>;

fn choice_events(index: usize, events: UnboundedReceiver<GenerationEvent>) -> ChoiceEvents {
    futures::stream::unfold(Some(events), move |events| async move {
        let mut events = events?;
        match events.recv().await {
            Some(event) => Some(((index, Some(event)), Some(events))),
            None => Some(((index, None), None)),
        }
    })
    .boxed()
}

struct StreamState<F> {
    events: SelectAll<ChoiceEvents>,
    header: ChunkHeader,
    format: F,
    include_usage: bool,
    queue: VecDeque<String>,
    finished: Vec<bool>,
    usage: Usage,
    done: bool,
}

impl<F: ChunkFormat> StreamState<F> {
    fn chunk(&self, choices: Vec<F::Choice>, usage: Option<Usage>) -> String {
        let chunk = StreamChunk {
            id: self.header.id.clone(),
            object: F::OBJECT.into(),
            created: self.header.created,
            model: self.header.model.clone(),
            choices,
            usage: usage.map(UsageBody::from),
        };
        serde_json::to_string(&chunk).unwrap_or_default()
    }

    fn push_choice(&mut self, choice: F::Choice) {
        let chunk = self.chunk(vec![choice], None);
        self.queue.push_back(chunk);
    }

    /// An error event, then the end.
    fn fail(&mut self, message: String) {
        let body = serde_json::to_string(&server_error(message).body()).unwrap_or_else(|_| "{}".into());
        self.queue.push_back(body);
        self.queue.push_back("[DONE]".into());
        self.done = true;
    }

    fn on_event(&mut self, index: usize, event: Option<GenerationEvent>) {
        match event {
            Some(GenerationEvent::Delta { text, logprobs }) => {
                let choice = self.format.text(index, &text, &logprobs);
                self.push_choice(choice);
            }
            Some(GenerationEvent::Finished { reason, usage }) => {
                let choice = self.format.finish(index, reason);
                self.push_choice(choice);
                self.finished[index] = true;
                self.usage = total_usage([self.usage, usage]);
                if self.finished.iter().all(|&f| f) {
                    if self.include_usage {
                        let usage = self.chunk(Vec::new(), Some(self.usage));
                        self.queue.push_back(usage);
                    }
                    self.queue.push_back("[DONE]".into());
                    self.done = true;
                }
            }
            Some(GenerationEvent::Failed(message)) => self.fail(message),
            None if !self.finished[index] => {
                self.fail("the engine stopped before the answer finished".into());
            }
            None => {}
        }
    }
}

/// Streams the choices of one response as SSE: each choice's opening chunk, then text and finish
/// chunks as the choices produce them (each naming its `index`), the usage chunk when asked for
/// once all have finished, then `[DONE]`. A failure becomes an error event followed by `[DONE]`.
/// Dropping the response (client gone) drops the receivers, which cancels every choice.
pub fn sse<F: ChunkFormat>(
    streams: Vec<GenerationStream>,
    header: ChunkHeader,
    format: F,
    include_usage: bool,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let n = streams.len();
    let events = futures::stream::select_all(
        streams
            .into_iter()
            .enumerate()
            .map(|(index, stream)| choice_events(index, stream.events)),
    );
    let mut state = StreamState {
        events,
        header,
        format,
        include_usage,
        queue: VecDeque::new(),
        finished: vec![false; n],
        usage: Usage::default(),
        done: n == 0,
    };
    for index in 0..n {
        if let Some(opening) = state.format.opening(index) {
            state.push_choice(opening);
        }
    }
    let events = futures::stream::unfold(state, |mut state| async move {
        loop {
            if let Some(data) = state.queue.pop_front() {
                return Some((Ok(Event::default().data(data)), state));
            }
            if state.done {
                return None;
            }
            match state.events.next().await {
                Some((index, event)) => state.on_event(index, event),
                None => state.fail("the engine stopped before the answer finished".into()),
            }
        }
    });
    Sse::new(events)
}
