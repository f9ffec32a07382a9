//! A `tokenizers::Tokenizer` rebuilt from GGUF metadata (`tokenizer.ggml.*`), so a GGUF file is
//! self-sufficient: vocabulary, merges, special tokens and the pre-tokenizer its `pre` names.
//! SentencePiece (`llama`) models are built in `tokenizer_spm`.

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::unicode::NFC;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer};

use crate::model::{GgufFile, LoadError};
use crate::tokenizer_spm::sentencepiece_tokenizer;

// llama.cpp's pre-tokenizer regexes, by the `tokenizer.ggml.pre` value that selects them.
const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

// GGUF token types (llama.cpp `llama_token_type`).
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

// Control tokens that end a turn in common chat formats, beyond the declared EOS.
const END_OF_TURN_NAMES: &[&str] = &[
    "<|im_end|>",
    "<|eot_id|>",
    "<|endoftext|>",
    "<|end|>",
    "<end_of_turn>",
    "<|eom_id|>",
];

/// A JSON file's contents, or `null` when it is absent or unreadable (optional config files).
pub fn read_json(path: &std::path::Path) -> serde_json::Value {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or(serde_json::Value::Null)
}

/// Why text could not be turned into tokens or back.
#[derive(Debug, thiserror::Error)]
#[error("tokenizer: {0}")]
pub struct TokenizerError(String);

/// The model's tokenizer plus the special-token facts the engine needs.
#[derive(Debug, Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    bos_id: Option<u32>,
    add_bos: bool,
    end_of_generation: Vec<u32>,
    bos_token: String,
    eos_token: String,
}

impl TextTokenizer {
    /// Builds the tokenizer described by `gguf`'s metadata: GPT-2-style byte-level BPE (`gpt2`)
    /// or Llama's SentencePiece (`llama`).
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self, LoadError> {
        let err = |message: String| LoadError::Tokenizer {
            path: gguf.path().to_path_buf(),
            message,
        };
        let kind = gguf.string("tokenizer.ggml.model")?;
        let build: fn(&GgufFile, &[String]) -> Result<Tokenizer, LoadError> = match kind {
            "gpt2" => byte_level_tokenizer,
            "llama" => sentencepiece_tokenizer,
            other => {
                return Err(err(format!(
                    "tokenizer model `{other}` is not supported (only byte-level BPE, `gpt2`, \
                     and SentencePiece, `llama`)"
                )));
            }
        };
        let tokens = gguf.strings("tokenizer.ggml.tokens")?;
        let mut inner = build(gguf, &tokens)?;

        // Control and user-defined tokens are matched verbatim before BPE runs.
        let types = gguf.opt_ints("tokenizer.ggml.token_type")?.unwrap_or_default();
        let mut special = Vec::new();
        let mut end_of_generation = Vec::new();
        for (id, ty) in types.iter().enumerate() {
            let Some(text) = tokens.get(id) else { break };
            if *ty == TOKEN_TYPE_CONTROL || *ty == TOKEN_TYPE_USER_DEFINED {
                special.push(AddedToken::from(text.clone(), *ty == TOKEN_TYPE_CONTROL));
            }
            if *ty == TOKEN_TYPE_CONTROL && END_OF_TURN_NAMES.contains(&text.as_str()) {
                end_of_generation.push(id as u32);
            }
        }
        inner
            .add_special_tokens(special)
            .map_err(|e| err(format!("special tokens: {e}")))?;

        let token_id = |key: &str| -> Result<Option<u32>, LoadError> {
            match gguf.opt_usize(key)? {
                Some(id) if id < tokens.len() => Ok(Some(id as u32)),
                Some(id) => Err(err(format!(
                    "`{key}` = {id} is outside the vocabulary of {}",
                    tokens.len()
                ))),
                None => Ok(None),
            }
        };
        let bos_id = token_id("tokenizer.ggml.bos_token_id")?;
        let eos_id = token_id("tokenizer.ggml.eos_token_id")?;
        for id in [eos_id, token_id("tokenizer.ggml.eot_token_id")?]
            .into_iter()
            .flatten()
        {
            if !end_of_generation.contains(&id) {
                end_of_generation.push(id);
            }
        }
        let name = |id: Option<u32>| {
            id.and_then(|i| tokens.get(i as usize))
                .cloned()
                .unwrap_or_default()
        };
        Ok(Self {
            inner,
            bos_id,
            // llama.cpp's defaults: SentencePiece models start with BOS, GPT-2-style ones do not.
            add_bos: gguf
                .opt_bool("tokenizer.ggml.add_bos_token")?
                .unwrap_or(kind == "llama"),
            end_of_generation,
            bos_token: name(bos_id),
            eos_token: name(eos_id),
        })
    }

