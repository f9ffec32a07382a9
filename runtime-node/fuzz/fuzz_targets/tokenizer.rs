//! Arbitrary bytes, as lossy UTF-8 text, through the engine's two tokenizer kinds (built in
//! memory from GGUF metadata: byte-level BPE like SmolLM2's, SentencePiece like Llama's), then
//! back through `decode` and the streaming decoder; the same bytes also as token ids.
//!
//! Round trips where the tokenizer promises them: byte-level BPE gives back any text, special
//! tokens included; SentencePiece gives back text that has no `▁` (its stand-in for a space) and
//! no control-token text (llama.cpp, like SentencePiece, starts every piece of text after a
//! control token with a space). Streamed deltas add up to what decoding the whole answer gives.
#![no_main]

use std::sync::LazyLock;

use hearth_engine::engine::text::IncrementalDecoder;
use hearth_engine::tokenizer::TextTokenizer;
use libfuzzer_sys::fuzz_target;
use runtime_node_fuzz::vocab;

static BYTE_LEVEL: LazyLock<TextTokenizer> = LazyLock::new(vocab::byte_level);
static SENTENCEPIECE: LazyLock<TextTokenizer> = LazyLock::new(vocab::sentencepiece);

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);

    let ids = round_trip(&BYTE_LEVEL, &text, true);
    streams_like_a_whole_decode(&BYTE_LEVEL, &ids);

    let spm_round_trips = !text.contains('\u{2581}') && !vocab::LLAMA_CONTROL.iter().any(|c| text.contains(c));
    let ids = round_trip(&SENTENCEPIECE, &text, spm_round_trips);
    streams_like_a_whole_decode(&SENTENCEPIECE, &ids);

    // The bytes as little-endian u16 ids, some outside the vocabulary: decoding must not panic.
    let ids: Vec<u32> = data
        .chunks_exact(2)
        .map(|pair| u32::from(u16::from_le_bytes([pair[0], pair[1]])) % 400)
        .collect();
    for tokenizer in [&*BYTE_LEVEL, &*SENTENCEPIECE] {
        let _ = tokenizer.decode(&ids, false);
        let _ = tokenizer.decode(&ids, true);
        let mut decoder = IncrementalDecoder::default();
        for &id in &ids {
            let _ = decoder.push(id, tokenizer);
        }
    }
});

/// Encodes `text` (with BOS where the model asks for it), checks every id is in the vocabulary
/// and, when `exact`, that decoding without BOS gives `text` back.
fn round_trip(tokenizer: &TextTokenizer, text: &str, exact: bool) -> Vec<u32> {
    let ids = tokenizer.encode(text, false).expect("any text encodes");
    let vocab = tokenizer.vocab_size();
    assert!(ids.iter().all(|&id| (id as usize) < vocab), "ids {ids:?} outside {vocab}");
    if exact {
        let decoded = tokenizer.decode(&ids, false).expect("encoded ids decode");
        assert_eq!(decoded, text, "ids {ids:?}");
    }
    let with_bos = tokenizer.encode(text, true).expect("any text encodes");
    assert!(with_bos.ends_with(&ids) && with_bos.len() <= ids.len() + 1);
    ids
}

/// Feeds `ids` one by one to the engine's streaming decoder: the deltas are a prefix of the
/// whole answer's text, and all of it unless it ends in an incomplete character.
fn streams_like_a_whole_decode(tokenizer: &TextTokenizer, ids: &[u32]) {
    let mut decoder = IncrementalDecoder::default();
    let mut streamed = String::new();
    for &id in ids {
        streamed.push_str(&decoder.push(id, tokenizer).expect("encoded ids decode"));
    }
    let whole = tokenizer.decode(ids, true).expect("encoded ids decode");
    assert!(whole.starts_with(&streamed), "streamed {streamed:?}, whole {whole:?}");
    if !whole.ends_with('\u{FFFD}') {
        assert_eq!(streamed, whole, "ids {ids:?}");
    }
}
