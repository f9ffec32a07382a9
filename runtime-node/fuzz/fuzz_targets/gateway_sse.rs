//! Arbitrary engine response bodies through the gateway's relay, which forwards server-sent
//! events one by one, drops the usage-only event a client did not ask for, and settles the
//! tenant's reservation from the usage it read. The first byte's low three bits and the bytes
//! after it choose the sizes of the reads the body arrives in; its higher bits the mode: 0x08 a
//! JSON body, 0x10 strip the usage event, 0x20 the upstream breaks off after the body, 0x40 the
//! engine answered with an error status.
//!
//! What the client receives and what the tenant is charged must not depend on how the network
//! cut the body; a body relayed without stripping reaches the client byte for byte.
#![no_main]

use std::sync::{Arc, LazyLock, Mutex};
use std::time::Instant;

use bytes::Bytes;
use futures::executor::block_on;
use hearth_gateway::limiter::{Hold, Reservation};
use hearth_gateway::metrics::GatewayMetrics;
use hearth_gateway::rate_limit::RateLimitHeaders;
use hearth_gateway::stream::{Completion, Mode, relay};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use libfuzzer_sys::fuzz_target;
use runtime_node_fuzz::input::{chunk_plan, chunks};

const RESERVED: u64 = 1000;

static METRICS: LazyLock<GatewayMetrics> = LazyLock::new(GatewayMetrics::new);

/// Records what each reservation was settled to.
#[derive(Debug, Default, Clone)]
struct Settled(Arc<Mutex<Vec<u64>>>);

impl Hold for Settled {
    fn settle(&self, reserved: u64, used: u64, _now: Instant) {
        assert_eq!(reserved, RESERVED);
        self.0.lock().expect("not poisoned").push(used);
    }
}

#[derive(Debug, Clone, Copy)]
struct Case {
    mode: Mode,
    breaks_off: bool,
    succeeded: bool,
}

fuzz_target!(|data: &[u8]| {
    let Some(&flags) = data.first() else {
        return;
    };
    let mode = if flags & 0x08 != 0 {
        Mode::Json
    } else {
        Mode::Sse {
            strip_usage: flags & 0x10 != 0,
        }
    };
    let case = Case {
        mode,
        breaks_off: flags & 0x20 != 0,
        succeeded: flags & 0x40 == 0,
    };
    let (sizes, body) = chunk_plan(data);
    let whole = run(case, &[body]);
    let split = run(case, &chunks(body, &sizes));
    assert_eq!(split, whole, "{case:?}");
    let (received, settled) = whole;
    if let Some(received) = received {
        let stripping = matches!(mode, Mode::Sse { strip_usage: true });
        if !case.breaks_off && !stripping {
            assert_eq!(received, body, "{case:?}");
        }
        if !case.breaks_off {
            assert!(received.len() <= body.len());
        }
    }
    assert!(settled.len() <= 1, "settled {settled:?}");
});

/// Relays `pieces` as the upstream body: what the client receives (`None` when the body
/// failed) and what the reservation was settled to.
fn run(case: Case, pieces: &[&[u8]]) -> (Option<Vec<u8>>, Vec<u64>) {
    let mut frames: Vec<Result<Frame<Bytes>, std::io::Error>> = pieces
        .iter()
        .map(|piece| Ok(Frame::data(Bytes::copy_from_slice(piece))))
        .collect();
    if case.breaks_off {
        frames.push(Err(std::io::Error::other("connection reset")));
    }
    let upstream = StreamBody::new(futures::stream::iter(frames));
    let settled = Settled::default();
    let completion = Completion {
        reservation: Reservation::new(RESERVED, RateLimitHeaders::default(), Box::new(settled.clone())),
        permit: None,
        in_flight: None,
        metrics: METRICS.clone(),
        model: "m".into(),
        tenant: Arc::from("ns/t"),
        started: Instant::now(),
        usage: None,
        succeeded: case.succeeded,
    };
    let received = block_on(relay(upstream, case.mode, completion).collect())
        .ok()
        .map(|collected| collected.to_bytes().to_vec());
    let settled = settled.0.lock().expect("not poisoned").clone();
    (received, settled)
}
