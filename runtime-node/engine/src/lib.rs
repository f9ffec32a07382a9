//! Hearth's engine: loads a Llama-family model, batches requests, serves the OpenAI API. Its
//! command line is `hearth_node_contract`'s; `runtime-node` parses it and calls [`start`], then
//! [`serve::serve`] or [`bench::bench`].

pub mod args;
pub mod bandwidth;
pub mod bench;
pub mod chat_template;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod engine;
pub mod gpu;
pub mod loader;
pub mod metrics;
pub mod model;
pub mod openai;
pub mod parallel;
pub mod sampler;
pub mod serve;
pub mod server;
pub mod tokenizer;
mod tokenizer_spm;

use hearth_node_contract::ModelArgs;

/// Prepares this process to run a model with these flags: refuses a device this build has no
/// backend for, then sizes and pins the kernel threads. Call it once, before anything else starts
/// threads.
pub fn start(model: &ModelArgs) -> Result<(), args::UnsupportedDevice> {
    args::check_backend(model.device)?;
    init_kernel_threads(model.threads, args::pinning(model.pin_threads));
    Ok(())
}

/// Sizes candle's and our kernel pools (`threads`, 0 = one per available CPU) and pins ours.
fn init_kernel_threads(threads: usize, pinning: hearth_kernels::affinity::Pinning) {
    if threads > 0 {
        // candle sizes its worker pools from these variables on first use.
        // SAFETY: nothing else runs yet: no runtime, no engine thread, no kernel pool.
        unsafe {
            std::env::set_var("CANDLE_NUM_THREADS", threads.to_string());
            std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
        }
    }
    if let Err(error) = hearth_kernels::pool::init_global(threads, pinning) {
        tracing::warn!(%error, "could not pin the kernel threads; the OS places them");
    }
    let pool = hearth_kernels::pool::global();
    let threads = pool.threads();
    match pool.pinned_cpus() {
        Some(cpus) => tracing::info!(threads, ?cpus, "kernel threads pinned to CPUs"),
        None => tracing::info!(threads, "kernel threads not pinned"),
    }
}

/// Pins the calling thread, the one that runs the model's steps, to the kernel pool's first CPU
/// when the pool is pinned, until the guard is dropped.
pub(crate) fn pin_step_thread() -> Option<hearth_kernels::pool::PinnedCaller> {
    // New threads inherit their creator's CPUs: rayon's global pool (candle's CPU ops) must
    // exist before this thread is confined to one CPU, or all of its threads would share it.
    let _ = rayon::current_num_threads();
    hearth_kernels::pool::global()
        .pin_caller()
        .unwrap_or_else(|error| {
            tracing::warn!(%error, "could not pin the step thread; the OS places it");
            None
        })
}
