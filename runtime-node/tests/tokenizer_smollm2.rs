//! The tokenizer rebuilt from SmolLM2's GGUF metadata: round trips, special tokens, end-of-turn
//! ids. (Agreement with llama.cpp's tokenization is checked in `reference_llama_cpp.rs`.)

mod common;

use hearth_engine::model::GgufFile;
use hearth_engine::tokenizer::TextTokenizer;

fn tokenizer() -> Option<TextTokenizer> {
    let path = common::smollm2_gguf()?;
    let gguf = GgufFile::open(&path).expect("GGUF opens");
    Some(TextTokenizer::from_gguf(&gguf).expect("tokenizer builds"))
}

#[test]
fn round_trips_text() {
    let Some(tok) = tokenizer() else { return };
    assert_eq!(tok.vocab_size(), 49152);
    for text in [
        "Hello world",
        "  two leading spaces and trailing  ",
        "tabs\tand\nnewlines\n\n",
        "digits 1234567890 and 3.14",
        "Unicode: café, naïve, 日本語, Ελληνικά, emoji 🙂🚀",
        "code: fn main() { println!(\"{}\", x); }",
        "",
    ] {
        let ids = tok.encode(text, false).expect("encodes");
        assert_eq!(tok.decode(&ids, false).expect("decodes"), text, "ids {ids:?}");
    }
    assert_eq!(
        tok.encode("Hello world", false).expect("encodes"),
        vec![19556, 905]
    );
}

#[test]
fn special_tokens_are_single_ids_and_skippable() {
    let Some(tok) = tokenizer() else { return };
    let ids = tok
        .encode("<|im_start|>user\nHi<|im_end|>", true)
        .expect("encodes");
    assert_eq!(ids.first(), Some(&1), "<|im_start|> is id 1: {ids:?}");
    assert_eq!(ids.last(), Some(&2), "<|im_end|> is id 2: {ids:?}");
    assert_eq!(tok.decode(&ids, true).expect("decodes"), "user\nHi");
    // SmolLM2 does not ask for BOS, so none is added.
    assert_eq!(
        tok.encode("Hi", true).expect("encodes"),
        tok.encode("Hi", false).expect("encodes")
    );
    let eog = tok.end_of_generation();
    assert!(
        eog.contains(&2) && eog.contains(&0),
        "<|im_end|> and <|endoftext|> end generation: {eog:?}"
    );
    assert_eq!(tok.eos_token(), "<|im_end|>");
}
