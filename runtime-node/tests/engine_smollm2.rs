//! The real engine (scheduler thread + SmolLM2) end to end below HTTP: batching, cancellation,
//! seeded sampling, stop strings, context limits.

mod common;

use std::time::Duration;

use candle_core::Device;
use hearth_engine::chat_template::TemplateMessage;
use hearth_engine::engine::{
    Engine, EngineConfig, EngineError, FinishReason, GenerateRequest, GenerationEvent, GenerationStream,
    LocalEngine, Prompt,
};
use hearth_engine::loader::{LoadOptions, load_gguf};
use hearth_engine::metrics::EngineMetrics;
use prometheus::Registry;

fn engine() -> Option<(LocalEngine, EngineMetrics)> {
    engine_with(4)
}

fn engine_with(max_batch_size: usize) -> Option<(LocalEngine, EngineMetrics)> {
    // Room for two full sequences only: the third waits for blocks.
    engine_with_pool(max_batch_size, 512)
}

fn engine_with_pool(max_batch_size: usize, kv_cache_tokens: usize) -> Option<(LocalEngine, EngineMetrics)> {
    let path = common::smollm2_gguf()?;
    let options = LoadOptions {
        max_context_tokens: 256,
        weights: Default::default(),
        tensor_parallel: 1,
        kv_cache: None,
    };
    let loaded = load_gguf(&path, &options, &Device::Cpu).expect("model loads");
    let metrics = EngineMetrics::new(&Registry::new()).expect("metrics");
    let config = EngineConfig {
        served_name: "smollm2".into(),
        max_batch_size,
        // Small, so the ~35-token chat prompts prefill in chunks beside other sequences' decodes.
        max_step_tokens: 16,
        kv_cache_tokens,
        kv_block_size: 16,
        kv_cache_memory_bytes: None,
        prefix_caching: true,
    };
    Some((
        LocalEngine::start(loaded, config, metrics.clone()).expect("engine starts"),
        metrics,
    ))
}

fn chat(text: &str, max_tokens: usize) -> GenerateRequest {
    let mut request = GenerateRequest::new(
        text,
        Prompt::Chat(vec![TemplateMessage {
            role: "user".into(),
            content: text.into(),
        }]),
    );
    request.max_tokens = Some(max_tokens);
    request.sampling.temperature = 0.0;
    request
}

