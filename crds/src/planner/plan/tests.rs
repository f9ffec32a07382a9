//! Plans checked against hand-computed numbers for real models; the arithmetic is in comments.

use super::super::{PlanError, WeightFormat, lookup_gpu, lookup_model};
use super::*;

/// 1 GiB + 512 MiB: runtime plus NCCL overhead when a replica spans GPUs.
const DISTRIBUTED_OVERHEAD: u64 = 1_610_612_736;

fn request(model: &str, weights: WeightFormat, gpu: &str) -> PlanRequest {
    PlanRequest {
        architecture: lookup_model(model).unwrap_or_else(|| panic!("{model} is in the catalog")),
        weights,
        kv_cache_bytes_per_element: 2,
        max_context_tokens: 8192,
        max_batch_size: 1,
        tensor_parallel: 1,
        pipeline_parallel: 1,
        gpu_memory_bytes: lookup_gpu(gpu)
            .unwrap_or_else(|| panic!("{gpu} is in the catalog"))
            .memory_bytes(),
    }
}

fn planned(request: &PlanRequest) -> MemoryPlan {
    plan(request).unwrap_or_else(|error| panic!("plannable: {error}"))
}

#[test]
fn llama_3_1_8b_bf16_fits_one_h100() {
    let request = PlanRequest {
        max_batch_size: 8,
        ..request("Llama-3.1-8B", WeightFormat::BF16, "nvidia-h100-80gb")
    };
    let plan = planned(&request);
    // weights: 8,030,261,248 params × 2 bytes = 16,060,522,496
    assert_eq!(plan.parameter_count, 8_030_261_248);
    assert_eq!(plan.weight_bytes, 16_060_522_496);
    assert_eq!(plan.weight_bytes_per_gpu, 16_060_522_496);
    // KV per token: 2 (K, V) × 32 layers × 8 kv heads × 128 head_dim × 2 bytes = 131,072;
    // × 8,192 tokens × 8 sequences = 8,589,934,592 (8 GiB)
    assert_eq!(plan.kv_bytes_per_token, 131_072);
    assert_eq!(plan.kv_cache_bytes, 8_589_934_592);
    assert_eq!(plan.kv_cache_bytes_per_gpu, 8_589_934_592);
    // activations: tokens = min(max(8, 2,048), 8 × 8,192) = 2,048;
    // width = 4 × 4,096 + (32 + 2 × 8) × 128 + 3 × 14,336 = 16,384 + 6,144 + 43,008 = 65,536;
    // 2,048 × 65,536 × 2 bytes = 268,435,456; logits 8 × 128,256 × 8 = 8,208,384 → 276,643,840
    assert_eq!(plan.activation_bytes, 276_643_840);
    assert_eq!(plan.runtime_overhead_bytes, 1_073_741_824);
    // 16,060,522,496 + 8,589,934,592 + 276,643,840 + 1,073,741,824 = 26,000,842,752 (24.2 GiB)
    assert_eq!(plan.per_gpu_bytes, 26_000_842_752);
    // 80 GiB = 85,899,345,920; headroom 85,899,345,920 − 26,000,842,752 = 59,898,503,168
    assert_eq!(plan.gpu_memory_bytes, 85_899_345_920);
    assert_eq!(plan.headroom_bytes, 59_898_503_168);
    assert!(plan.fits);
    assert_eq!(
        plan.summary(),
        "planned 24.2 GiB per GPU of 80.0 GiB (weights 15.0, KV cache 8.0, activations 0.3, runtime 1.0); \
         55.8 GiB spare"
    );
}

#[test]
fn llama_3_1_70b_bf16_does_not_fit_one_80_gb_gpu() {
    let plan = planned(&request("Llama-3.1-70B", WeightFormat::BF16, "nvidia-h100-80gb"));
    // weights: 70,553,706,496 params × 2 bytes = 141,107,412,992
    assert_eq!(plan.weight_bytes, 141_107_412_992);
    // KV per token 2 × 80 × 8 × 128 × 2 = 327,680; × 8,192 tokens × 1 = 2,684,354,560
    assert_eq!(plan.kv_bytes_per_token, 327_680);
    assert_eq!(plan.kv_cache_bytes, 2_684_354_560);
    // activations: tokens min(max(1, 2,048), 8,192) = 2,048;
    // width 4 × 8,192 + (64 + 16) × 128 + 3 × 28,672 = 32,768 + 10,240 + 86,016 = 129,024;
    // 2,048 × 129,024 × 2 = 528,482,304; logits 128,256 × 8 = 1,026,048 → 529,508,352
    assert_eq!(plan.activation_bytes, 529_508_352);
    // 141,107,412,992 + 2,684,354,560 + 529,508,352 + 1,073,741,824 = 145,395,017,728
    assert_eq!(plan.per_gpu_bytes, 145_395_017_728);
    // 85,899,345,920 − 145,395,017,728 = −59,495,671,808
    assert_eq!(plan.headroom_bytes, -59_495_671_808);
    assert!(!plan.fits);
    assert_eq!(
        plan.summary(),
        "planned 135.4 GiB per GPU exceeds 80.0 GiB by 55.4 GiB \
         (weights 131.4, KV cache 2.5, activations 0.5, runtime 1.0)"
    );
}

