//! Memory read bandwidth of this machine, the ceiling of batch-1 decode: every generated token
//! reads every weight once, so tokens/s can not exceed bandwidth ÷ weight bytes (the roofline
//! `make bench` prints next to the measured figures).

use std::time::Instant;

/// Best of `rounds` passes of `threads` threads each summing its share of a `bytes` buffer,
/// in bytes per second. The buffer is written first so every page is resident.
pub fn read_bandwidth(bytes: usize, threads: usize, rounds: usize) -> f64 {
    let words = (bytes / 8).max(threads.max(1) * 1024);
    let buffer: Vec<u64> = (0..words as u64).collect();
    let threads = threads.max(1);
    let chunk = words.div_ceil(threads);
    let mut best = 0f64;
    for _ in 0..rounds.max(1) {
        let started = Instant::now();
        let total: u64 = std::thread::scope(|scope| {
            let workers: Vec<_> = buffer
                .chunks(chunk)
                .map(|part| scope.spawn(move || sum(part)))
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().unwrap_or(0))
                .fold(0, u64::wrapping_add)
        });
        let seconds = started.elapsed().as_secs_f64();
        // Keep the sum observable so the reads cannot be optimised away.
        std::hint::black_box(total);
        best = best.max((words * 8) as f64 / seconds);
    }
    best
}

/// Sums with four independent accumulators so the loop is bound by loads, not by one add chain.
fn sum(words: &[u64]) -> u64 {
    let mut lanes = [0u64; 4];
    let mut quads = words.chunks_exact(4);
    for quad in &mut quads {
        for (lane, word) in lanes.iter_mut().zip(quad) {
            *lane = lane.wrapping_add(*word);
        }
    }
    let tail: u64 = quads.remainder().iter().fold(0, |a, w| a.wrapping_add(*w));
    lanes.iter().fold(tail, |a, l| a.wrapping_add(*l))
}

/// Peak resident set size of this process in bytes (`VmHWM`), when the OS reports it.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sum_sees_every_word_including_the_tail() {
        let words: Vec<u64> = (1..=10).collect();
        assert_eq!(sum(&words), 55);
        assert_eq!(sum(&words[..3]), 6);
    }

    #[test]
    fn bandwidth_is_positive_and_rss_covers_the_buffer() {
        let rate = read_bandwidth(8 << 20, 2, 1);
        assert!(rate > 0.0);
        assert!(peak_rss_bytes().expect("linux reports VmHWM") >= 8 << 20);
    }
}