    /// Loads `tokenizer.json` of a Hugging Face model folder, with BOS/EOS from
    /// `tokenizer_config.json` and extra end-of-turn ids from `generation_config.json`.
    pub fn from_hf(dir: &std::path::Path) -> Result<Self, LoadError> {
        let path = dir.join("tokenizer.json");
        let err = |message: String| LoadError::Tokenizer {
            path: path.clone(),
            message,
        };
        let inner = Tokenizer::from_file(&path).map_err(|e| err(e.to_string()))?;
        let config = read_json(&dir.join("tokenizer_config.json"));
        // Special tokens are a string or `{"content": ...}`.
        let token_text = |key: &str| match &config[key] {
            serde_json::Value::String(s) => Some(s.clone()),
            v => v["content"].as_str().map(str::to_string),
        };
        let bos_token = token_text("bos_token").unwrap_or_default();
        let eos_token = token_text("eos_token").unwrap_or_default();
        let bos_id = inner.token_to_id(&bos_token);
        let mut end_of_generation: Vec<u32> = inner.token_to_id(&eos_token).into_iter().collect();
        let generation = read_json(&dir.join("generation_config.json"));
        let ids = match &generation["eos_token_id"] {
            serde_json::Value::Array(ids) => ids.iter().filter_map(|v| v.as_u64()).collect(),
            v => v.as_u64().into_iter().collect::<Vec<_>>(),
        };
        for id in ids {
            if !end_of_generation.contains(&(id as u32)) {
                end_of_generation.push(id as u32);
            }
        }
        for name in END_OF_TURN_NAMES {
            if let Some(id) = inner.token_to_id(name)
                && !end_of_generation.contains(&id)
            {
                end_of_generation.push(id);
            }
        }
        Ok(Self {
            inner,
            bos_id,
            add_bos: config["add_bos_token"].as_bool().unwrap_or(false),
            end_of_generation,
            bos_token,
            eos_token,
        })
    }

    /// Token ids for `text`; special-token text (e.g. `<|im_start|>`) maps to its single id.
    /// Prepends BOS when the model asks for it and `add_bos` is set.
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>, TokenizerError> {
        let encoding = self
            .inner
            .encode(text, false)
            .map_err(|e| TokenizerError(e.to_string()))?;
        let mut ids = Vec::with_capacity(encoding.len() + 1);
        if add_bos
            && self.add_bos
            && let Some(bos) = self.bos_id
            && encoding.get_ids().first() != Some(&bos)
        {
            ids.push(bos);
        }
        ids.extend_from_slice(encoding.get_ids());
        Ok(ids)
    }

    /// Text for `ids`; control tokens are dropped when `skip_special` is set.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, TokenizerError> {
        self.inner
            .decode(ids, skip_special)
            .map_err(|e| TokenizerError(e.to_string()))
    }

    /// Tokens that end generation: EOS, EOT and the chat formats' end-of-turn markers.
    pub fn end_of_generation(&self) -> &[u32] {
        &self.end_of_generation
    }

    /// The BOS token's text, for chat templates.
    pub fn bos_token(&self) -> &str {
        &self.bos_token
    }

    /// The EOS token's text, for chat templates.
    pub fn eos_token(&self) -> &str {
        &self.eos_token
    }

    /// Number of tokens in the vocabulary, special tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }
}

/// GPT-2-style byte-level BPE from `tokens` and `tokenizer.ggml.merges`, with the pre-tokenizer
/// `tokenizer.ggml.pre` names (GPT-2's split when it is absent or unknown).
fn byte_level_tokenizer(gguf: &GgufFile, tokens: &[String]) -> Result<Tokenizer, LoadError> {
    let err = |message: String| LoadError::Tokenizer {
        path: gguf.path().to_path_buf(),
        message,
    };
    let merges = gguf
        .strings("tokenizer.ggml.merges")?
        .into_iter()
        .map(|m| match m.split_once(' ') {
            Some((a, b)) => Ok((a.to_string(), b.to_string())),
            None => Err(err(format!("merge `{m}` is not two tokens separated by a space"))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let vocab: tokenizers::models::bpe::Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| err(format!("building BPE: {e}")))?;
    let mut inner = Tokenizer::new(bpe);

    let pre = gguf.opt_string("tokenizer.ggml.pre")?.unwrap_or("gpt2");
    let split = |regex: &str| {
        Split::new(
            SplitPattern::Regex(regex.to_string()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| err(format!("pre-tokenizer regex: {e}")))
    };
    let pre_tokenizer: PreTokenizerWrapper = match pre {
        "llama3" | "llama-bpe" | "smaug-bpe" => Sequence::new(vec![
            split(LLAMA3_REGEX)?.into(),
            ByteLevel::new(false, true, false).into(),
        ])
        .into(),
        "qwen2" => {
            inner
                .with_normalizer(Some(NFC))
                .map_err(|e| err(format!("normalizer: {e}")))?;
            Sequence::new(vec![
                split(QWEN2_REGEX)?.into(),
                ByteLevel::new(false, true, false).into(),
            ])
            .into()
        }
        // SmolLM: every digit on its own, then GPT-2's split.
        "smollm" => Sequence::new(vec![
            Digits::new(true).into(),
            ByteLevel::new(false, true, true).into(),
        ])
        .into(),
        "gpt2" | "default" => ByteLevel::new(false, true, true).into(),
        other => {
            tracing::warn!(pre = other, "unknown GGUF pre-tokenizer; using GPT-2's split");
            ByteLevel::new(false, true, true).into()
        }
    };
    inner.with_pre_tokenizer(Some(pre_tokenizer));
    inner.with_decoder(Some(ByteLevelDecoder::default()));
    Ok(inner)
}
