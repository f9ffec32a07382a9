//! The SentencePiece tokenizer of Llama-2 / Mistral / TinyLlama GGUF files
//! (`tokenizer.ggml.model = "llama"`), rebuilt from `tokenizer.ggml.*` as a `tokenizers` BPE.
//!
//! llama.cpp and SentencePiece encode by repeatedly merging the adjacent pair whose concatenation
//! is the vocabulary piece with the highest score, and spell characters outside the vocabulary as
//! their UTF-8 byte pieces `<0xXX>`. A BPE model with byte fallback does the same when its merges
//! are ranked by the score of the piece they make, which is how Hugging Face converts these
//! models; spaces become `▁` and a `▁` is prepended before the pieces are looked up.

use std::collections::HashMap;

use candle_core::quantized::gguf_file::Value;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::{DecoderWrapper, NormalizerWrapper, Tokenizer};

use crate::model::{GgufFile, LoadError};

/// SentencePiece's stand-in for a space.
const SPACE: &str = "\u{2581}";

/// GGUF token type of ordinary vocabulary pieces, the only ones merges make or consume.
const TOKEN_TYPE_NORMAL: i64 = 1;
/// GGUF token type of the piece that stands for text the vocabulary cannot spell.
const TOKEN_TYPE_UNKNOWN: i64 = 2;

/// Builds the tokenizer for `tokens`, the `tokenizer.ggml.tokens` of `gguf`, from the scores,
/// token types, unknown token and `add_space_prefix` flag stored beside them.
pub(crate) fn sentencepiece_tokenizer(gguf: &GgufFile, tokens: &[String]) -> Result<Tokenizer, LoadError> {
    let err = |message: String| LoadError::Tokenizer {
        path: gguf.path().to_path_buf(),
        message,
    };
    let scores = scores(gguf, tokens.len())?;
    // Without token types every piece is an ordinary one, as llama.cpp assumes.
    let types = gguf
        .opt_ints("tokenizer.ggml.token_type")?
        .unwrap_or_else(|| vec![TOKEN_TYPE_NORMAL; tokens.len()]);
    if types.len() != tokens.len() {
        return Err(LoadError::BadValue {
            path: gguf.path().to_path_buf(),
            key: "tokenizer.ggml.token_type".into(),
            message: format!("{} types for {} tokens", types.len(), tokens.len()),
        });
    }

    let vocab: Vocab = tokens
        .iter()
        .enumerate()
        .map(|(id, token)| (token.clone(), id as u32))
        .collect();
    let unk_id = match gguf.opt_usize("tokenizer.ggml.unknown_token_id")? {
        Some(id) if id < tokens.len() => Some(id),
        Some(id) => {
            return Err(err(format!(
                "`tokenizer.ggml.unknown_token_id` = {id} is outside the vocabulary of {}",
                tokens.len()
            )));
        }
        None => types.iter().position(|&ty| ty == TOKEN_TYPE_UNKNOWN),
    };
    let mut bpe = BPE::builder()
        .vocab_and_merges(vocab, merges_by_score(tokens, &scores, &types))
        .byte_fallback(true)
        .fuse_unk(true);
    if let Some(id) = unk_id {
        bpe = bpe.unk_token(tokens[id].clone());
    }
    let bpe = bpe
        .build()
        .map_err(|e| err(format!("building SentencePiece BPE: {e}")))?;
    let mut tokenizer = Tokenizer::new(bpe);

    let add_space_prefix = gguf.opt_bool("tokenizer.ggml.add_space_prefix")?.unwrap_or(true);
    let replace = |from: &str, to: &str| {
        Replace::new(from, to).map_err(|e| err(format!("replacing `{from}` by `{to}`: {e}")))
    };
    let mut normalizers: Vec<NormalizerWrapper> = Vec::new();
    if add_space_prefix {
        normalizers.push(Prepend::new(SPACE.into()).into());
    }
    normalizers.push(replace(" ", SPACE)?.into());
    tokenizer
        .with_normalizer(Some(NormalizerSequence::new(normalizers)))
        .map_err(|e| err(format!("normalizer: {e}")))?;

    let mut decoders: Vec<DecoderWrapper> = vec![
        replace(SPACE, " ")?.into(),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ];
    // The prefix added when encoding is not part of the text.
    if add_space_prefix {
        decoders.push(Strip::new(' ', 1, 0).into());
    }
    tokenizer.with_decoder(Some(DecoderSequence::new(decoders)));
    Ok(tokenizer)
}

/// `tokenizer.ggml.scores`: one float per token, the priority of the merge that makes it.
fn scores(gguf: &GgufFile, len: usize) -> Result<Vec<f32>, LoadError> {
    const KEY: &str = "tokenizer.ggml.scores";
    let bad = |message: String| LoadError::BadValue {
        path: gguf.path().to_path_buf(),
        key: KEY.into(),
        message,
    };
    let value = gguf.value(KEY).ok_or_else(|| LoadError::MissingKey {
        path: gguf.path().to_path_buf(),
        key: KEY.into(),
    })?;
    let Value::Array(items) = value else {
        return Err(bad(format!("expected an array, found {:?}", value.value_type())));
    };
    if items.len() != len {
        return Err(bad(format!("{} scores for {len} tokens", items.len())));
    }
    items
        .iter()
        .map(|item| match item {
            Value::F32(score) => Ok(*score),
            Value::F64(score) => Ok(*score as f32),
            other => Err(bad(format!("expected floats, found {other:?}"))),
        })
        .collect()
}

/// A merge for every way an ordinary piece splits into two ordinary pieces, best score first;
/// merges making the same piece are ordered by their halves' ids, as Hugging Face's converter
/// orders them.
fn merges_by_score(tokens: &[String], scores: &[f32], types: &[i64]) -> Vec<(String, String)> {
    let mut ordinary: HashMap<&str, usize> = HashMap::new();
    for (id, token) in tokens.iter().enumerate() {
        if types[id] == TOKEN_TYPE_NORMAL {
            ordinary.entry(token.as_str()).or_insert(id);
        }
    }
    let mut ranked = Vec::new();
    for (&piece, &id) in &ordinary {
        for (split, _) in piece.char_indices().skip(1) {
            let (left, right) = piece.split_at(split);
            if let (Some(&left_id), Some(&right_id)) = (ordinary.get(left), ordinary.get(right)) {
                ranked.push((scores[id], id, left_id, right_id, left, right));
            }
        }
    }
    ranked.sort_by(|a, b| {
        // Compared as floats (-0.0 == 0.0), as SentencePiece compares them.
        b.0.partial_cmp(&a.0)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.1.cmp(&b.1))
            .then(a.2.cmp(&b.2))
            .then(a.3.cmp(&b.3))
    });
    ranked
        .into_iter()
        .map(|(.., left, right)| (left.to_string(), right.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_cover_every_split_ranked_by_the_score_of_the_piece_made() {
        let tokens: Vec<String> = ["<0x61>", "a", "b", "c", "ab", "bc", "abc", "<s>b"]
            .map(String::from)
            .to_vec();
        let scores = [0.0, -5.0, -6.0, -7.0, -2.0, -1.0, -3.0, 9.0];
        // `<0x61>` is a byte piece and `<s>b` a control one: neither is made by a merge.
        let types = [6, 1, 1, 1, 1, 1, 1, 3];
        let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
        assert_eq!(
            merges_by_score(&tokens, &scores, &types),
            vec![pair("b", "c"), pair("a", "b"), pair("a", "bc"), pair("ab", "c")]
        );
    }
}
