//! [`LocalEngine`]: the real engine. `submit` renders and tokenizes on the caller's thread,
//! checks the context budget, then hands the request to the scheduler thread that owns the model.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::mpsc;

use super::scheduler::{self, SchedulerLimits};
use super::sequence::Admitted;
use super::{Engine, EngineError, GenerateRequest, GenerationStream, Prompt};
use crate::chat_template::{ChatTemplate, TemplateError};
use crate::loader::LoadedModel;
use crate::metrics::EngineMetrics;
use crate::model::kv_cache::blocks_for;
use crate::sampler::Sampler;
use crate::tokenizer::TextTokenizer;

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The KV pool could not be allocated.
    #[error("allocating the KV cache pool")]
    Pool(#[source] candle_core::Error),
    /// The scheduler thread could not be spawned.
    #[error("spawning the scheduler thread")]
    Thread(#[source] std::io::Error),
}

/// Serving settings for a [`LocalEngine`].
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The OpenAI model id to answer to.
    pub served_name: String,
    /// Most sequences decoded together.
    pub max_batch_size: usize,
    /// Most tokens in one forward pass (bounds prefill chunks).
    pub max_step_tokens: usize,
    /// Tokens the KV pool holds across all sequences; 0 = `max_batch_size` full-length sequences.
    /// Never less than one full-length sequence.
    pub kv_cache_tokens: usize,
    /// Tokens per KV block.
    pub kv_block_size: usize,
    /// Upper bound on the pool's bytes (from `--kv-cache-fraction`); never below one full
    /// context.
    pub kv_cache_memory_bytes: Option<usize>,
    /// Share identical prompt-prefix blocks between requests.
    pub prefix_caching: bool,
}

