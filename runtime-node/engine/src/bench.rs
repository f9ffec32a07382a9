//! `runtime-node bench`: prefill and decode throughput of a model on this machine, straight
//! through the model (no HTTP, no scheduler), so kernel changes can be measured in isolation.

use std::time::Instant;

use anyhow::Context;
use clap::Args;
use hearth_node_contract::ModelArgs;

use crate::args::{kv_cache, weight_format};
use crate::loader::{LoadOptions, load_model};
use crate::model::kv_cache::{BlockTable, DEFAULT_BLOCK_SIZE, blocks_for};
use crate::model::llama::argmax_rows;
use crate::model::{KvPool, Llama, StepInput};
use crate::serve::device;
use crate::tokenizer::TextTokenizer;

/// Flags of `runtime-node bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// The model to load and how to run it.
    #[command(flatten)]
    pub model: ModelArgs,
    /// Prompt length used to measure prefill.
    #[arg(long, default_value_t = 128)]
    pub prompt_tokens: usize,
    /// Tokens decoded to measure batch-1 decode.
    #[arg(long, default_value_t = 64)]
    pub decode_tokens: usize,
    /// Concurrent sequences for the aggregate decode measurement (1 = skip it).
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Also measure prefill of a prompt this long, in a sequence of its own (0 = skip it):
    /// llama-bench's `pp512` beside the shorter prompt that decoding follows.
    #[arg(long, default_value_t = 0)]
    pub long_prompt_tokens: usize,
    /// Tensor-parallel ranks to measure with (as `serve --tensor-parallel`): on CPU the ranks
    /// share the cores, on CUDA one GPU each.
    #[arg(long, default_value_t = 1)]
    pub tensor_parallel: usize,
    /// Also measure this machine's memory read bandwidth (the decode roofline).
    #[arg(long)]
    pub bandwidth: bool,
    /// End with one JSON line of every figure (what `make bench` reads).
    #[arg(long)]
    pub json: bool,
}

/// Every figure one bench run measured.
#[derive(Debug, Default, serde::Serialize)]
pub struct BenchReport {
    /// Seconds to load (memory-map and prepare) the weights.
    pub load_s: f64,
    /// Prompt length.
    pub prompt_tokens: usize,
    /// Prompt tokens per second.
    pub prefill_tok_s: f64,
    /// Seconds from the prompt to its first generated token (no HTTP).
    pub ttft_s: f64,
    /// Batch-1 decode tokens per second.
    pub decode_tok_s: f64,
    /// Tensor-parallel ranks.
    pub tensor_parallel: usize,
    /// Concurrent sequences of the aggregate measurement.
    pub batch: usize,
    /// Aggregate decode tokens per second over `batch` sequences.
    pub batch_decode_tok_s: Option<f64>,
    /// Length of the long prompt (`--long-prompt-tokens`), when measured.
    pub long_prompt_tokens: Option<usize>,
    /// Its prefill tokens per second.
    pub long_prefill_tok_s: Option<f64>,
    /// Peak resident set size in bytes.
    pub peak_rss_bytes: Option<u64>,
    /// Memory read bandwidth in bytes per second, with `--bandwidth`.
    pub read_bandwidth_bytes_s: Option<f64>,
}

