//! The pure validation step: spec rules plus the VRAM plan that decides `Fits`.

use hearth_crds::InferenceModel;
use hearth_crds::planner::{self, MemoryPlan, PlanRequest, WeightFormat};
use hearth_crds::validation::{SpecError, validate_inference_model};

/// What the memory planner concluded.
#[derive(Debug, Clone, PartialEq)]
pub enum Fit {
    /// No GPU requested: the model runs on CPU and there is no VRAM to plan.
    NoGpu,
    /// The architecture is not in the catalog, so no plan could be made; the model is deployed.
    Unknown,
    /// The plan, and whether it fits one GPU of the requested type.
    Planned {
        /// Catalog name of the architecture the plan used.
        architecture: String,
        /// The GPU type name.
        gpu_type: String,
        /// The computed plan.
        plan: MemoryPlan,
    },
}

impl Fit {
    /// False only when a plan exists and exceeds the GPU.
    pub fn allows_deployment(&self) -> bool {
        !matches!(self, Self::Planned { plan, .. } if !plan.fits)
    }
}

/// A model that passed validation.
#[derive(Debug, Clone, PartialEq)]
pub struct Validated {
    /// The memory plan outcome.
    pub fit: Fit,
}

/// Validates the spec and plans its memory; errors name the field and the limit.
pub fn validate(model: &InferenceModel) -> Result<Validated, Vec<SpecError>> {
    let errors = validate_inference_model(&model.spec);
    if !errors.is_empty() {
        return Err(errors);
    }
    let spec = &model.spec;
    let Some(gpu) = &spec.gpu else {
        return Ok(Validated { fit: Fit::NoGpu });
    };
    let Some(architecture) = planner::lookup_model(&spec.source.uri) else {
        return Ok(Validated { fit: Fit::Unknown });
    };
    // An explicit memoryGiB wins; otherwise what the driver reports as usable for the type.
    let gpu_memory_bytes = gpu
        .memory_gib
        .map(|gib| u64::from(gib) << 30)
        .or_else(|| planner::lookup_gpu(&gpu.type_).map(|g| g.usable_memory_bytes()))
        .unwrap_or_default();
    let weights = WeightFormat::from_spec(Some(&spec.engine.dtype), spec.engine.quantization.as_deref())
        .map_err(|e| {
            vec![SpecError {
                field: "engine".into(),
                message: e.to_string(),
            }]
        })?;
    let request = PlanRequest {
        architecture: architecture.clone(),
        weights,
        kv_cache_bytes_per_element: 2,
        max_context_tokens: u64::from(spec.engine.max_context_tokens),
        max_batch_size: u64::from(spec.engine.max_batch_size),
        tensor_parallel: u64::from(spec.parallelism.tensor),
        pipeline_parallel: u64::from(spec.parallelism.pipeline),
        gpu_memory_bytes,
    };
    // Plan errors name the CR field themselves (e.g. parallelism.tensor vs the head count).
    let plan = planner::plan(&request).map_err(|e| {
        vec![SpecError {
            field: "parallelism".into(),
            message: e.to_string(),
        }]
    })?;
    Ok(Validated {
        fit: Fit::Planned {
            architecture: architecture.name,
            gpu_type: gpu.type_.clone(),
            plan,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::build::fixtures::{parse, representative};

    #[test]
    fn representative_model_fits() {
        let validated = validate(&representative()).expect("valid");
        let Fit::Planned {
            plan, architecture, ..
        } = validated.fit
        else {
            panic!("expected a plan")
        };
        assert!(architecture.contains("8B"), "{architecture}");
        assert!(plan.fits, "{plan:?}");
    }

    #[test]
    fn seventy_b_in_bf16_does_not_fit_one_h100() {
        let model = parse(
            "metadata: {name: big, namespace: n, uid: u}\nspec: {servedName: big, source: {uri: 'hf://meta-llama/Llama-3.1-70B-Instruct'}, engine: {dtype: bfloat16}, gpu: {type: nvidia-h100-80gb}}\n",
        );
        let validated = validate(&model).expect("valid spec");
        assert!(!validated.fit.allows_deployment());
    }

    #[test]
    fn unknown_architecture_is_deployed_without_a_plan() {
        let model = parse(
            "metadata: {name: x, namespace: n}\nspec: {servedName: x, source: {uri: 'hf://acme/secret-model'}, gpu: {type: nvidia-l4-24gb}}\n",
        );
        assert_eq!(validate(&model).expect("valid").fit, Fit::Unknown);
    }
}
