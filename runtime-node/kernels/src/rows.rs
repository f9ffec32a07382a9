//! How a matmul is split across the worker pool, for every weight format: output rows in tasks
//! (whole units of the layout: 8-row groups, 16-row F16 panels), several matrices that read the
//! same input in one parallel loop (q/k/v, gate/up: one synchronisation instead of one per
//! matrix), and the `n × rows` output layout.

use std::cell::RefCell;

use super::interleaved::GROUP;
use super::pool::{self, SendPtr};

/// Fewest output rows per parallel task: enough work per task that claiming it costs little.
const MIN_ROWS_PER_TASK: usize = 16;

/// A weight matrix whose output rows a task can compute.
pub trait RowKernel: Sync {
    /// What the matrix multiplies: the `n` input rows, in the form its kernel reads.
    type Input: ?Sized + Sync;

    /// The rows a task's first row is a multiple of (the layout's unit: an interleaved group).
    const ROW_UNIT: usize = GROUP;

    /// Output features.
    fn rows(&self) -> usize;

    /// Rows `first..first + rows` (`rows = out.len() / n`) against the `n` inputs, into `out`
    /// input-major: `out[i · rows + r]`.
    /// `first` is a multiple of [`Self::ROW_UNIT`].
    fn fill_rows(&self, first: usize, input: &Self::Input, n: usize, out: &mut [f32]);
}

/// Rows per task for `rows` rows against `n` inputs: about four tasks per thread for
/// matrix-vector work (so a thread that falls behind is evened out), eight when many inputs
/// make each row expensive (more tasks each restart their weight stream); always whole units
/// of the layout (`unit` rows).
fn rows_per_task(rows: usize, n: usize, threads: usize, unit: usize) -> usize {
    let tasks_per_thread = if n >= 8 { 8 } else { 4 };
    rows.div_ceil(threads * tasks_per_thread)
        .max(MIN_ROWS_PER_TASK)
        .next_multiple_of(unit)
}

/// `out = x · Wᵀ` for every `(W, out)` in `parts` (each `out` is `n × rows`), all in one
/// parallel loop. With one input row tasks write the outputs directly; otherwise each task
/// computes its rows input-major in a thread-local buffer (in cache) and writes each input's run
/// of rows into place, so no separate transpose pass over the whole output is needed.
pub fn matmul_many<M: RowKernel>(parts: &mut [(&M, &mut [f32])], input: &M::Input, n: usize) {
    let workers = pool::global();
    let total_rows: usize = parts.iter().map(|(m, _)| m.rows()).sum();
    let task_rows = rows_per_task(total_rows, n, workers.threads(), M::ROW_UNIT);
    let mut tasks = Vec::new();
    let mut targets = Vec::with_capacity(parts.len());
    for (index, (matrix, out)) in parts.iter_mut().enumerate() {
        let rows = matrix.rows();
        assert_eq!(out.len(), n * rows, "output for {n} rows");
        tasks.extend((0..rows).step_by(task_rows).map(|first| (index, first)));
        targets.push(SendPtr::new(out));
    }
    let matrices: Vec<&M> = parts.iter().map(|(m, _)| *m).collect();
    thread_local! {
        static TASK_ROWS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    }
    workers.run(tasks.len(), &|task| {
        let (index, first) = tasks[task];
        let matrix = matrices[index];
        let (rows, stride) = (task_rows.min(matrix.rows() - first), matrix.rows());
        let target = targets[index].get();
        if n == 1 {
            // SAFETY: tasks cover disjoint row ranges of each part's output, which outlives `run`.
            let out = unsafe { std::slice::from_raw_parts_mut(target.add(first), rows) };
            matrix.fill_rows(first, input, 1, out);
            return;
        }
        TASK_ROWS.with_borrow_mut(|computed| {
            computed.clear();
            computed.resize(rows * n, 0.0);
            matrix.fill_rows(first, input, n, computed);
            for (i, values) in computed.chunks_exact(rows).enumerate() {
                // SAFETY: columns `first..first + rows` of output row `i` belong to this task
                // alone, and the output outlives `run`.
                let run = unsafe { std::slice::from_raw_parts_mut(target.add(i * stride + first), rows) };
                run.copy_from_slice(values);
            }
        });
    });
}
