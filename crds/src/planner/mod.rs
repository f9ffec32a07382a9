//! Temporary until the planner lands.
pub struct GpuType { pub name: &'static str, pub memory_gib: u64, pub product: &'static str }
pub fn gpu_catalog() -> &'static [GpuType] { &[] }
pub fn lookup_gpu(name: &str) -> Option<&'static GpuType> { gpu_catalog().iter().find(|g| g.name == name) }
