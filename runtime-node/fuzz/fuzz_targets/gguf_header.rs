//! Arbitrary bytes through the GGUF loading path: header, hyper-parameters, tokenizer and every
//! tensor. Whatever the bytes, the result is a value or an error naming the file.
#![no_main]

use std::io::Cursor;
use std::path::Path;

use candle_core::Device;
use hearth_engine::model::{GgufFile, ModelConfig};
use hearth_engine::tokenizer::TextTokenizer;
use libfuzzer_sys::fuzz_target;

const PATH: &str = "fuzz.gguf";

fn check<T>(result: Result<T, hearth_engine::model::LoadError>) {
    if let Err(err) = result {
        assert!(err.to_string().contains(PATH), "error does not name the file: {err}");
    }
}

fuzz_target!(|data: &[u8]| {
    let mut gguf = match GgufFile::from_reader(Path::new(PATH), Cursor::new(data.to_vec())) {
        Ok(gguf) => gguf,
        Err(err) => return check::<()>(Err(err)),
    };
    check(ModelConfig::from_gguf(&gguf));
    check(TextTokenizer::from_gguf(&gguf));
    check(gguf.opt_string("tokenizer.chat_template"));
    let names: Vec<String> = gguf.tensor_names().map(str::to_string).collect();
    for name in names {
        check(gguf.tensor(&name, None, &Device::Cpu));
    }
});
