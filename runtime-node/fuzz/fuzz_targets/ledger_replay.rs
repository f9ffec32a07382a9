//! A ledger segment from arbitrary bytes, replayed by the meter as it is on start.
//!
//! The input: a flag byte (0x01: write the `acked` file), the acked cursor and the segment's
//! first sequence (u64 little-endian each), then chunks of `tag, length (u16 LE), bytes`: an
//! even tag frames its bytes as the writer does (length, CRC-32, payload), an odd tag writes
//! them raw, as a torn or corrupt tail.
//!
//! The ledger's contract: replay never fails on what a crash can leave; it keeps every whole
//! frame before the first bad one and cuts the rest, so replaying the cut segment gives the same
//! records; on open the ledger serves exactly the kept records above the acked cursor.
#![no_main]

use std::path::PathBuf;
use std::sync::LazyLock;

use hearth_crds::usage::Sequenced;
use hearth_meter::ledger::{DEFAULT_SEGMENT_BYTES, Ledger, read_frames};
use libfuzzer_sys::fuzz_target;

/// A folder of this process's own, in memory when the machine has `/dev/shm` (replay fsyncs).
static DIR: LazyLock<PathBuf> = LazyLock::new(|| {
    let shm = PathBuf::from("/dev/shm");
    let base = if shm.is_dir() { shm } else { std::env::temp_dir() };
    base.join(format!("hearth-fuzz-ledger-{}", std::process::id()))
});

/// The segment's bytes, the records its leading well-formed frames hold and those frames' length.
struct Segment {
    bytes: Vec<u8>,
    leading: Vec<Sequenced>,
    leading_len: u64,
}

fn segment(mut data: &[u8]) -> Segment {
    let mut segment = Segment {
        bytes: Vec::new(),
        leading: Vec::new(),
        leading_len: 0,
    };
    let mut intact = true;
    while let [tag, low, high, rest @ ..] = data {
        let length = usize::from(u16::from_le_bytes([*low, *high])).min(rest.len());
        let (payload, tail) = rest.split_at(length);
        data = tail;
        if tag % 2 == 1 {
            segment.bytes.extend_from_slice(payload);
            intact = false;
            continue;
        }
        segment.bytes.extend_from_slice(&(length as u32).to_le_bytes());
        segment.bytes.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        segment.bytes.extend_from_slice(payload);
        match serde_json::from_slice::<Sequenced>(payload) {
            Ok(record) if intact && length > 0 => {
                segment.leading.push(record);
                segment.leading_len = segment.bytes.len() as u64;
            }
            _ => intact = false,
        }
    }
    segment
}

fuzz_target!(|data: &[u8]| {
    let [flags, rest @ ..] = data else { return };
    let Some((acked, rest)) = split_u64(rest) else { return };
    let Some((first, rest)) = split_u64(rest) else { return };
    let segment = segment(rest);

    let (records, good) = read_frames(&mut segment.bytes.as_slice());
    assert!(good <= segment.bytes.len() as u64);
    assert!(good >= segment.leading_len, "cut into the well-formed frames");
    assert!(records.len() >= segment.leading.len(), "lost a well-formed frame");
    assert_eq!(records[..segment.leading.len()], segment.leading[..]);
    let cut = &segment.bytes[..good as usize];
    assert_eq!(read_frames(&mut &cut[..]), (records.clone(), good), "replaying the cut segment");

    let write_acked = flags & 1 == 1;
    let acked = if write_acked { acked } else { 0 };
    let dir = &*DIR;
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("creates the ledger folder");
    let path = dir.join(format!("segment-{first:020}.log"));
    std::fs::write(&path, &segment.bytes).expect("writes the segment");
    if write_acked {
        std::fs::write(dir.join("acked"), acked.to_string()).expect("writes the cursor");
    }
    let ledger = Ledger::open(dir, DEFAULT_SEGMENT_BYTES).expect("replay never fails");
    assert_eq!(std::fs::metadata(&path).expect("segment kept").len(), good, "torn tail cut");
    assert_eq!(ledger.acked_sequence(), acked);
    assert!(ledger.durable_sequence() >= acked);
    let served = ledger.read_after(acked, usize::MAX).expect("reads");
    let above: Vec<Sequenced> = records.into_iter().filter(|r| r.sequence > acked).collect();
    assert_eq!(served, above);
});

fn split_u64(data: &[u8]) -> Option<(u64, &[u8])> {
    let (head, rest) = data.split_first_chunk::<8>()?;
    Some((u64::from_le_bytes(*head), rest))
}
