//! Stop strings and streamed text through the engine's [`StopMatcher`]. The input is text whose
//! first section (split on 0x1E) holds the stop strings (split on 0x1F) and whose other sections
//! are the decoded pieces, in order.
//!
//! After each piece the text let out so far must be exactly what a reader of the whole text
//! would let out: everything before the first stop string once one has appeared (and then the
//! matcher stops), otherwise a prefix of the text that, with the held-back rest, is the text;
//! what is held back is shorter than the longest stop string.
#![no_main]

use hearth_engine::engine::text::{StopMatcher, StopOutcome};
use libfuzzer_sys::fuzz_target;
use runtime_node_fuzz::input::{FIELD, SECTION};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut sections = text.split(SECTION);
    let stops: Vec<String> = sections
        .next()
        .unwrap_or_default()
        .split(FIELD)
        .map(str::to_string)
        .collect();
    let mut matcher = StopMatcher::new(&stops);
    let longest = stops.iter().map(String::len).max().unwrap_or(0);
    let mut seen = String::new();
    let mut emitted = String::new();
    for piece in sections {
        seen.push_str(piece);
        let first_stop = stops
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| seen.find(s.as_str()))
            .min();
        match (matcher.push(piece), first_stop) {
            (StopOutcome::Stopped(text), Some(at)) => {
                emitted.push_str(&text);
                assert_eq!(emitted, seen[..at], "stops {stops:?}");
                return;
            }
            (StopOutcome::Continue(text), None) => {
                emitted.push_str(&text);
                assert!(seen.starts_with(&emitted), "let out {emitted:?} of {seen:?}");
                assert!(seen.len() - emitted.len() < longest.max(1), "held back too much of {seen:?}");
            }
            (outcome, first_stop) => panic!("{outcome:?} with the first stop at {first_stop:?} in {seen:?}, stops {stops:?}"),
        }
    }
    emitted.push_str(&matcher.flush());
    assert_eq!(emitted, seen, "stops {stops:?}");
});
