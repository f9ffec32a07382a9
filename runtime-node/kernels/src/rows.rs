//! How a matmul is split across the worker pool, for every weight format: output rows in tasks
//! (whole 8-row groups), several matrices that read the same input in one parallel loop (q/k/v,
//! gate/up: one synchronisation instead of one per matrix), and the `n × rows` output layout.

use super::interleaved::GROUP;
use super::pool::{self, SendPtr};

/// Fewest output rows per parallel task: enough work per task that claiming it costs little.
const MIN_ROWS_PER_TASK: usize = 16;

/// A weight matrix whose output rows a task can compute.
pub trait RowKernel: Sync {
    /// What the matrix multiplies: the `n` input rows, in the form its kernel reads.
    type Input: ?Sized + Sync;

    /// Output features.
    fn rows(&self) -> usize;

    /// Rows `first..first + out.len() / n` against the `n` inputs, into `out` as `rows × n`.
    /// `first` is a multiple of 8.
    fn fill_rows(&self, first: usize, input: &Self::Input, n: usize, out: &mut [f32]);
}

/// Rows per task for `rows` rows against `n` inputs: about four tasks per thread for
/// matrix-vector work (so a thread that falls behind is evened out), sixteen when many inputs
/// make each row expensive; always whole 8-row groups (the interleaved layout's unit).
fn rows_per_task(rows: usize, n: usize, threads: usize) -> usize {
    let tasks_per_thread = if n >= 8 { 16 } else { 4 };
    rows.div_ceil(threads * tasks_per_thread)
        .next_multiple_of(GROUP)
        .max(MIN_ROWS_PER_TASK)
}

/// `out = x · Wᵀ` for every `(W, out)` in `parts` (each `out` is `n × rows`), all in one
/// parallel loop. With one input row tasks write the outputs directly; otherwise each part is
/// computed `rows × n` into `scratch` and transposed.
pub fn matmul_many<M: RowKernel>(
    parts: &mut [(&M, &mut [f32])],
    input: &M::Input,
    n: usize,
    scratch: &mut Vec<f32>,
) {
    let workers = pool::global();
    let total_rows: usize = parts.iter().map(|(m, _)| m.rows()).sum();
    let task_rows = rows_per_task(total_rows, n, workers.threads());
    scratch.clear();
    if n > 1 {
        scratch.resize(total_rows * n, 0.0);
    }
    let mut tasks = Vec::new();
    let mut targets = Vec::with_capacity(parts.len());
    let mut offset = 0;
    for (index, (matrix, out)) in parts.iter_mut().enumerate() {
        let rows = matrix.rows();
        assert_eq!(out.len(), n * rows, "output for {n} rows");
        tasks.extend((0..rows).step_by(task_rows).map(|first| (index, first)));
        targets.push(if n == 1 {
            SendPtr::new(out)
        } else {
            SendPtr::new(&mut scratch[offset..offset + rows * n])
        });
        offset += rows * n;
    }
    let matrices: Vec<&M> = parts.iter().map(|(m, _)| *m).collect();
    workers.run(tasks.len(), &|task| {
        let (index, first) = tasks[task];
        let matrix = matrices[index];
        let rows = task_rows.min(matrix.rows() - first);
        // SAFETY: tasks cover disjoint row ranges of each part's target, which outlives `run`.
        let out = unsafe { std::slice::from_raw_parts_mut(targets[index].get().add(first * n), rows * n) };
        matrix.fill_rows(first, input, n, out);
    });
    if n > 1 {
        let mut offset = 0;
        for (matrix, out) in parts.iter_mut() {
            let rows = matrix.rows();
            pool::transpose_into(workers, &scratch[offset..offset + rows * n], rows, n, out);
            offset += rows * n;
        }
    }
}