#[test]
fn llama_3_1_70b_bf16_fits_four_a100s_with_tensor_parallelism() {
    let request = PlanRequest {
        max_batch_size: 16,
        tensor_parallel: 4,
        ..request("Llama-3.1-70B", WeightFormat::BF16, "nvidia-a100-80gb")
    };
    let plan = planned(&request);
    // per GPU and layer: q, o 2 × 8,192 × (64 / 4 = 16 heads × 128) = 33,554,432;
    //   k, v 2 × 8,192 × (8 / 4 = 2 heads × 128) = 4,194,304; MLP 704,643,072 / 4 = 176,160,768;
    //   norms 16,384 (replicated) → 213,925,888 × 80 layers = 17,114,071,040
    // vocabulary rows 128,256 / 4 = 32,064 × 8,192 = 262,668,288, embedding and lm_head
    //   → 525,336,576; final norm 8,192 → 17,639,415,808 params × 2 = 35,278,831,616
    // (a quarter of 141,107,412,992 plus three extra copies of the replicated norms)
    assert_eq!(plan.weight_bytes_per_gpu, 35_278_831_616);
    // KV: whole 327,680 × 8,192 × 16 = 42,949,672,960; per GPU 2 × 80 × 2 × 128 × 2 = 81,920
    //   per token × 131,072 = 10,737,418,240
    assert_eq!(plan.kv_cache_bytes, 42_949_672_960);
    assert_eq!(plan.kv_cache_bytes_per_gpu, 10_737_418_240);
    // activations: width 32,768 + (16 + 4) × 128 + 3 × 7,168 = 32,768 + 2,560 + 21,504 = 56,832;
    //   2,048 × 56,832 × 2 = 232,783,872; logits 16 × 128,256 × 8 = 16,416,768 → 249,200,640
    assert_eq!(plan.activation_bytes, 249_200_640);
    assert_eq!(plan.runtime_overhead_bytes, DISTRIBUTED_OVERHEAD);
    // 35,278,831,616 + 10,737,418,240 + 249,200,640 + 1,610,612,736 = 47,876,063,232
    assert_eq!(plan.per_gpu_bytes, 47_876_063_232);
    // 85,899,345,920 − 47,876,063,232 = 38,023,282,688
    assert_eq!(plan.headroom_bytes, 38_023_282_688);
    assert!(plan.fits);
}

#[test]
fn llama_3_1_70b_with_pipeline_stages_counts_one_vocabulary_matrix() {
    let request = PlanRequest {
        max_batch_size: 16,
        tensor_parallel: 2,
        pipeline_parallel: 2,
        ..request("Llama-3.1-70B", WeightFormat::BF16, "nvidia-a100-80gb")
    };
    let plan = planned(&request);
    // 40 layers per stage; per layer q, o 2 × 8,192 × 32 × 128 = 67,108,864; k, v
    //   2 × 8,192 × 4 × 128 = 8,388,608; MLP 352,321,536; norms 16,384 → 427,835,392 × 40
    //   = 17,113,415,680; one vocabulary matrix 64,128 rows × 8,192 = 525,336,576; final norm
    //   8,192 → 17,638,760,448 × 2 = 35,277,520,896
    assert_eq!(plan.weight_bytes_per_gpu, 35_277_520_896);
    // KV per GPU: 2 × 40 layers × 4 heads × 128 × 2 = 81,920 per token × 131,072
    assert_eq!(plan.kv_cache_bytes_per_gpu, 10_737_418_240);
}