async fn collect(mut stream: GenerationStream) -> (String, FinishReason, usize) {
    let mut text = String::new();
    while let Some(event) = stream.events.recv().await {
        match event {
            GenerationEvent::Delta { text: d, .. } => text.push_str(&d),
            GenerationEvent::Finished { reason, usage } => return (text, reason, usage.completion_tokens),
            GenerationEvent::Failed(m) => panic!("generation failed: {m}"),
        }
    }
    panic!("stream ended without a finish event");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_batches_cancels_and_samples() {
    let Some((engine, metrics)) = engine() else { return };
    let prompts = ["Name a fruit.", "What colour is the sky?", "Count to five."];

    // Alone, one at a time.
    let mut solo = Vec::new();
    for p in prompts {
        solo.push(collect(engine.submit(chat(p, 12)).expect("submit")).await);
    }
    // Together: the prompts prefill in chunks (max_step_tokens 16) and decode in one batch.
    let streams: Vec<_> = prompts
        .iter()
        .map(|p| engine.submit(chat(p, 12)).expect("submit"))
        .collect();
    let mut together = Vec::new();
    for s in streams {
        together.push(collect(s).await);
    }
    for ((p, a), b) in prompts.iter().zip(&solo).zip(&together) {
        assert!(!a.0.is_empty(), "{p}: empty answer");
        assert_eq!(a, b, "{p}: batched greedy output differs from solo");
    }
    // The second round reused the first round's prompt blocks (the shared system prompt at least).
    let hits = metrics.prefix_cache_hits.get();
    assert!(hits >= 3 * 16, "prefix cache hits: {hits} tokens");

    // Cancellation: drop the receiver after two deltas; the engine must move on.
    let mut long = engine
        .submit(chat("Write a long story about a dragon.", 200))
        .expect("submit");
    let mut seen = 0;
    while seen < 2 {
        if let Some(GenerationEvent::Delta { .. }) = long.events.recv().await {
            seen += 1;
        }
    }
    drop(long);
    let after = tokio::time::timeout(
        Duration::from_secs(60),
        collect(engine.submit(chat("Hi", 4)).expect("submit")),
    )
    .await
    .expect("engine still serving after a cancellation");
    assert!(after.2 > 0);
    assert_eq!(metrics.requests.with_label_values(&["cancelled"]).get(), 1);

    // Seeded sampling is reproducible; a different seed (almost surely) differs.
    let sampled = |seed| {
        let mut r = chat("Tell me a fun fact.", 16);
        r.sampling.temperature = 1.0;
        r.sampling.top_p = 0.95;
        r.sampling.seed = Some(seed);
        r
    };
    let a = collect(engine.submit(sampled(1)).expect("submit")).await;
    let b = collect(engine.submit(sampled(1)).expect("submit")).await;
    assert_eq!(a, b, "same seed, same text");

    // Stop strings end generation and are not emitted.
    let mut counted = GenerateRequest::new("count", Prompt::Text("1, 2, 3, 4, 5,".into()));
    counted.max_tokens = Some(20);
    counted.sampling.temperature = 0.0;
    counted.stop = vec!["9".into()];
    let (text, reason, _) = collect(engine.submit(counted).expect("submit")).await;
    assert_eq!(reason, FinishReason::Stop);
    assert_eq!(text, " 6, 7, 8, ");

    // Log-probabilities: one per generated token, the chosen (greedy) token the most likely.
    let mut with_logprobs = chat("Name a fruit.", 6);
    with_logprobs.logprobs = Some(3);
    let mut stream = engine.submit(with_logprobs).expect("submit");
    let mut entries = Vec::new();
    let mut completion_tokens = 0;
    while let Some(event) = stream.events.recv().await {
        match event {
            GenerationEvent::Delta { logprobs, .. } => entries.extend(logprobs),
            GenerationEvent::Finished { usage, .. } => {
                completion_tokens = usage.completion_tokens;
                break;
            }
            GenerationEvent::Failed(m) => panic!("{m}"),
        }
    }
    assert!(!entries.is_empty() && entries.len() <= completion_tokens);
    for entry in &entries {
        assert_eq!(entry.top.len(), 3);
        assert_eq!(entry.top[0].0, entry.token, "greedy picks the most likely token");
        assert!(entry.logprob <= 0.0 && (entry.logprob - entry.top[0].1).abs() < 1e-5);
    }

    // The context limit is checked before anything runs.
    let err = engine.submit(chat("Hi", 1000)).expect_err("too long");
    assert!(
        matches!(
            err,
            EngineError::ContextLengthExceeded {
                limit: 256,
                max_tokens: 1000,
                ..
            }
        ),
        "{err}"
    );
    assert!(metrics.generation_tokens.get() > 0);
    assert!(metrics.time_to_first_token.get_sample_count() >= 8);
    engine.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn higher_priority_preempts_and_the_preempted_request_resumes_exactly() {
    // One slot: a second request can only run by preempting the first.
    let Some((engine, metrics)) = engine_with(1) else {
        return;
    };
    let counting = |priority| {
        let mut r = GenerateRequest::new("count", Prompt::Text("1, 2, 3, 4, 5, 6, 7, 8,".into()));
        r.max_tokens = Some(40);
        r.sampling.temperature = 0.0;
        r.priority = priority;
        r
    };
    let alone = collect(engine.submit(counting(0)).expect("submit")).await;

    let mut low = engine.submit(counting(0)).expect("submit");
    let mut low_text = String::new();
    while low_text.len() < 6 {
        match low.events.recv().await {
            Some(GenerationEvent::Delta { text, .. }) => low_text.push_str(&text),
            other => panic!("unexpected {other:?}"),
        }
    }
    let mut urgent = chat("Say hi.", 8);
    urgent.priority = 10;
    let high = collect(engine.submit(urgent).expect("submit")).await;
    assert!(high.2 > 0);
    // The urgent request ran by preempting the counting one, which is not finished yet.
    assert_eq!(metrics.preemptions.get(), 1);
    match low.events.try_recv() {
        Ok(GenerationEvent::Delta { text, .. }) => low_text.push_str(&text),
        Ok(other) => panic!("the preempted request should still be running: {other:?}"),
        Err(_) => {}
    }
    let (rest, reason, tokens) = collect(low).await;
    low_text.push_str(&rest);
    assert_eq!(
        (low_text, reason, tokens),
        alone,
        "recomputed sequence continues exactly"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_kv_cache_preempts_the_latest_sequence_which_resumes_exactly() {
    // 16 blocks of 16 tokens (the pool always holds one 256-token context); each counting
    // request grows to ~137 tokens (9 blocks), so two fit at admission but not at full length:
    // the later one must give its blocks up.
    let Some((engine, metrics)) = engine_with_pool(4, 256) else {
        return;
    };
    let counting = || {
        let mut r = GenerateRequest::new("count", Prompt::Text("1, 2, 3, 4, 5, 6, 7, 8,".into()));
        r.max_tokens = Some(120);
        r.sampling.temperature = 0.0;
        r
    };
    let alone = collect(engine.submit(counting()).expect("submit")).await;
    assert_eq!(alone.2, 120, "counting runs to max_tokens");
    assert_eq!(metrics.preemptions.get(), 0, "one sequence alone fits");
    let first = engine.submit(counting()).expect("submit");
    let second = engine.submit(counting()).expect("submit");
    let (first, second) = tokio::join!(collect(first), collect(second));
    assert!(
        metrics.preemptions.get() >= 1,
        "the pool cannot hold both at full length"
    );
    assert_eq!(first, alone);
    assert_eq!(
        second, alone,
        "the preempted sequence recomputes and continues exactly"
    );
    engine.shutdown();
}
