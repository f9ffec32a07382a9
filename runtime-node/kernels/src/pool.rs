//! A persistent pool of worker threads for the per-op parallel loops of a decode step.
//!
//! A decode step runs a few hundred small parallel loops (7 matmuls and attention per layer),
//! each worth tens of microseconds; waking sleeping threads for each (as a general-purpose pool
//! does after it idles) costs about as much as the work. Here the caller publishes a job by
//! bumping an epoch counter, works on it itself, and the workers, spinning between jobs, pick
//! it up in well under a microsecond. A worker that has seen no job for [`SPIN_FOR`] parks on a
//! condition variable, so an idle engine uses no CPU. A pool may pin its threads to CPUs
//! ([`crate::affinity`]): worker i to the i-th, the caller to the first ([`WorkerPool::pin_caller`]).

use std::cell::UnsafeCell;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::affinity::{self, Pinning};

/// How long an idle worker spins before it parks.
const SPIN_FOR: Duration = Duration::from_millis(2);

/// The work of one parallel loop: `run(i)` for every task index `i < tasks`.
#[derive(Clone, Copy)]
struct Job {
    // Erased borrow of the caller's closure; valid until every worker has reported done.
    run: *const (dyn Fn(usize) + Sync),
    tasks: usize,
}

struct Shared {
    epoch: AtomicU64,
    job: UnsafeCell<Job>,
    next_task: AtomicUsize,
    workers_done: AtomicUsize,
    parked: Mutex<usize>,
    wake: Condvar,
    shutdown: AtomicBool,
}

// SAFETY: `job` is written only by the caller of `run` while no worker reads it (between jobs,
// ordered by the epoch's release/acquire), and read by workers only during the job.
unsafe impl Sync for Shared {}
unsafe impl Send for Shared {}

/// The pool: `threads - 1` workers plus the calling thread.
pub struct WorkerPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    // The CPU of each thread (the caller's first) when the pool is pinned.
    cpus: Option<Vec<usize>>,
    // One job at a time (the engine has one scheduler thread; this keeps others correct).
    caller: Mutex<()>,
}

impl std::fmt::Debug for WorkerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WorkerPool({} threads)", self.threads())
    }
}

fn noop(_: usize) {}

impl WorkerPool {
    /// A pool running loops on `threads` threads (the caller counts as one), placed by the OS.
    pub fn new(threads: usize) -> Self {
        Self::spawn(threads.max(1), None).expect("an unpinned pool has nothing to refuse")
    }

    /// A pool with one thread per entry of `cpus`, worker i running only on `cpus[i]`; the
    /// caller's CPU is `cpus[0]` once it calls [`Self::pin_caller`]. Fails when the OS refuses
    /// a CPU (outside the process's affinity mask, or no such CPU).
    pub fn pinned(cpus: &[usize]) -> io::Result<Self> {
        Self::spawn(cpus.len().max(1), Some(cpus.to_vec()))
    }

    fn spawn(threads: usize, cpus: Option<Vec<usize>>) -> io::Result<Self> {
        let shared = Arc::new(Shared {
            epoch: AtomicU64::new(0),
            job: UnsafeCell::new(Job {
                run: &noop as &(dyn Fn(usize) + Sync),
                tasks: 0,
            }),
            next_task: AtomicUsize::new(0),
            workers_done: AtomicUsize::new(0),
            parked: Mutex::new(0),
            wake: Condvar::new(),
            shutdown: AtomicBool::new(false),
        });
        let workers = (1..threads)
            .map(|i| {
                let shared = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name(format!("hearth-kernel-{i}"))
                    .spawn(move || work(&shared))
                    .expect("spawning a kernel worker thread")
            })
            .collect();
        let pool = Self {
            shared,
            workers,
            cpus,
            caller: Mutex::new(()),
        };
        if let Some(cpus) = &pool.cpus {
            for (worker, &cpu) in pool.workers.iter().zip(&cpus[1..]) {
                affinity::pin_spawned(worker, &[cpu])?;
            }
        }
        Ok(pool)
    }

    /// Pins the calling thread (the one that will run loops: the engine's step thread) to the
    /// pool's first CPU when the pool is pinned, until the returned guard is dropped. Threads it
    /// spawns meanwhile inherit that one CPU, so keep the guard only around the steps.
    pub fn pin_caller(&self) -> io::Result<Option<PinnedCaller>> {
        let Some(cpus) = &self.cpus else {
            return Ok(None);
        };
        let previous = affinity::current_thread_cpus();
        affinity::pin_current_thread(&cpus[..1])?;
        Ok(Some(PinnedCaller { previous }))
    }

