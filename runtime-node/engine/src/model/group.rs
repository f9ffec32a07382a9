//! A tensor-parallel group of rank threads. Rank 0 is the model the scheduler drives: it keeps
//! the KV block bookkeeping and computes the logits. Every other rank runs on its own thread,
//! holding its shard and its own KV pool, and follows rank 0's commands: allocate a pool of the
//! same geometry, then for each step the same tokens into the same block ids. The ranks meet in
//! the all-reduces inside each step.

use std::path::Path;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;

use candle_core::{Device, DeviceLocation};

use super::llama::{Llama, StepInput};
use super::{KvPool, LoadError};
use crate::parallel::{Communicator, CpuCommunicator, Shard};

/// One sequence of a step as followers replay it: its tokens, the blocks rank 0 reserved for
/// them and the sequence's length before the step.
#[derive(Debug, Clone)]
pub(crate) struct StepEntry {
    pub(crate) tokens: Vec<u32>,
    pub(crate) blocks: Vec<u32>,
    pub(crate) len: usize,
}

/// A step as rank 0 sends it to the followers.
#[derive(Debug, Clone)]
pub(crate) struct StepCommand {
    pub(crate) entries: Vec<StepEntry>,
}

impl StepCommand {
    /// The step `batch` is about to run (its blocks already reserved).
    pub(crate) fn new(batch: &[StepInput<'_>]) -> Self {
        let entries = batch
            .iter()
            .map(|e| StepEntry {
                tokens: e.tokens.to_vec(),
                blocks: e.table.blocks().to_vec(),
                len: e.table.len(),
            })
            .collect();
        Self { entries }
    }
}

enum Command {
    NewPool {
        num_blocks: usize,
        block_size: usize,
        reply: Sender<Result<(), String>>,
    },
    Step(StepCommand),
}

/// Rank 0's handle on the follower threads. Dropping it closes their command channels and
/// waits for them to finish.
#[derive(Debug)]
pub struct Followers {
    senders: Vec<Sender<Command>>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NewPool { num_blocks, .. } => write!(f, "NewPool({num_blocks})"),
            Self::Step(step) => write!(f, "Step({} entries)", step.entries.len()),
        }
    }
}

fn stopped(rank: usize) -> candle_core::Error {
    candle_core::Error::Msg(format!("tensor-parallel rank {rank} has stopped"))
}

impl Followers {
    /// Asks every follower to allocate its pool and waits for all of them.
    pub(crate) fn new_pools(&self, num_blocks: usize, block_size: usize) -> candle_core::Result<()> {
        let mut replies = Vec::with_capacity(self.senders.len());
        for (i, sender) in self.senders.iter().enumerate() {
            let (reply, rx) = channel();
            let command = Command::NewPool {
                num_blocks,
                block_size,
                reply,
            };
            sender.send(command).map_err(|_| stopped(i + 1))?;
            replies.push(rx);
        }
        for (i, rx) in replies.into_iter().enumerate() {
            match rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(message)) => candle_core::bail!("tensor-parallel rank {}: {message}", i + 1),
                Err(_) => return Err(stopped(i + 1)),
            }
        }
        Ok(())
    }

    /// Sends `step` to every follower; they run it while rank 0 does.
    pub(crate) fn step(&self, step: StepCommand) -> candle_core::Result<()> {
        for (i, sender) in self.senders.iter().enumerate() {
            sender
                .send(Command::Step(step.clone()))
                .map_err(|_| stopped(i + 1))?;
        }
        Ok(())
    }
}

impl Drop for Followers {
    fn drop(&mut self) {
        self.senders.clear();
        for (i, thread) in self.threads.drain(..).enumerate() {
            if thread.join().is_err() {
                tracing::error!(rank = i + 1, "tensor-parallel rank thread panicked");
            }
        }
    }
}

/// What a rank needs to join its group before loading: a communicator, or what makes one.
enum RankInit {
    Cpu(CpuCommunicator),
    #[cfg(feature = "cuda")]
    Nccl {
        id: cudarc::nccl::Id,
        ordinal: usize,
    },
}

impl RankInit {
    /// One per rank for a group of `world` ranks on `device` (rank r on device ordinal + r).
    fn for_group(device: &Device, world: usize) -> Result<Vec<Self>, String> {
        match device.location() {
            DeviceLocation::Cpu => Ok(CpuCommunicator::group(world).into_iter().map(Self::Cpu).collect()),
            #[cfg(feature = "cuda")]
            DeviceLocation::Cuda { gpu_id } => {
                let id = cudarc::nccl::Id::new().map_err(|e| format!("creating the NCCL id: {e:?}"))?;
                Ok((0..world)
                    .map(|rank| Self::Nccl {
                        id,
                        ordinal: gpu_id + rank,
                    })
                    .collect())
            }
            other => Err(format!("tensor parallelism is not implemented on {other:?}")),
        }
    }

