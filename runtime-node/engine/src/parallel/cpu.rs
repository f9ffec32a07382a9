//! [`CpuCommunicator`]: ranks as threads of one process, meeting at a shared buffer guarded by a
//! mutex and a condition variable. The sum is taken in rank order by the last rank to arrive, so
//! every rank receives bit-identical results and a run is reproducible.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use candle_core::{DType, Tensor};

use super::Communicator;

#[derive(Debug, Default)]
struct Round {
    // Each rank's contribution to the current round (rank order).
    inputs: Vec<Option<Vec<f32>>>,
    arrived: usize,
    // The sum of the last completed round and its number.
    result: Arc<Vec<f32>>,
    completed: u64,
    // Set when a rank gives up; every later collective fails.
    aborted: Option<usize>,
}

#[derive(Debug)]
struct Shared {
    round: Mutex<Round>,
    done: Condvar,
}

/// One rank's handle on an in-process group; create all of them with [`CpuCommunicator::group`]
/// and move each to its rank's thread. Dropping a handle aborts the group, so a rank that exits
/// or panics never leaves the others waiting.
#[derive(Debug)]
pub struct CpuCommunicator {
    rank: usize,
    world: usize,
    shared: Arc<Shared>,
}

impl CpuCommunicator {
    /// Handles for a group of `world` ranks, indexed by rank.
    pub fn group(world: usize) -> Vec<Self> {
        let shared = Arc::new(Shared {
            round: Mutex::new(Round {
                inputs: vec![None; world],
                ..Round::default()
            }),
            done: Condvar::new(),
        });
        (0..world)
            .map(|rank| Self {
                rank,
                world,
                shared: shared.clone(),
            })
            .collect()
    }

    fn lock(&self) -> candle_core::Result<MutexGuard<'_, Round>> {
        self.shared
            .round
            .lock()
            .map_err(|_| candle_core::Error::Msg("tensor-parallel group: a rank panicked".into()))
    }
}

fn aborted_error(rank: usize) -> candle_core::Error {
    candle_core::Error::Msg(format!("tensor-parallel group aborted by rank {rank}"))
}

impl Communicator for CpuCommunicator {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world
    }

    fn all_reduce_sum(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if self.world == 1 {
            return Ok(x.clone());
        }
        let dtype = x.dtype();
        let values = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let len = values.len();
        let mut round = self.lock()?;
        if let Some(rank) = round.aborted {
            return Err(aborted_error(rank));
        }
        round.inputs[self.rank] = Some(values);
        round.arrived += 1;
        let my_round = round.completed;
        if round.arrived == self.world {
            let mut sum = vec![0f32; len];
            for (rank, input) in round.inputs.iter_mut().enumerate() {
                let input = input
                    .take()
                    .ok_or_else(|| candle_core::Error::Msg(format!("rank {rank} sent nothing")))?;
                if input.len() != len {
                    candle_core::bail!(
                        "all-reduce of {len} values met {} values from rank {rank}",
                        input.len()
                    );
                }
                sum.iter_mut().zip(&input).for_each(|(s, v)| *s += v);
            }
            round.result = Arc::new(sum);
            round.arrived = 0;
            round.completed += 1;
            self.shared.done.notify_all();
        } else {
            while round.completed == my_round {
                if let Some(rank) = round.aborted {
                    return Err(aborted_error(rank));
                }
                round =
                    self.shared.done.wait(round).map_err(|_| {
                        candle_core::Error::Msg("tensor-parallel group: a rank panicked".into())
                    })?;
            }
        }
        // The next round cannot complete (and replace `result`) before this rank joins it.
        let result = round.result.clone();
        drop(round);
        Tensor::from_slice(result.as_slice(), x.shape(), x.device())?.to_dtype(dtype)
    }

    fn abort(&self) {
        // A poisoned lock means another rank panicked: the group is dead either way.
        if let Ok(mut round) = self.shared.round.lock() {
            round.aborted.get_or_insert(self.rank);
        }
        self.shared.done.notify_all();
    }
}

impl Drop for CpuCommunicator {
    fn drop(&mut self) {
        self.abort();
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    #[test]
    fn all_reduce_sums_over_threads_for_many_rounds() {
        let world = 4;
        let handles: Vec<_> = CpuCommunicator::group(world)
            .into_iter()
            .map(|comm| {
                std::thread::spawn(move || {
                    let mut results = Vec::new();
                    for round in 0..50u32 {
                        let values: Vec<f32> = (0..6)
                            .map(|i| (comm.rank() as u32 * 100 + round * 10 + i) as f32)
                            .collect();
                        let x = Tensor::from_vec(values, (2, 3), &Device::Cpu).expect("tensor");
                        let sum = comm.all_reduce_sum(&x).expect("all-reduce");
                        assert_eq!(sum.dims(), &[2, 3]);
                        results.push(
                            sum.flatten_all()
                                .and_then(|t| t.to_vec1::<f32>())
                                .expect("values"),
                        );
                    }
                    results
                })
            })
            .collect();
        for handle in handles {
            let results = handle.join().expect("rank thread");
            for (round, got) in results.iter().enumerate() {
                // Sum over ranks r of (100 r + 10 round + i) = 100 * 6 + 4 (10 round + i).
                let want: Vec<f32> = (0..6).map(|i| (600 + 4 * (10 * round + i)) as f32).collect();
                assert_eq!(got, &want, "round {round}");
            }
        }
    }

    #[test]
    fn a_departed_rank_fails_the_others_instead_of_hanging() {
        let mut group = CpuCommunicator::group(3);
        let survivor = group.pop().expect("rank 2");
        let waiting = group.pop().expect("rank 1");
        let quitter = group.pop().expect("rank 0");
        let waiter = std::thread::spawn(move || {
            let x = Tensor::zeros(4, DType::F32, &Device::Cpu).expect("tensor");
            waiting.all_reduce_sum(&x).map(|_| ())
        });
        drop(quitter);
        let err = waiter.join().expect("thread").expect_err("aborted");
        assert!(err.to_string().contains("aborted by rank 0"), "{err}");
        let x = Tensor::zeros(4, DType::F32, &Device::Cpu).expect("tensor");
        assert!(survivor.all_reduce_sum(&x).is_err());
    }
}
