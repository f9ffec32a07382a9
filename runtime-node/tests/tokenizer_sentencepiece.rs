//! The GGUF SentencePiece tokenizer (`tokenizer.ggml.model = "llama"`) against Google's
//! `sentencepiece`: a tiny BPE model with byte fallback and what sentencepiece encodes and decodes
//! for a set of strings (`tests/data/spm_fixture.json`, written by
//! `scripts/make-spm-fixture.py`) are put in a real GGUF file, read back by the engine's loader,
//! and every id and decoded text must match, with and without the `▁` prefix. llama.cpp's test
//! vectors for Llama's real vocabulary are checked too when `HEARTH_LLAMA_SPM_VOCAB` is set.

use std::path::PathBuf;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use hearth_engine::model::GgufFile;
use hearth_engine::tokenizer::TextTokenizer;
use serde::Deserialize;

/// The fixture the generator script writes.
#[derive(Deserialize)]
struct Fixture {
    bos_token_id: u32,
    eos_token_id: u32,
    unknown_token_id: u32,
    /// `[piece, score, GGUF token type]` by id.
    pieces: Vec<(String, f32, i32)>,
    /// With the dummy prefix, as Llama-2 / Mistral / TinyLlama encode.
    cases: Vec<Case>,
    /// The same strings with `add_dummy_prefix` off, as Gemma encodes.
    cases_without_space_prefix: Vec<Case>,
}

/// One string and sentencepiece's `encode` (no BOS/EOS) and `decode` of it.
#[derive(Deserialize)]
struct Case {
    text: String,
    ids: Vec<u32>,
    decoded: String,
}

/// The checked-in fixture.
fn fixture() -> Fixture {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/spm_fixture.json");
    let text = std::fs::read_to_string(path).expect("fixture is readable");
    serde_json::from_str(&text).expect("fixture parses")
}

/// Writes a GGUF file holding `metadata` and one tiny tensor, as converters write Llama files.
fn write_gguf(name: &str, metadata: Vec<(&str, Value)>) -> PathBuf {
    let tensor = Tensor::zeros((2, 2), candle_core::DType::F32, &Device::Cpu).expect("tensor");
    let tensor = QTensor::quantize(&tensor, GgmlDType::F32).expect("f32 tensor");
    let path = std::env::temp_dir().join(format!("hearth-spm-{}-{name}.gguf", std::process::id()));
    let mut file = std::fs::File::create(&path).expect("create");
    let metadata: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    gguf_file::write(&mut file, &metadata, &[("token_embd.weight", &tensor)]).expect("write gguf");
    path
}

/// The fixture's model as Llama GGUF metadata, with `add_space_prefix` only when given; both it
/// and `add_bos_token` are otherwise left to their defaults (true for `llama`).
fn llama_metadata(
    fixture: &Fixture,
    model: &str,
    add_space_prefix: Option<bool>,
) -> Vec<(&'static str, Value)> {
    let array =
        |f: &dyn Fn(&(String, f32, i32)) -> Value| Value::Array(fixture.pieces.iter().map(f).collect());
    let mut metadata = vec![
        ("general.architecture", Value::String("llama".into())),
        ("tokenizer.ggml.model", Value::String(model.into())),
        ("tokenizer.ggml.tokens", array(&|p| Value::String(p.0.clone()))),
        ("tokenizer.ggml.scores", array(&|p| Value::F32(p.1))),
        ("tokenizer.ggml.token_type", array(&|p| Value::I32(p.2))),
        ("tokenizer.ggml.bos_token_id", Value::U32(fixture.bos_token_id)),
        ("tokenizer.ggml.eos_token_id", Value::U32(fixture.eos_token_id)),
        (
            "tokenizer.ggml.unknown_token_id",
            Value::U32(fixture.unknown_token_id),
        ),
    ];
    if let Some(add) = add_space_prefix {
        metadata.push(("tokenizer.ggml.add_space_prefix", Value::Bool(add)));
    }
    metadata
}

/// The engine's tokenizer for the fixture's model, read from a GGUF file called after `name`
/// (tests run in parallel, each with its own file).
fn tokenizer(fixture: &Fixture, name: &str, add_space_prefix: Option<bool>) -> TextTokenizer {
    let path = write_gguf(name, llama_metadata(fixture, "llama", add_space_prefix));
    let gguf = GgufFile::open(&path).expect("GGUF opens");
    let tokenizer = TextTokenizer::from_gguf(&gguf).expect("tokenizer builds");
    std::fs::remove_file(&path).ok();
    tokenizer
}

/// Every way `tok` encodes or decodes one of `cases` differently from sentencepiece.
fn mismatches(tok: &TextTokenizer, cases: &[Case]) -> Vec<String> {
    let mut mismatches = Vec::new();
    for case in cases {
        let ids = tok.encode(&case.text, false).expect("encodes");
        if ids != case.ids {
            mismatches.push(format!(
                "{:?}: ids {ids:?}, sentencepiece {:?}",
                case.text, case.ids
            ));
        }
        let decoded = tok.decode(&case.ids, false).expect("decodes");
        if decoded != case.decoded {
            mismatches.push(format!(
                "{:?}: decoded {decoded:?}, sentencepiece {:?}",
                case.text, case.decoded
            ));
        }
    }
    mismatches
}

