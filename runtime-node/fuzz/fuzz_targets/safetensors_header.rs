//! Arbitrary bytes through the safetensors loading path: one shard's header and tensors, then
//! the conversion to the f32 weights the model is built from. Whatever the bytes, the result is
//! a value or an error naming the file.
#![no_main]

use std::path::Path;

use candle_core::Device;
use hearth_engine::model::safetensors::{parse_shard, to_f32_weights};
use libfuzzer_sys::fuzz_target;

const PATH: &str = "fuzz.safetensors";

fuzz_target!(|data: &[u8]| {
    let path = Path::new(PATH);
    let tensors = match parse_shard(path, data) {
        Ok(tensors) => tensors,
        Err(err) => {
            assert!(err.to_string().contains(PATH), "error does not name the file: {err}");
            return;
        }
    };
    for tensor in tensors.values() {
        if let Err(err) = to_f32_weights(path, tensor, &Device::Cpu) {
            assert!(err.to_string().contains(PATH), "error does not name the file: {err}");
        }
    }
});
