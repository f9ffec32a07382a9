//! Two small tokenizers built from in-memory GGUF metadata, the way the engine builds a model's:
//! SmolLM2's kind (byte-level BPE, the `smollm` pre-tokenizer, ChatML control tokens) and
//! Llama's SentencePiece kind (scored pieces, byte fallback, `▁` for spaces).

use std::io::Cursor;
use std::path::Path;

use candle_core::quantized::gguf_file::{self, Value};
use hearth_engine::model::GgufFile;
use hearth_engine::tokenizer::TextTokenizer;

/// Control tokens of the byte-level vocabulary, at SmolLM2's ids 0-2.
pub const CHATML_CONTROL: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];

/// Control tokens of the SentencePiece vocabulary, after `<unk>` at id 0.
pub const LLAMA_CONTROL: [&str; 2] = ["<s>", "</s>"];

/// Text the merges spell as single tokens: words, whitespace runs, template syntax and
/// multi-byte characters, so encoding exercises merges across character boundaries.
const WORDS: &[&str] = &[
    "the", " the", " and", "ing", "er", "in", " a", " 1", "\n\n", "  ", "    ", "é", "日本", "🙂",
    "<|", "|>", "im_", "{{", "}}", "{%", "'s",
];

// GGUF token types (llama.cpp `llama_token_type`).
const NORMAL: i32 = 1;
const UNKNOWN: i32 = 2;
const CONTROL: i32 = 3;
const BYTE: i32 = 6;

/// The byte-level BPE tokenizer: SmolLM2's control tokens, the 256 byte symbols and merges
/// spelling [`WORDS`].
pub fn byte_level() -> TextTokenizer {
    let alphabet = byte_alphabet();
    let mut tokens: Vec<String> = CHATML_CONTROL.map(String::from).to_vec();
    tokens.extend(alphabet.iter().map(char::to_string));
    let mut merges = Vec::new();
    for word in WORDS {
        let mut symbols = word.bytes().map(|b| alphabet[usize::from(b)].to_string());
        let Some(mut merged) = symbols.next() else { continue };
        for symbol in symbols {
            let next = format!("{merged}{symbol}");
            if !tokens.contains(&next) {
                merges.push(format!("{merged} {symbol}"));
                tokens.push(next.clone());
            }
            merged = next;
        }
    }
    let types: Vec<i32> = (0..tokens.len())
        .map(|id| if id < CHATML_CONTROL.len() { CONTROL } else { NORMAL })
        .collect();
    tokenizer(vec![
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.pre", Value::String("smollm".into())),
        ("tokenizer.ggml.tokens", strings(&tokens)),
        ("tokenizer.ggml.merges", strings(&merges)),
        ("tokenizer.ggml.token_type", ints(&types)),
        ("tokenizer.ggml.bos_token_id", Value::U32(1)),
        ("tokenizer.ggml.eos_token_id", Value::U32(2)),
        ("tokenizer.ggml.add_bos_token", Value::Bool(false)),
    ])
}

/// The SentencePiece tokenizer: `<unk>`, `<s>`, `</s>`, the 256 byte pieces, then the letters
/// and every prefix of [`WORDS`] (spaces as `▁`), earlier pieces scoring higher.
pub fn sentencepiece() -> TextTokenizer {
    let mut tokens = vec!["<unk>".to_string()];
    tokens.extend(LLAMA_CONTROL.map(String::from));
    tokens.extend((0..=255u8).map(|b| format!("<0x{b:02X}>")));
    let mut types = vec![UNKNOWN, CONTROL, CONTROL];
    types.resize(tokens.len(), BYTE);
    let mut pieces: Vec<String> = ('a'..='z').map(String::from).collect();
    pieces.push("\u{2581}".into());
    for word in WORDS {
        let word = word.replace(' ', "\u{2581}");
        for (end, c) in word.char_indices() {
            pieces.push(word[..end + c.len_utf8()].to_string());
            pieces.push(c.to_string());
        }
    }
    for piece in pieces {
        if !tokens.contains(&piece) {
            tokens.push(piece);
            types.push(NORMAL);
        }
    }
    let scores: Vec<Value> = (0..tokens.len())
        .map(|id| Value::F32(if types[id] == NORMAL { -(id as f32) } else { 0.0 }))
        .collect();
    tokenizer(vec![
        ("tokenizer.ggml.model", Value::String("llama".into())),
        ("tokenizer.ggml.tokens", strings(&tokens)),
        ("tokenizer.ggml.scores", Value::Array(scores)),
        ("tokenizer.ggml.token_type", ints(&types)),
        ("tokenizer.ggml.bos_token_id", Value::U32(1)),
        ("tokenizer.ggml.eos_token_id", Value::U32(2)),
        ("tokenizer.ggml.unknown_token_id", Value::U32(0)),
    ])
}

/// GPT-2's byte-to-symbol map: printable bytes stand for themselves, the rest for code points
/// from U+0100 on.
fn byte_alphabet() -> Vec<char> {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut next = 0x100;
    (0..=255u8)
        .map(|b| {
            if printable(b) {
                return char::from(b);
            }
            next += 1;
            char::from_u32(next - 1).expect("U+0100 to U+0143 are characters")
        })
        .collect()
}

fn strings(items: &[String]) -> Value {
    Value::Array(items.iter().cloned().map(Value::String).collect())
}

fn ints(items: &[i32]) -> Value {
    Value::Array(items.iter().copied().map(Value::I32).collect())
}

/// The engine's tokenizer for a GGUF file holding only `metadata`.
fn tokenizer(metadata: Vec<(&str, Value)>) -> TextTokenizer {
    let metadata: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    let mut bytes = Cursor::new(Vec::new());
    gguf_file::write(&mut bytes, &metadata, &[]).expect("writes GGUF metadata");
    bytes.set_position(0);
    let gguf = GgufFile::from_reader(Path::new("fuzz-vocab.gguf"), bytes).expect("reads GGUF metadata");
    TextTokenizer::from_gguf(&gguf).expect("builds the tokenizer")
}