/// Prints load time, prefill tokens/s, batch-1 decode tokens/s and aggregate decode tokens/s of
/// `--batch` concurrent sequences.
pub fn bench(args: BenchArgs) -> anyhow::Result<()> {
    let mut report = BenchReport::default();
    let needed = args.prompt_tokens + args.decode_tokens + 1;
    let options = LoadOptions {
        max_context_tokens: args
            .model
            .max_context_tokens
            .max(needed)
            .max(args.long_prompt_tokens + 1),
        weights: weight_format(&args.model),
        kv_cache: kv_cache(&args.model),
        tensor_parallel: args.tensor_parallel.max(1),
    };
    let loaded = load_model(&args.model.model, &options, &device(args.model.device)?)?;
    let model = &loaded.model;
    // Steps run pinned like the engine's; the bandwidth probe below spawns threads, unpinned.
    let pinned = crate::pin_step_thread();
    println!("model: {}", args.model.model.display());
    println!("threads: {}", candle_core::utils::get_num_threads());
    println!("tensor parallel: {}", options.tensor_parallel);
    println!("load: {:.3} s", loaded.load_time.as_secs_f64());
    report.load_s = loaded.load_time.as_secs_f64();
    report.tensor_parallel = options.tensor_parallel;

    let prompt = bench_prompt(&loaded.tokenizer, args.prompt_tokens)?;

    let sequences = args.batch.max(1) + 1;
    let mut pool = model.new_pool(
        sequences * blocks_for(needed, DEFAULT_BLOCK_SIZE),
        DEFAULT_BLOCK_SIZE,
    )?;

    // Warm-up: first calls allocate scratch buffers and spin up the kernel pool.
    let mut warm = BlockTable::default();
    forward_one(model, &prompt[..prompt.len().min(8)], &mut warm, &mut pool)?;
    pool.release(&mut warm);

    let mut table = BlockTable::default();
    let (mut next, prefill) = timed_prefill(model, &prompt, &mut table, &mut pool, "prefill")?;
    // The prompt's forward pass ends with the first token's logits: prefill time is TTFT.
    (report.prompt_tokens, report.prefill_tok_s, report.ttft_s) =
        (prompt.len(), prompt.len() as f64 / prefill, prefill);

    let started = Instant::now();
    for _ in 0..args.decode_tokens {
        next = forward_one(model, &[next], &mut table, &mut pool)?;
    }
    let decode = started.elapsed().as_secs_f64();
    report.decode_tok_s = args.decode_tokens as f64 / decode;
    println!(
        "decode (batch 1): {} tokens in {:.3} s = {:.1} tok/s",
        args.decode_tokens,
        decode,
        args.decode_tokens as f64 / decode
    );

    if args.batch > 1 {
        pool.release(&mut table);
        let mut tables: Vec<BlockTable> = (0..args.batch).map(|_| BlockTable::default()).collect();
        let mut tokens: Vec<u32> = Vec::with_capacity(args.batch);
        for table in tables.iter_mut() {
            tokens.push(forward_one(model, &prompt, table, &mut pool)?);
        }
        let started = Instant::now();
        for _ in 0..args.decode_tokens {
            let inputs: Vec<[u32; 1]> = tokens.iter().map(|t| [*t]).collect();
            let mut batch: Vec<StepInput<'_>> = inputs
                .iter()
                .zip(tables.iter_mut())
                .map(|(t, table)| StepInput { tokens: t, table })
                .collect();
            tokens = argmax_rows(&model.forward(&mut batch, &mut pool)?)?;
        }
        let elapsed = started.elapsed().as_secs_f64();
        let total = args.batch * args.decode_tokens;
        (report.batch, report.batch_decode_tok_s) = (args.batch, Some(total as f64 / elapsed));
        println!(
            "decode (batch {}): {total} tokens in {elapsed:.3} s = {:.1} tok/s aggregate",
            args.batch,
            total as f64 / elapsed
        );
    }
    if args.long_prompt_tokens > 0 {
        let long = bench_prompt(&loaded.tokenizer, args.long_prompt_tokens)?;
        // A pool of its own, so the peak RSS still reflects the streams' cache, not this one.
        drop(pool);
        let mut pool = model.new_pool(blocks_for(long.len() + 1, DEFAULT_BLOCK_SIZE), DEFAULT_BLOCK_SIZE)?;
        let mut table = BlockTable::default();
        let (_, elapsed) = timed_prefill(model, &long, &mut table, &mut pool, "prefill (long prompt)")?;
        (report.long_prompt_tokens, report.long_prefill_tok_s) =
            (Some(long.len()), Some(long.len() as f64 / elapsed));
    }
    drop(pinned);
    report.peak_rss_bytes = crate::bandwidth::peak_rss_bytes();
    if let Some(rss) = report.peak_rss_bytes {
        println!("peak RSS: {:.1} MiB", rss as f64 / f64::from(1u32 << 20));
    }
    if args.bandwidth {
        let threads = candle_core::utils::get_num_threads();
        let rate = crate::bandwidth::read_bandwidth(1 << 30, threads, 3);
        println!(
            "memory read bandwidth ({threads} threads): {:.1} GB/s",
            rate / 1e9
        );
        report.read_bandwidth_bytes_s = Some(rate);
    }
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    }
    Ok(())
}

/// A deterministic prompt of ordinary tokens, `tokens` long (at least one).
fn bench_prompt(tokenizer: &TextTokenizer, tokens: usize) -> anyhow::Result<Vec<u32>> {
    let text = "The quick brown fox jumps over the lazy dog. ".repeat(tokens / 8 + 1);
    let mut prompt = tokenizer
        .encode(&text, false)
        .context("tokenizing the bench prompt")?;
    prompt.truncate(tokens.max(1));
    Ok(prompt)
}

/// Prefills `prompt` into `table`, prints its speed under `label`, and returns the first token
/// it generates and the seconds it took.
fn timed_prefill(
    model: &Llama,
    prompt: &[u32],
    table: &mut BlockTable,
    pool: &mut KvPool,
    label: &str,
) -> anyhow::Result<(u32, f64)> {
    let started = Instant::now();
    let next = forward_one(model, prompt, table, pool)?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{label}: {} tokens in {seconds:.3} s = {:.1} tok/s",
        prompt.len(),
        prompt.len() as f64 / seconds
    );
    Ok((next, seconds))
}

fn forward_one(
    model: &Llama,
    tokens: &[u32],
    table: &mut BlockTable,
    pool: &mut KvPool,
) -> anyhow::Result<u32> {
    let logits = model.forward(&mut [StepInput { tokens, table }], pool)?;
    argmax_rows(&logits)?
        .first()
        .copied()
        .context("the model returned no logits")
}
