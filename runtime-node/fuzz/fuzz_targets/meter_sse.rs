//! Arbitrary engine response bodies through the meter's usage tap, as server-sent events and as
//! a JSON body, and as a request body through its prompt estimate. The first byte and up to
//! seven after it choose the sizes of the reads the body arrives in.
//!
//! The usage a response is billed must not depend on how the network cut it: the body fed in
//! those reads gives the same usage as the body fed whole.
#![no_main]

use hearth_meter::usage::{UsageTap, estimate_prompt_tokens};
use libfuzzer_sys::fuzz_target;
use runtime_node_fuzz::input::{chunk_plan, chunks};

const PROMPT_ESTIMATE: u64 = 7;

fuzz_target!(|data: &[u8]| {
    let (sizes, body) = chunk_plan(data);
    for streamed in [true, false] {
        let mut whole = UsageTap::new(streamed);
        whole.feed(body);
        let whole = whole.finish(PROMPT_ESTIMATE);
        let mut split = UsageTap::new(streamed);
        for piece in chunks(body, &sizes) {
            split.feed(piece);
        }
        assert_eq!(split.finish(PROMPT_ESTIMATE), whole, "streamed: {streamed}");
        if whole.estimated {
            assert_eq!(whole.prompt_tokens, PROMPT_ESTIMATE);
        }
    }
    if let Ok(request) = serde_json::from_slice(body) {
        estimate_prompt_tokens(&request);
    }
});