    /// The CPU of each thread, the caller's first, when the pool is pinned.
    pub fn pinned_cpus(&self) -> Option<&[usize]> {
        self.cpus.as_deref()
    }

    /// Threads that run a loop, the caller included.
    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Runs `task(i)` for every `i < tasks` across the pool; returns when all are done.
    pub fn run(&self, tasks: usize, task: &(dyn Fn(usize) + Sync)) {
        if self.workers.is_empty() || tasks <= 1 {
            (0..tasks).for_each(task);
            return;
        }
        let _one_job = self.caller.lock().unwrap_or_else(|e| e.into_inner());
        let shared = &*self.shared;
        // SAFETY: no worker reads `job` until the epoch below changes, and `run` does not return
        // before every worker has finished with it, so the erased borrow outlives its uses.
        unsafe {
            *shared.job.get() = Job {
                run: std::mem::transmute::<&(dyn Fn(usize) + Sync), *const (dyn Fn(usize) + Sync)>(task),
                tasks,
            };
        }
        shared.next_task.store(0, Ordering::Relaxed);
        shared.workers_done.store(0, Ordering::Relaxed);
        shared.epoch.fetch_add(1, Ordering::Release);
        if *shared.parked.lock().unwrap_or_else(|e| e.into_inner()) > 0 {
            shared.wake.notify_all();
        }
        take_tasks(shared);
        let mut spins = 0u32;
        while shared.workers_done.load(Ordering::Acquire) < self.workers.len() {
            pause(&mut spins);
        }
    }

    /// Splits `out` into `chunk`-sized pieces (the last may be shorter) and runs
    /// `fill(index, piece)` for each across the pool.
    pub fn for_each_chunk<T: Send>(
        &self,
        out: &mut [T],
        chunk: usize,
        fill: &(dyn Fn(usize, &mut [T]) + Sync),
    ) {
        let chunk = chunk.max(1);
        let len = out.len();
        let base = SendPtr::new(out);
        self.run(len.div_ceil(chunk), &|i| {
            let start = i * chunk;
            let end = (start + chunk).min(len);
            // SAFETY: tasks get disjoint ranges of `out`, which outlives `run`.
            let piece = unsafe { std::slice::from_raw_parts_mut(base.get().add(start), end - start) };
            fill(i, piece);
        });
    }
}

/// The calling thread pinned by [`WorkerPool::pin_caller`]; dropping it restores the CPUs the
/// thread had before.
#[derive(Debug)]
pub struct PinnedCaller {
    previous: Vec<usize>,
}

impl Drop for PinnedCaller {
    fn drop(&mut self) {
        // Nothing to report to: at worst the thread stays on its one CPU.
        let _ = affinity::pin_current_thread(&self.previous);
    }
}

/// A raw pointer the tasks of one loop share (each touching its own range).
pub struct SendPtr<T>(*mut T);

impl<T> SendPtr<T> {
    /// Wraps the start of `slice`.
    pub fn new(slice: &mut [T]) -> Self {
        Self(slice.as_mut_ptr())
    }

    /// The pointer.
    pub fn get(&self) -> *mut T {
        self.0
    }
}

// SAFETY: used only to hand disjoint ranges of one slice to the tasks of a loop.
unsafe impl<T: Send> Sync for SendPtr<T> {}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::Release);
        self.shared.epoch.fetch_add(1, Ordering::Release);
        self.shared.wake.notify_all();
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

