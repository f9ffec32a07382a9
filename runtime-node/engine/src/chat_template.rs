//! The model's own Jinja chat template (`tokenizer.chat_template`), rendered with minijinja and
//! the helpers Hugging Face templates expect (`raise_exception`, `strftime_now`, `tojson`,
//! Python string methods).

use std::fmt::Write;

use minijinja::syntax::SyntaxConfig;
use minijinja::{Environment, Error as JinjaError, ErrorKind, Value, context};
use serde::Serialize;

const TEMPLATE_NAME: &str = "chat";

/// Why a conversation could not be rendered into a prompt. The cause is part of the message (not
/// a `source`) because API clients see only the message.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// The model ships no chat template, so chat requests cannot be formatted.
    #[error("this model has no chat template (GGUF key `tokenizer.chat_template`); use /v1/completions")]
    Missing,
    /// The template does not parse.
    #[error("the model's chat template does not compile: {0}")]
    Compile(JinjaError),
    /// The template refused the conversation (e.g. via `raise_exception`) or failed.
    #[error("chat template: {0}")]
    Render(JinjaError),
}

/// One chat message as templates see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TemplateMessage {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    /// The message text.
    pub content: String,
}

/// A compiled chat template with the model's special-token strings.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

impl ChatTemplate {
    /// Compiles `source`; `None` (no template in the model) yields [`TemplateError::Missing`].
    pub fn new(source: Option<&str>, bos_token: &str, eos_token: &str) -> Result<Self, TemplateError> {
        let source = source.ok_or(TemplateError::Missing)?;
        let mut env = Environment::new();
        // Transformers renders with these two on; templates are written for them.
        let syntax = SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(TemplateError::Compile)?;
        env.set_syntax(syntax);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_function("tojson", tojson);
        env.add_template_owned(TEMPLATE_NAME, source.to_string())
            .map_err(TemplateError::Compile)?;
        Ok(Self {
            env,
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
        })
    }

    /// Renders `messages`; with `add_generation_prompt` the text ends where the assistant's
    /// reply should begin.
    pub fn render(
        &self,
        messages: &[TemplateMessage],
        add_generation_prompt: bool,
    ) -> Result<String, TemplateError> {
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(TemplateError::Render)?;
        template
            .render(context! {
                messages => Value::from(minijinja::value::Serde(messages)),
                add_generation_prompt => add_generation_prompt,
                bos_token => &self.bos_token,
                eos_token => &self.eos_token,
                tools => Value::from(()),
            })
            .map_err(TemplateError::Render)
    }
}

fn raise_exception(message: String) -> Result<Value, JinjaError> {
    Err(JinjaError::new(ErrorKind::InvalidOperation, message))
}

// A template's format string may be malformed: an error for the request, not a panic.
fn strftime_now(format: String) -> Result<String, JinjaError> {
    let mut out = String::new();
    write!(out, "{}", chrono::Local::now().format(&format)).map_err(|_| {
        JinjaError::new(
            ErrorKind::InvalidOperation,
            format!("invalid strftime format `{format}`"),
        )
    })?;
    Ok(out)
}

fn tojson(value: Value) -> Result<Value, JinjaError> {
    serde_json::to_string(&value)
        .map(Value::from_safe_string)
        .map_err(|e| JinjaError::new(ErrorKind::InvalidOperation, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHATML: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    fn user(text: &str) -> TemplateMessage {
        TemplateMessage {
            role: "user".into(),
            content: text.into(),
        }
    }

    #[test]
    fn chatml_with_generation_prompt() {
        let t = ChatTemplate::new(Some(CHATML), "<|im_start|>", "<|im_end|>").expect("compiles");
        let out = t.render(&[user("Hi")], true).expect("renders");
        assert_eq!(
            out,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        let out = t.render(&[user("Hi")], false).expect("renders");
        assert!(out.ends_with("Hi<|im_end|>\n"));
    }

    #[test]
    fn missing_template_is_a_clear_error() {
        let err = ChatTemplate::new(None, "", "").expect_err("missing");
        assert!(err.to_string().contains("no chat template"));
    }

    #[test]
    fn raise_exception_surfaces_the_message() {
        let src = "{% if messages[0]['role'] != 'user' %}{{ raise_exception('first message must be user') }}{% endif %}ok";
        let t = ChatTemplate::new(Some(src), "", "").expect("compiles");
        let msg = TemplateMessage {
            role: "assistant".into(),
            content: "x".into(),
        };
        let err = t.render(&[msg], true).expect_err("raises");
        assert!(err.to_string().contains("first message must be user"), "{err}");
    }

    #[test]
    fn strftime_now_with_an_invalid_format_is_an_error() {
        let t = ChatTemplate::new(Some("{{ strftime_now('%H:%') }}"), "", "").expect("compiles");
        let err = t.render(&[user("x")], true).expect_err("refused");
        assert!(err.to_string().contains("%H:%"), "{err}");
    }

    #[test]
    fn python_methods_tojson_and_strftime() {
        let src = "{{ messages[0]['content'].strip() }}|{{ messages[0] | tojson }}|{{ tojson(1) }}|{{ strftime_now('%Y') | length }}|{{ bos_token }}";
        let t = ChatTemplate::new(Some(src), "<s>", "</s>").expect("compiles");
        let out = t.render(&[user("  hello ")], false).expect("renders");
        // The `tojson` filter writes Python's `json.dumps` spacing, as transformers does.
        assert_eq!(
            out,
            "hello|{\"role\": \"user\", \"content\": \"  hello \"}|1|4|<s>"
        );
    }
}
