//! What the fuzz targets share: cutting one input into the parts a target needs, and small
//! tokenizers built in memory so no target needs a model file.

pub mod input;
pub mod vocab;