/// One wait step: a CPU spin hint for the first iterations, then a yield to the OS, so that a
/// thread waiting on a descheduled one (cores shared with other processes) gives up its time
/// slice instead of burning it.
fn pause(spins: &mut u32) {
    *spins = spins.wrapping_add(1);
    if *spins < 2048 {
        std::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
}

/// Claims and runs tasks of the current job until none are left.
fn take_tasks(shared: &Shared) {
    // SAFETY: called only while the current job is published (see `WorkerPool::run`).
    let job = unsafe { *shared.job.get() };
    loop {
        let i = shared.next_task.fetch_add(1, Ordering::Relaxed);
        if i >= job.tasks {
            break;
        }
        // SAFETY: the closure outlives the job (see `WorkerPool::run`).
        unsafe { (*job.run)(i) };
    }
}

/// A worker: wait for a new epoch (spinning, then parked), run its tasks, report done.
fn work(shared: &Shared) {
    // Epoch 0 is the pool's state at creation: a job published before this thread first looks
    // is still seen as new.
    let mut seen = 0;
    loop {
        let started = Instant::now();
        let mut spins = 0u32;
        while shared.epoch.load(Ordering::Acquire) == seen {
            pause(&mut spins);
            if spins.is_multiple_of(64) && started.elapsed() > SPIN_FOR {
                let mut parked = shared.parked.lock().unwrap_or_else(|e| e.into_inner());
                *parked += 1;
                while shared.epoch.load(Ordering::Acquire) == seen {
                    parked = shared.wake.wait(parked).unwrap_or_else(|e| e.into_inner());
                }
                *parked -= 1;
            }
        }
        seen = shared.epoch.load(Ordering::Acquire);
        if shared.shutdown.load(Ordering::Acquire) {
            return;
        }
        take_tasks(shared);
        shared.workers_done.fetch_add(1, Ordering::Release);
    }
}

static GLOBAL: OnceLock<WorkerPool> = OnceLock::new();

/// One thread per CPU the OS offers this process.
fn available_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Creates the process-wide pool with `threads` threads (0: one per available CPU), pinned as
/// [`affinity::plan`] says for `pinning` and this thread's allowed CPUs; effective only before
/// the pool's first use. When the OS refuses to pin, the pool runs unpinned and the error is
/// returned (for a warning).
pub fn init_global(threads: usize, pinning: Pinning) -> io::Result<()> {
    let threads = match threads {
        0 => available_threads(),
        n => n,
    };
    let mut refused = Ok(());
    GLOBAL.get_or_init(
        || match affinity::plan(threads, pinning, &affinity::current_thread_cpus()) {
            Some(cpus) => WorkerPool::pinned(&cpus).unwrap_or_else(|error| {
                refused = Err(error);
                WorkerPool::new(threads)
            }),
            None => WorkerPool::new(threads),
        },
    );
    refused
}

/// The process-wide pool (one thread per available core unless [`init_global`] said otherwise).
pub fn global() -> &'static WorkerPool {
    GLOBAL.get_or_init(|| WorkerPool::new(available_threads()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_runs_once_across_many_jobs() {
        let pool = WorkerPool::new(3);
        for tasks in [0, 1, 2, 7, 100] {
            let counts: Vec<AtomicUsize> = (0..tasks).map(|_| AtomicUsize::new(0)).collect();
            pool.run(tasks, &|i| {
                counts[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(
                counts.iter().all(|c| c.load(Ordering::Relaxed) == 1),
                "{tasks} tasks"
            );
        }
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn pinned_workers_and_caller_run_on_their_cpus() {
        let allowed = affinity::current_thread_cpus();
        if allowed.len() < 2 {
            eprintln!("skipped: needs two CPUs, this thread may use {allowed:?}");
            return;
        }
        // Reversed, so that an unpinned thread (allowed everywhere) or one pinned in order fails.
        let cpus = vec![allowed[1], allowed[0]];
        let pool = WorkerPool::pinned(&cpus).unwrap();
        assert_eq!(pool.pinned_cpus(), Some(&cpus[..]));
        let seen = Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let before = affinity::current_thread_cpus();
                let pinned = pool.pin_caller().unwrap().expect("a pinned pool pins its caller");
                assert_eq!(affinity::current_thread_cpus(), vec![cpus[0]]);
                // Two tasks that wait for each other: the caller and the worker each run one.
                let both = std::sync::Barrier::new(2);
                pool.run(2, &|_| {
                    both.wait();
                    let me = (
                        std::thread::current().name().unwrap_or("").to_string(),
                        affinity::current_thread_cpus(),
                    );
                    seen.lock().unwrap().push(me);
                });
                drop(pinned);
                assert_eq!(
                    affinity::current_thread_cpus(),
                    before,
                    "the guard restores the mask"
                );
            });
        });
        let mut seen = seen.into_inner().unwrap();
        seen.sort();
        // The caller (an unnamed scoped thread) sorts first.
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert_eq!(seen[0], (String::new(), vec![cpus[0]]), "the caller: {seen:?}");
        assert_eq!(
            seen[1],
            ("hearth-kernel-1".to_string(), vec![cpus[1]]),
            "the worker: {seen:?}"
        );
        assert!(WorkerPool::pinned(&[allowed[0], libc::CPU_SETSIZE as usize]).is_err());
    }

    #[test]
    fn chunks_cover_the_slice_and_parked_workers_wake() {
        let pool = WorkerPool::new(2);
        let mut out = vec![0usize; 1001];
        pool.for_each_chunk(&mut out, 64, &|i, piece| {
            piece.iter_mut().for_each(|v| *v = i + 1)
        });
        assert!(out.iter().enumerate().all(|(j, v)| *v == j / 64 + 1));
        // Past the spin window the worker is parked; a new job must still complete.
        std::thread::sleep(SPIN_FOR * 3);
        pool.for_each_chunk(&mut out, 10, &|_, piece| piece.iter_mut().for_each(|v| *v = 7));
        assert!(out.iter().all(|v| *v == 7));
    }
}