    /// This rank's device and communicator; collective for NCCL (every rank calls it at once).
    #[cfg_attr(not(feature = "cuda"), allow(unused_variables))]
    fn connect(self, rank: usize, world: usize) -> Result<(Device, Box<dyn Communicator>), String> {
        match self {
            Self::Cpu(comm) => Ok((Device::Cpu, Box::new(comm))),
            #[cfg(feature = "cuda")]
            Self::Nccl { id, ordinal } => {
                let device = crate::cuda::new_device(ordinal).map_err(|e| e.to_string())?;
                let comm = crate::parallel::nccl::NcclCommunicator::new(&device, rank, world, id)?;
                Ok((device, Box::new(comm)))
            }
        }
    }
}

/// Loads a model split over `world` ranks on `device` (CPU, or CUDA devices `ordinal` to
/// `ordinal + world - 1`), one thread per rank. `load` reads one rank's shard onto that rank's device and is
/// called on the rank's thread. Returns rank 0, which drives the others.
pub fn load_tensor_parallel<F>(
    world: usize,
    device: &Device,
    path: &Path,
    load: F,
) -> Result<Llama, LoadError>
where
    F: Fn(Shard, &Device) -> Result<Llama, LoadError> + Send + Sync + 'static,
{
    let rank_err = |rank: usize, message: String| LoadError::Rank {
        path: path.to_path_buf(),
        rank,
        message,
    };
    if world <= 1 {
        return load(Shard::SINGLE, device);
    }
    let mut inits = RankInit::for_group(device, world)
        .map_err(|m| rank_err(0, m))?
        .into_iter();
    let rank0 = inits.next().ok_or_else(|| rank_err(0, "no ranks".into()))?;
    let load = std::sync::Arc::new(load);
    let (ready_tx, ready_rx) = channel::<(usize, Result<(), LoadError>)>();
    let mut followers = Followers {
        senders: Vec::new(),
        threads: Vec::new(),
    };
    for (i, init) in inits.enumerate() {
        let rank = i + 1;
        let (tx, rx) = channel();
        let (load, ready, path) = (load.clone(), ready_tx.clone(), path.to_path_buf());
        let thread = std::thread::Builder::new()
            .name(format!("hearth-tp-rank{rank}"))
            .spawn(move || {
                let shard = Shard { rank, world };
                let joined =
                    init.connect(rank, world)
                        .map_err(|message| LoadError::Rank { path, rank, message });
                let model = joined.and_then(|(device, comm)| {
                    let mut model = load(shard, &device)?;
                    model.attach(comm, None);
                    Ok(model)
                });
                match model {
                    Ok(model) => {
                        let _ = ready.send((rank, Ok(())));
                        follow(rank, model, rx);
                    }
                    Err(err) => {
                        let _ = ready.send((rank, Err(err)));
                    }
                }
            })
            .map_err(|e| rank_err(rank, format!("spawning its thread: {e}")))?;
        followers.senders.push(tx);
        followers.threads.push(thread);
    }
    drop(ready_tx);
    let (device0, comm0) = rank0.connect(0, world).map_err(|m| rank_err(0, m))?;
    let mut model = load(Shard { rank: 0, world }, &device0)?;
    for _ in 1..world {
        match ready_rx.recv() {
            Ok((_, Ok(()))) => {}
            Ok((_, Err(err))) => return Err(err),
            Err(_) => return Err(rank_err(0, "a follower rank exited while loading".into())),
        }
    }
    model.attach(comm0, Some(followers));
    tracing::info!(world, "tensor-parallel ranks loaded");
    Ok(model)
}

/// A follower's loop: allocate pools and run steps until rank 0 hangs up or a step fails.
fn follow(rank: usize, model: Llama, commands: Receiver<Command>) {
    let mut pool: Option<KvPool> = None;
    for command in commands {
        match command {
            Command::NewPool {
                num_blocks,
                block_size,
                reply,
            } => {
                let made = model.new_local_pool(num_blocks, block_size);
                let answer = made.as_ref().map(|_| ()).map_err(|e| e.to_string());
                pool = made.ok();
                let _ = reply.send(answer);
            }
            Command::Step(step) => {
                let result = match pool.as_mut() {
                    Some(pool) => model.follow(&step, pool),
                    None => Err(candle_core::Error::Msg("a step before any KV pool".into())),
                };
                if let Err(err) = result {
                    tracing::error!(rank, error = %err, "tensor-parallel step failed; leaving the group");
                    model.abort_group();
                    return;
                }
            }
        }
    }
}
