//! Arbitrary bytes as the body of `POST /v1/chat/completions` and of `POST /v1/completions`,
//! through the engine's whole path for a request: the JSON, the messages or prompt, the
//! generation parameters, the chat template (SmolLM2's) and the tokenizer, the context budget,
//! and the OpenAI error a refusal becomes; an accepted request then samples a token. Whatever the
//! bytes, the answer is a request the engine can run or a 4xx error whose body serializes.
#![no_main]

use std::sync::LazyLock;

use hearth_engine::chat_template::ChatTemplate;
use hearth_engine::engine::{EngineError, GenerateRequest, Prompt, completion_budget};
use hearth_engine::openai::chat::ChatCompletionRequest;
use hearth_engine::openai::completions::{CompletionRequest, DEFAULT_MAX_TOKENS};
use hearth_engine::openai::{ApiError, GenerationParams, MAX_CHOICES, MAX_TOP_LOGPROBS};
use hearth_engine::sampler::{LogprobTable, Sampler, TokenHistory};
use hearth_engine::tokenizer::TextTokenizer;
use libfuzzer_sys::fuzz_target;
use runtime_node_fuzz::vocab;

/// SmolLM2-135M-Instruct's chat template, as its GGUF ships it.
const SMOLLM2_TEMPLATE: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// SmolLM2's context length.
const CONTEXT_TOKENS: usize = 8192;

struct Model {
    tokenizer: TextTokenizer,
    template: ChatTemplate,
}

static MODEL: LazyLock<Model> = LazyLock::new(|| {
    let tokenizer = vocab::byte_level();
    let template = ChatTemplate::new(Some(SMOLLM2_TEMPLATE), tokenizer.bos_token(), tokenizer.eos_token())
        .expect("SmolLM2's template compiles");
    Model { tokenizer, template }
});

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = serde_json::from_slice::<ChatCompletionRequest>(data) {
        check(&request.params, chat(&request));
    }
    if let Ok(request) = serde_json::from_slice::<CompletionRequest>(data) {
        check(&request.params, completion(&request));
    }
});

/// What the chat handler and the engine's `submit` do with a parsed body.
fn chat(request: &ChatCompletionRequest) -> Result<(GenerateRequest, Vec<u32>), ApiError> {
    let messages = request.template_messages()?;
    let generate = request.params.to_request("fuzz", Prompt::Chat(messages), None, 0)?;
    admit(generate)
}

/// What the completions handler and the engine's `submit` do with a parsed body.
fn completion(request: &CompletionRequest) -> Result<(GenerateRequest, Vec<u32>), ApiError> {
    let prompt = request.engine_prompt()?;
    let generate = request
        .params
        .to_request("fuzz", prompt, Some(DEFAULT_MAX_TOKENS), 0)?;
    admit(generate)
}

/// The engine's side: the prompt's tokens (vocabulary checked, or rendered and encoded), then
/// the context budget.
fn admit(mut generate: GenerateRequest) -> Result<(GenerateRequest, Vec<u32>), ApiError> {
    let model = &*MODEL;
    let invalid = |message: String| ApiError::from(EngineError::InvalidRequest(message));
    let prompt = match &generate.prompt {
        Prompt::Tokens(ids) => {
            let vocab = model.tokenizer.vocab_size();
            if let Some(bad) = ids.iter().find(|&&id| id as usize >= vocab) {
                return Err(invalid(format!("token id {bad} is outside the vocabulary")));
            }
            ids.clone()
        }
        Prompt::Text(text) => model.tokenizer.encode(text, true).map_err(|e| invalid(e.to_string()))?,
        Prompt::Chat(messages) => {
            let text = model
                .template
                .render(messages, true)
                .map_err(|e| ApiError::from(EngineError::Template(e.into())))?;
            model.tokenizer.encode(&text, true).map_err(|e| invalid(e.to_string()))?
        }
    };
    if prompt.is_empty() {
        return Err(invalid("the prompt is empty".into()));
    }
    let budget = completion_budget(prompt.len(), generate.max_tokens, CONTEXT_TOKENS)?;
    generate.max_tokens = Some(budget);
    Ok((generate, prompt))
}

/// An accepted request is within every documented limit and samples a token from the
/// vocabulary; a refusal is a 4xx with a serializable OpenAI error body.
fn check(params: &GenerationParams, result: Result<(GenerateRequest, Vec<u32>), ApiError>) {
    match result {
        Ok((generate, prompt)) => {
            assert!((1..=MAX_CHOICES).contains(&params.choices()), "n = {}", params.choices());
            assert!(generate.stop.len() <= 16, "{} stop strings", generate.stop.len());
            assert!(generate.logprobs.is_none_or(|top| top <= MAX_TOP_LOGPROBS));
            let budget = generate.max_tokens.unwrap_or(0);
            assert!(budget >= 1 && prompt.len() + budget <= CONTEXT_TOKENS);
            generate.sampling.validate().expect("accepted sampling parameters are valid");
            sample(generate, &prompt);
        }
        Err(error) => {
            assert!(error.status.is_client_error(), "{error:?}");
            serde_json::to_string(&error.body()).expect("the error body serializes");
        }
    }
}

fn sample(mut generate: GenerateRequest, prompt: &[u32]) {
    // Unseeded requests draw a seed from the OS; a fixed one keeps runs reproducible.
    generate.sampling.seed.get_or_insert(0);
    let vocab = MODEL.tokenizer.vocab_size();
    let mut logits: Vec<f32> = (0..vocab).map(|i| ((i * 7919) % 97) as f32 / 8.0 - 6.0).collect();
    if let Some(top) = generate.logprobs {
        assert!(LogprobTable::new(&logits, top).top.len() <= top);
    }
    let mut sampler = Sampler::new(generate.sampling);
    let token = sampler.sample(&mut logits, &TokenHistory::new(prompt));
    assert!((token as usize) < vocab, "sampled {token} from {vocab} tokens");
}