#[test]
fn qwen2_5_7b_bf16_fits_an_l4_at_32k_context() {
    let mut request = request("Qwen2.5-7B", WeightFormat::BF16, "nvidia-l4-24gb");
    request.max_context_tokens = 32_768;
    request.gpu_memory_bytes = lookup_gpu("nvidia-l4-24gb").expect("known").usable_memory_bytes();
    let plan = planned(&request);
    // weights 7,615,616,512 × 2 = 15,231,233,024
    assert_eq!(plan.weight_bytes, 15_231_233_024);
    // KV per token 2 × 28 × 4 × 128 × 2 = 57,344; × 32,768 = 1,879,048,192
    assert_eq!(plan.kv_bytes_per_token, 57_344);
    assert_eq!(plan.kv_cache_bytes, 1_879_048_192);
    // activations: width 4 × 3,584 + (28 + 8) × 128 + 3 × 18,944 = 14,336 + 4,608 + 56,832
    //   = 75,776; 2,048 × 75,776 × 2 = 310,378,496; logits 152,064 × 8 = 1,216,512 → 311,595,008
    assert_eq!(plan.activation_bytes, 311_595_008);
    // 15,231,233,024 + 1,879,048,192 + 311,595,008 + 1,073,741,824 = 18,495,618,048
    assert_eq!(plan.per_gpu_bytes, 18_495_618_048);
    // usable 23,034 MiB = 24,152,899,584; headroom 5,657,281,536
    assert_eq!(plan.headroom_bytes, 5_657_281_536);
}

#[test]
fn mixtral_8x7b_fp8_on_two_h100s() {
    let mut request = request("Mixtral-8x7B", WeightFormat::Fp8, "nvidia-h100-80gb");
    request.max_context_tokens = 32_768;
    request.max_batch_size = 8;
    request.tensor_parallel = 2;
    request.gpu_memory_bytes = lookup_gpu("nvidia-h100-80gb")
        .expect("known")
        .usable_memory_bytes();
    let plan = planned(&request);
    // whole: matrices 32 × (41,943,040 + 1,409,286,144) = 46,439,333,888 × 1 byte (fp8);
    //   embedding + lm_head 262,144,000 × 2 = 524,288,000 (kept 16-bit);
    //   routers + norms 32 × (32,768 + 8,192) + 4,096 = 1,314,816 × 2 = 2,629,632
    //   → 46,966,251,520
    assert_eq!(plan.weight_bytes, 46_966_251_520);
    // per GPU: q, o 2 × 4,096 × 16 × 128 = 16,777,216; k, v 2 × 4,096 × 4 × 128 = 4,194,304;
    //   experts 1,409,286,144 / 2 = 704,643,072 → 725,614,592 × 32 = 23,219,666,944 bytes;
    //   vocabulary 16,000 rows × 4,096 × 2 matrices × 2 bytes = 262,144,000; routers and norms
    //   replicated 2,629,632 → 23,484,440,576
    assert_eq!(plan.weight_bytes_per_gpu, 23_484_440_576);
    // KV per GPU 2 × 32 × 4 × 128 × 2 = 65,536 per token × 32,768 × 8 = 17,179,869,184
    assert_eq!(plan.kv_cache_bytes_per_gpu, 17_179_869_184);
    // activations: width 16,384 + (16 + 8) × 128 + 3 × 2 experts × 7,168 = 62,464;
    //   2,048 × 62,464 × 2 = 255,852,544; logits 8 × 32,000 × 8 = 2,048,000 → 257,900,544
    assert_eq!(plan.activation_bytes, 257_900_544);
    // 23,484,440,576 + 17,179,869,184 + 257,900,544 + 1,610,612,736 = 42,532,823,040;
    // usable 81,559 MiB = 85,520,809,984 → headroom 42,987,986,944
    assert_eq!(plan.per_gpu_bytes, 42_532_823_040);
    assert_eq!(plan.headroom_bytes, 42_987_986_944);
}

#[test]
fn quantized_weights_keep_embeddings_at_their_own_width() {
    // Llama-3.1-8B block matrices: 32 × 218,103,808 = 6,979,321,856 weights;
    // embedding + lm_head 1,050,673,152; norms 32 × 8,192 + 4,096 = 266,240.
    let awq = planned(&request("Llama-3.1-8B", WeightFormat::Int4, "nvidia-l4-24gb"));
    // AWQ: 6,979,321,856 / 128 = 54,525,952 groups × 68 = 3,707,764,736; embeddings 16-bit
    //   2,101,346,304; norms 532,480 → 5,809,643,520 (published AWQ checkpoints: about 5.7 GB)
    assert_eq!(awq.weight_bytes, 5_809_643_520);
    let gguf = planned(&request("Llama-3.1-8B", WeightFormat::Q4_K_M, "nvidia-l4-24gb"));
    // Q4_K_M as Q4_K: 6,979,321,856 / 256 = 27,262,976 × 144 = 3,925,868,544; embeddings also
    //   Q4_K 4,104,192 × 144 = 591,003,648; norms F32 266,240 × 4 = 1,064,960 → 4,517,937,152
    assert_eq!(gguf.weight_bytes, 4_517_937_152);
}

