//! `GET /v1/models` response body.

use serde::{Deserialize, Serialize};

/// The list of served models.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelList {
    /// Always `list`.
    pub object: String,
    /// The models (one per engine).
    pub data: Vec<ModelCard>,
}

/// One served model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelCard {
    /// The id clients send as `model`.
    pub id: String,
    /// Always `model`.
    pub object: String,
    /// Unix seconds when the server started.
    pub created: u64,
    /// Always `hearth`.
    pub owned_by: String,
    /// Longest sequence accepted (vLLM's field).
    pub max_model_len: usize,
}
