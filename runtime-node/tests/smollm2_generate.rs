//! Loads the real SmolLM2-135M GGUF and generates greedily from a chat prompt.

mod common;

use candle_core::Device;
use hearth_engine::chat_template::TemplateMessage;
use hearth_engine::loader::{LoadOptions, load_gguf};
use hearth_engine::model::llama::argmax_rows;
use hearth_engine::model::{BlockTable, StepInput};

#[test]
fn greedy_chat_completion_is_sensible() {
    let Some(path) = common::smollm2_gguf() else {
        return;
    };
    let loaded = load_gguf(
        &path,
        &LoadOptions {
            max_context_tokens: 512,
            ..LoadOptions::default()
        },
        &Device::Cpu,
    )
    .expect("model loads");
    eprintln!("loaded {} in {:?}", path.display(), loaded.load_time);
    let template = loaded
        .chat_template
        .as_ref()
        .expect("SmolLM2 ships a chat template");
    let prompt = template
        .render(
            &[TemplateMessage {
                role: "user".into(),
                content: "List three colours of the rainbow.".into(),
            }],
            true,
        )
        .expect("renders");
    let prompt_ids = loaded.tokenizer.encode(&prompt, true).expect("encodes");
    let mut pool = loaded.model.new_pool(32, 16).expect("pool");
    let mut table = BlockTable::default();
    let mut next = prompt_ids.clone();
    let mut generated = Vec::new();
    let started = std::time::Instant::now();
    for _ in 0..48 {
        let logits = loaded
            .model
            .forward(
                &mut [StepInput {
                    tokens: &next,
                    table: &mut table,
                }],
                &mut pool,
            )
            .expect("forward");
        let token = argmax_rows(&logits).expect("argmax")[0];
        if loaded.tokenizer.end_of_generation().contains(&token) {
            break;
        }
        generated.push(token);
        next = vec![token];
    }
    let elapsed = started.elapsed();
    let text = loaded.tokenizer.decode(&generated, true).expect("decodes");
    eprintln!("{} tokens in {elapsed:?}: {text:?}", generated.len());
    assert!(!generated.is_empty());
    // A 135M model rambles, but it stays on topic and writes words.
    assert!(
        text.to_lowercase().contains("rainbow"),
        "off-topic completion {text:?}"
    );
    assert!(text.split_whitespace().count() >= 5, "too few words in {text:?}");
}