/// The engine that runs a loaded model on a scheduler thread.
#[derive(Debug)]
pub struct LocalEngine {
    served_name: String,
    max_context_tokens: usize,
    tokenizer: TextTokenizer,
    chat_template: Result<ChatTemplate, Arc<TemplateError>>,
    // `std::sync::mpsc::Sender` is `Send` but not `Sync` on older toolchains; a mutex keeps
    // `LocalEngine: Sync` everywhere at the cost of an uncontended lock per request.
    requests: Mutex<Option<Sender<Admitted>>>,
    alive: Arc<AtomicBool>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl LocalEngine {
    /// Allocates the KV pool and starts the scheduler thread for `loaded`.
    pub fn start(
        loaded: LoadedModel,
        config: EngineConfig,
        metrics: EngineMetrics,
    ) -> Result<Self, StartError> {
        let (tx, rx) = channel();
        let alive = Arc::new(AtomicBool::new(true));
        let max_batch_size = config.max_batch_size.max(1);
        let limits = SchedulerLimits {
            max_batch_size,
            max_step_tokens: config.max_step_tokens.max(max_batch_size),
            prefix_caching: config.prefix_caching,
        };
        let block_size = config.kv_block_size.max(1);
        let context = loaded.max_context_tokens;
        let cfg = loaded.config();
        let bytes_per_token =
            cfg.num_layers * 2 * cfg.num_kv_heads * cfg.head_dim * loaded.model.kv_dtype().bytes();
        let pool_tokens = match (config.kv_cache_tokens, config.kv_cache_memory_bytes) {
            (0, Some(bytes)) => (bytes / bytes_per_token.max(1)).min(max_batch_size * context),
            (0, None) => max_batch_size * context,
            (n, _) => n,
        }
        .max(context);
        let pool = loaded
            .model
            .new_pool(blocks_for(pool_tokens, block_size), block_size)
            .map_err(StartError::Pool)?;
        tracing::info!(
            blocks = pool.num_blocks(),
            block_size,
            mib = pool.capacity_bytes() >> 20,
            "KV cache pool allocated"
        );
        let LoadedModel {
            model,
            tokenizer,
            chat_template,
            max_context_tokens,
            ..
        } = loaded;
        let thread_tokenizer = tokenizer.clone();
        let thread_alive = alive.clone();
        let thread = std::thread::Builder::new()
            .name("hearth-scheduler".into())
            .spawn(move || {
                let _pinned = crate::pin_step_thread();
                scheduler::run(model, thread_tokenizer, pool, rx, limits, metrics, thread_alive)
            })
            .map_err(StartError::Thread)?;
        Ok(Self {
            served_name: config.served_name,
            max_context_tokens,
            tokenizer,
            chat_template,
            requests: Mutex::new(Some(tx)),
            alive,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Stops accepting requests, lets running ones finish, and waits for the scheduler thread.
    pub fn shutdown(&self) {
        if let Ok(mut guard) = self.requests.lock() {
            guard.take();
        }
        let handle = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(handle) = handle
            && handle.join().is_err()
        {
            tracing::error!("scheduler thread panicked");
        }
    }

    fn render(&self, prompt: &Prompt) -> Result<String, EngineError> {
        match prompt {
            Prompt::Text(text) => Ok(text.clone()),
            Prompt::Tokens(_) => Err(EngineError::InvalidRequest("token prompts are not text".into())),
            Prompt::Chat(messages) => {
                let template = self
                    .chat_template
                    .as_ref()
                    .map_err(|e| EngineError::Template(e.clone()))?;
                template
                    .render(messages, true)
                    .map_err(|e| EngineError::Template(Arc::new(e)))
            }
        }
    }
}

impl Engine for LocalEngine {
    fn model_id(&self) -> &str {
        &self.served_name
    }

    fn max_context_tokens(&self) -> usize {
        self.max_context_tokens
    }

    fn is_ready(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    fn submit(&self, request: GenerateRequest) -> Result<GenerationStream, EngineError> {
        let arrived = Instant::now();
        let prompt = match &request.prompt {
            Prompt::Tokens(ids) => {
                let vocab = self.tokenizer.vocab_size();
                if let Some(bad) = ids.iter().find(|&&id| id as usize >= vocab) {
                    return Err(EngineError::InvalidRequest(format!(
                        "token id {bad} is outside the vocabulary of {vocab}"
                    )));
                }
                ids.clone()
            }
            other => {
                let text = self.render(other)?;
                self.tokenizer
                    .encode(&text, true)
                    .map_err(|e| EngineError::InvalidRequest(e.to_string()))?
            }
        };
        if prompt.is_empty() {
            return Err(EngineError::InvalidRequest("the prompt is empty".into()));
        }
        let max_tokens = completion_budget(prompt.len(), request.max_tokens, self.max_context_tokens)?;
        let mut stop_token_ids = request.stop_token_ids;
        if !request.ignore_eos {
            stop_token_ids.extend_from_slice(self.tokenizer.end_of_generation());
        }
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let prompt_tokens = prompt.len();
        let admitted = Admitted {
            id: request.id,
            prompt,
            max_tokens,
            sampler: Sampler::new(request.sampling),
            stop: request.stop,
            stop_token_ids,
            priority: request.priority,
            logprobs: request.logprobs,
            arrived,
            events: events_tx,
        };
        let guard = self.requests.lock().map_err(|_| EngineError::Unavailable)?;
        let sender = guard.as_ref().ok_or(EngineError::Unavailable)?;
        sender.send(admitted).map_err(|_| EngineError::Unavailable)?;
        Ok(GenerationStream {
            prompt_tokens,
            events: events_rx,
        })
    }
}

impl Drop for LocalEngine {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The completion tokens a request may generate: its `max_tokens`, else the context left after
/// the prompt (as vLLM does). Refused when it is 0 or when prompt plus completion exceed the
/// context, however large the number (no sum overflows).
pub fn completion_budget(
    prompt_tokens: usize,
    requested: Option<usize>,
    limit: usize,
) -> Result<usize, EngineError> {
    let max_tokens = requested.unwrap_or_else(|| limit.saturating_sub(prompt_tokens).max(1));
    if max_tokens == 0 {
        return Err(EngineError::InvalidRequest(
            "`max_tokens` must be at least 1".into(),
        ));
    }
    if prompt_tokens
        .checked_add(max_tokens)
        .is_none_or(|total| total > limit)
    {
        return Err(EngineError::ContextLengthExceeded {
            prompt_tokens,
            max_tokens,
            limit,
        });
    }
    Ok(max_tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_length_message_survives_max_tokens_at_the_limit() {
        let error = completion_budget(100, Some(usize::MAX), 2048).expect_err("refused");
        assert!(
            error
                .to_string()
                .contains(&format!("requested {} tokens", usize::MAX)),
            "{error}"
        );
    }

    #[test]
    fn completion_budgets_default_to_the_context_left_and_never_overflow() {
        assert_eq!(completion_budget(100, None, 2048).ok(), Some(1948));
        assert_eq!(completion_budget(100, Some(64), 2048).ok(), Some(64));
        assert!(matches!(
            completion_budget(100, Some(usize::MAX), 2048),
            Err(EngineError::ContextLengthExceeded {
                max_tokens: usize::MAX,
                ..
            })
        ));
        assert!(matches!(
            completion_budget(100, Some(1949), 2048),
            Err(EngineError::ContextLengthExceeded { .. })
        ));
        assert!(matches!(
            completion_budget(1, Some(0), 2048),
            Err(EngineError::InvalidRequest(_))
        ));
    }
}
