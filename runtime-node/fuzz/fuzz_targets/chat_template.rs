//! Hostile chat messages through the engine's chat-template renderer. The input is text whose
//! sections (split on 0x1E) are messages, `role` 0x1F `content`, with any roles and any content:
//! template syntax, control characters, odd Unicode. The first byte's low bit asks for the
//! generation prompt.
//!
//! With SmolLM2's template the output must be exactly the ChatML the template describes: message
//! text is data, never template code. A second template hands message text to every helper the
//! engine gives templates (Python string methods, `tojson`, `strftime_now`, `raise_exception`),
//! as a hostile model file could: each renders or fails with an error, never a panic.
#![no_main]

use std::sync::LazyLock;

use hearth_engine::chat_template::{ChatTemplate, TemplateError, TemplateMessage};
use libfuzzer_sys::fuzz_target;
use runtime_node_fuzz::input::{FIELD, SECTION};

/// SmolLM2-135M-Instruct's chat template, as its GGUF ships it.
const SMOLLM2_TEMPLATE: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// The system prompt SmolLM2's template adds when the first message is not a system one.
const SMOLLM2_SYSTEM: &str =
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n";

/// Message text passed to the helpers: role `date` is a `strftime_now` format, role `raise` an
/// exception message; every message goes through the Python string methods and `tojson`.
const HELPERS_TEMPLATE: &str = "{{ bos_token }}{% for m in messages %}\
{{ m.content.strip() }}|{{ m.content.split(m.role) | length }}|{{ m.content.replace(m.role, '') }}|\
{{ m.content.startswith(m.role) }}|{{ m.content.upper().title() }}|{{ m | tojson }}|{{ tojson(m.content) }}\
{% if m.role == 'date' %}{{ strftime_now(m.content) }}{% endif %}\
{% if m.role == 'raise' %}{{ raise_exception(m.content) }}{% endif %}\
{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

struct Templates {
    smollm2: ChatTemplate,
    helpers: ChatTemplate,
}

static TEMPLATES: LazyLock<Templates> = LazyLock::new(|| Templates {
    smollm2: ChatTemplate::new(Some(SMOLLM2_TEMPLATE), "<|im_start|>", "<|im_end|>").expect("compiles"),
    helpers: ChatTemplate::new(Some(HELPERS_TEMPLATE), "<s>", "</s>").expect("compiles"),
});

fuzz_target!(|data: &[u8]| {
    let Some((&flags, text)) = data.split_first() else {
        return;
    };
    let add_generation_prompt = flags & 1 == 1;
    let text = String::from_utf8_lossy(text);
    let messages: Vec<TemplateMessage> = text.split(SECTION).map(message).collect();

    let rendered = TEMPLATES
        .smollm2
        .render(&messages, add_generation_prompt)
        .expect("SmolLM2's template renders any messages");
    assert_eq!(rendered, chatml(&messages, add_generation_prompt));

    match TEMPLATES.helpers.render(&messages, add_generation_prompt) {
        Ok(_) | Err(TemplateError::Render(_)) => {}
        Err(other) => panic!("a compiled template failed as {other:?}"),
    }
});

fn message(section: &str) -> TemplateMessage {
    let (role, content) = section.split_once(FIELD).unwrap_or(("user", section));
    TemplateMessage {
        role: role.to_string(),
        content: content.to_string(),
    }
}

/// What SmolLM2's template renders, written out.
fn chatml(messages: &[TemplateMessage], add_generation_prompt: bool) -> String {
    let mut out = String::new();
    if messages.first().is_some_and(|m| m.role != "system") {
        out.push_str(SMOLLM2_SYSTEM);
    }
    for m in messages {
        out.push_str(&format!("<|im_start|>{}\n{}<|im_end|>\n", m.role, m.content));
    }
    if add_generation_prompt {
        out.push_str("<|im_start|>assistant\n");
    }
    out
}