#[test]
fn encodes_and_decodes_exactly_as_sentencepiece() {
    let fixture = fixture();
    let tok = tokenizer(&fixture, "default", None);
    assert_eq!(tok.vocab_size(), fixture.pieces.len());
    let mismatches = mismatches(&tok, &fixture.cases);
    assert!(
        mismatches.is_empty(),
        "{} mismatches with sentencepiece in {} cases:\n{}",
        mismatches.len(),
        fixture.cases.len(),
        mismatches.join("\n")
    );
    // The fixture must exercise byte fallback (byte pieces have GGUF type 6).
    let byte_fallback = fixture
        .cases
        .iter()
        .filter(|c| c.ids.iter().any(|&id| fixture.pieces[id as usize].2 == 6))
        .count();
    assert!(byte_fallback >= 3, "only {byte_fallback} cases use byte pieces");
}

#[test]
fn without_space_prefix_matches_sentencepiece_without_dummy_prefix() {
    let fixture = fixture();
    let tok = tokenizer(&fixture, "no-prefix", Some(false));
    let mismatches = mismatches(&tok, &fixture.cases_without_space_prefix);
    assert!(
        mismatches.is_empty(),
        "{} mismatches with sentencepiece (add_dummy_prefix off) in {} cases:\n{}",
        mismatches.len(),
        fixture.cases_without_space_prefix.len(),
        mismatches.join("\n")
    );
}

#[test]
fn adds_bos_by_default_and_skips_it_when_decoding() {
    let fixture = fixture();
    let tok = tokenizer(&fixture, "bos", None);
    let ids = tok.encode("Hello world", true).expect("encodes");
    assert_eq!(ids.first(), Some(&fixture.bos_token_id));
    assert_eq!(&ids[1..], tok.encode("Hello world", false).expect("encodes"));
    assert_eq!(tok.decode(&ids, true).expect("decodes"), "Hello world");
    // Control-token text is its single id, as llama.cpp parses it in chat templates.
    let mut with_eos = ids[1..].to_vec();
    with_eos.push(fixture.eos_token_id);
    assert_eq!(tok.encode("Hello world</s>", false).expect("encodes"), with_eos);
    assert_eq!(tok.bos_token(), "<s>");
    assert_eq!(tok.eos_token(), "</s>");
    assert_eq!(tok.end_of_generation(), &[fixture.eos_token_id]);
}

#[test]
fn unknown_tokenizer_model_is_named_in_the_error() {
    let fixture = fixture();
    let path = write_gguf("unknown", llama_metadata(&fixture, "rwkv-world", None));
    let gguf = GgufFile::open(&path).expect("GGUF opens");
    let error = TextTokenizer::from_gguf(&gguf).expect_err("unknown model is refused");
    std::fs::remove_file(&path).ok();
    assert!(
        error.to_string().contains("`rwkv-world`"),
        "error does not name the model: {error}"
    );
}

/// llama.cpp's own tokenizer test for Llama's 32,000-piece vocabulary, when
/// `HEARTH_LLAMA_SPM_VOCAB` names `ggml-vocab-llama-spm.gguf` from a llama.cpp checkout
/// (`models/`, with its `.inp` strings and `.out` ids beside it).
#[test]
fn matches_llama_cpp_vocab_test_when_available() {
    let Ok(path) = std::env::var("HEARTH_LLAMA_SPM_VOCAB") else {
        // `make test` sets both variables; a plain `cargo test` may lack the download.
        assert!(
            std::env::var_os("HEARTH_REQUIRE_LLAMA_SPM_VOCAB").is_none_or(|v| v != "1"),
            "HEARTH_REQUIRE_LLAMA_SPM_VOCAB=1 but HEARTH_LLAMA_SPM_VOCAB is not set"
        );
        eprintln!("skipped: HEARTH_LLAMA_SPM_VOCAB is not set (make test sets it)");
        return;
    };
    let gguf = GgufFile::open(std::path::Path::new(&path)).expect("GGUF opens");
    let tok = TextTokenizer::from_gguf(&gguf).expect("tokenizer builds");
    let inputs = std::fs::read_to_string(format!("{path}.inp")).expect("inputs");
    let outputs = std::fs::read_to_string(format!("{path}.out")).expect("outputs");
    let texts: Vec<&str> = inputs.split("\n__ggml_vocab_test__\n").collect();
    let mut failures = Vec::new();
    let mut checked = 0;
    for (text, line) in texts.iter().zip(outputs.lines()) {
        let expected: Vec<u32> = line
            .split_whitespace()
            .map(|id| id.parse().expect("id"))
            .collect();
        let ids = tok.encode(text, false).expect("encodes");
        checked += 1;
        if ids != expected {
            failures.push(format!("{text:?}: {ids:?}, llama.cpp {expected:?}"));
        }
        let decoded = tok.decode(&expected, false).expect("decodes");
        if decoded != *text {
            failures.push(format!("{text:?}: decoded {decoded:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("{checked} llama.cpp cases match");
}