#[test]
fn fewer_kv_heads_than_gpus_are_replicated() {
    // Qwen2.5-1.5B has 12 query heads and 2 KV heads; with tensor 4 each GPU holds 3 query heads
    // and one (replicated) KV head.
    let mut request = request("Qwen2.5-1.5B", WeightFormat::BF16, "nvidia-l4-24gb");
    request.max_context_tokens = 4096;
    request.max_batch_size = 4;
    request.tensor_parallel = 4;
    let plan = planned(&request);
    // whole KV per token 2 × 28 × 2 × 128 × 2 = 28,672; × 16,384 tokens = 469,762,048;
    // per GPU 2 × 28 × 1 × 128 × 2 = 14,336 per token: half the whole, not a quarter
    assert_eq!(plan.kv_cache_bytes, 469_762_048);
    assert_eq!(plan.kv_cache_bytes_per_gpu, 234_881_024);
    // per layer: q, o 2 × 1,536 × 384 = 1,179,648; k, v 2 × 1,536 × 128 = 393,216;
    //   MLP 3 × 1,536 × 8,960 / 4 = 10,321,920; biases 384 + 2 × 128 = 640; norms 3,072
    //   → 11,898,496 × 28 = 333,157,888; tied vocabulary 37,984 rows × 1,536 = 58,343,424;
    //   final norm 1,536 → 391,502,848 × 2 = 783,005,696
    assert_eq!(plan.weight_bytes_per_gpu, 783_005_696);
}

#[test]
fn invalid_requests_name_the_field_and_limit() {
    let base = request("Llama-3.1-8B", WeightFormat::BF16, "nvidia-h100-80gb");
    let cases = [
        (
            PlanRequest {
                max_batch_size: 0,
                ..base.clone()
            },
            PlanError::Zero {
                field: "engine.maxBatchSize",
            },
        ),
        (
            PlanRequest {
                max_context_tokens: 0,
                ..base.clone()
            },
            PlanError::Zero {
                field: "engine.maxContextTokens",
            },
        ),
        (
            PlanRequest {
                tensor_parallel: 0,
                ..base.clone()
            },
            PlanError::Zero {
                field: "parallelism.tensor",
            },
        ),
        (
            PlanRequest {
                tensor_parallel: 3,
                ..base.clone()
            },
            PlanError::TensorParallelHeads {
                tensor_parallel: 3,
                attention_heads: 32,
            },
        ),
        (
            PlanRequest {
                pipeline_parallel: 33,
                ..base.clone()
            },
            PlanError::PipelineExceedsLayers {
                pipeline_parallel: 33,
                layers: 32,
            },
        ),
        (
            PlanRequest {
                max_context_tokens: u64::MAX,
                ..base.clone()
            },
            PlanError::Overflow {
                quantity: "kv_cache_bytes",
            },
        ),
    ];
    for (request, expected) in cases {
        assert_eq!(plan(&request), Err(expected));
    }
    // Phi-3-medium: 40 heads split by 4, but 10 KV heads neither split by 4 nor divide it.
    let phi = PlanRequest {
        tensor_parallel: 4,
        ..request("Phi-3-medium", WeightFormat::BF16, "nvidia-l4-24gb")
    };
    let error = plan(&phi).expect_err("10 KV heads over 4 GPUs");
    assert_eq!(
        error.to_string(),
        "`parallelism.tensor` (4) must divide the model's `num_key_value_heads` (10) or, when larger, \
         be a multiple of it"
    );
    assert_eq!(error.category(), "tensor_parallel_kv_heads");
}

#[test]
fn format_gib_rounds_to_one_decimal() {
    assert_eq!(format_gib(0), "0.0");
    assert_eq!(format_gib(16_060_522_496), "15.0"); // 14.957 GiB
    assert_eq!(format_gib(1_610_612_736), "1.5");
    assert_eq!(format_gib(53_687_091), "0.0"); // just under 0.05 GiB
    assert_eq!(format_gib(53_687_092), "0.1"); // just over
    assert_eq!(format_gib(85_899_345_920), "80.0");
    assert_eq!(format_gib(u64::MAX), "17179869184.0");
}
