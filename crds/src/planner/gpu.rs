//! The GPU types an `InferenceModel`'s `gpu.type` may name.

use serde::Serialize;

/// Bytes in one GiB.
const GIB: u64 = 1 << 30;
/// Bytes in one MiB.
const MIB: u64 = 1 << 20;

/// A GPU model the planner knows the memory of and the scheduler knows the node label of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct GpuType {
    /// The name used in CRs' `gpu.type`, e.g. `nvidia-h100-80gb`.
    pub name: &'static str,
    /// Nominal memory in GiB, as in the product name.
    pub memory_gib: u64,
    /// The `nvidia.com/gpu.product` label NVIDIA GPU feature discovery puts on nodes: the NVML
    /// device name with spaces as dashes, e.g. `NVIDIA-H100-80GB-HBM3`.
    pub product: &'static str,
    /// Product labels of other board variants with the same memory (PCIe against SXM, NVL), so
    /// node affinity can accept any of them.
    pub other_products: &'static [&'static str],
    /// Total memory in MiB as `nvidia-smi` and GFD's `nvidia.com/gpu.memory` report it: a little
    /// under nominal, because the driver reserves some (and ECC, on GDDR boards, more).
    pub usable_memory_mib: u64,
}

impl GpuType {
    /// Nominal memory in bytes (`memory_gib` GiB).
    pub fn memory_bytes(&self) -> u64 {
        self.memory_gib * GIB
    }

    /// Memory a process can actually see, in bytes; what a memory plan should be checked against.
    pub fn usable_memory_bytes(&self) -> u64 {
        self.usable_memory_mib * MIB
    }

    /// Every product label this type matches: `product` first, then `other_products`.
    pub fn products(&self) -> impl Iterator<Item = &'static str> + use<> {
        std::iter::once(self.product).chain(self.other_products.iter().copied())
    }
}

/// The built-in GPU types.
static GPU_CATALOG: &[GpuType] = &[
    GpuType {
        name: "nvidia-t4-16gb",
        memory_gib: 16,
        product: "Tesla-T4",
        other_products: &[],
        usable_memory_mib: 15_360,
    },
    GpuType {
        name: "nvidia-l4-24gb",
        memory_gib: 24,
        product: "NVIDIA-L4",
        other_products: &[],
        usable_memory_mib: 23_034,
    },
    GpuType {
        name: "nvidia-a10g-24gb",
        memory_gib: 24,
        product: "NVIDIA-A10G",
        other_products: &[],
        usable_memory_mib: 23_028,
    },
    GpuType {
        name: "nvidia-rtx-4090-24gb",
        memory_gib: 24,
        product: "NVIDIA-GeForce-RTX-4090",
        other_products: &[],
        usable_memory_mib: 24_564,
    },
    GpuType {
        name: "nvidia-a100-40gb",
        memory_gib: 40,
        product: "NVIDIA-A100-SXM4-40GB",
        other_products: &["NVIDIA-A100-PCIE-40GB"],
        usable_memory_mib: 40_960,
    },
    GpuType {
        name: "nvidia-l40s-48gb",
        memory_gib: 48,
        product: "NVIDIA-L40S",
        other_products: &[],
        usable_memory_mib: 46_068,
    },
    GpuType {
        name: "nvidia-a100-80gb",
        memory_gib: 80,
        product: "NVIDIA-A100-SXM4-80GB",
        other_products: &["NVIDIA-A100-80GB-PCIe"],
        usable_memory_mib: 81_920,
    },
    GpuType {
        name: "nvidia-h100-80gb",
        memory_gib: 80,
        product: "NVIDIA-H100-80GB-HBM3",
        other_products: &["NVIDIA-H100-PCIe"],
        usable_memory_mib: 81_559,
    },
    GpuType {
        name: "nvidia-h100-nvl-94gb",
        memory_gib: 94,
        product: "NVIDIA-H100-NVL",
        other_products: &[],
        usable_memory_mib: 95_830,
    },
    GpuType {
        name: "nvidia-h200-141gb",
        memory_gib: 141,
        product: "NVIDIA-H200",
        other_products: &["NVIDIA-H200-NVL"],
        usable_memory_mib: 143_771,
    },
    GpuType {
        name: "nvidia-b200-180gb",
        memory_gib: 180,
        product: "NVIDIA-B200",
        other_products: &[],
        usable_memory_mib: 183_359,
    },
];

/// Every built-in GPU type, smallest memory first.
pub fn gpu_catalog() -> &'static [GpuType] {
    GPU_CATALOG
}

/// The GPU type a CR's `gpu.type` names, compared case-insensitively; a GFD product label
/// (`NVIDIA-A100-SXM4-80GB`) is accepted too.
pub fn lookup_gpu(name: &str) -> Option<&'static GpuType> {
    let name = name.trim();
    GPU_CATALOG
        .iter()
        .find(|gpu| gpu.name.eq_ignore_ascii_case(name))
        .or_else(|| {
            GPU_CATALOG
                .iter()
                .find(|gpu| gpu.products().any(|product| product.eq_ignore_ascii_case(name)))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalog_covers_the_common_data_center_gpus() {
        let names: Vec<&str> = gpu_catalog().iter().map(|gpu| gpu.name).collect();
        for expected in [
            "nvidia-t4-16gb",
            "nvidia-l4-24gb",
            "nvidia-a10g-24gb",
            "nvidia-l40s-48gb",
            "nvidia-a100-40gb",
            "nvidia-a100-80gb",
            "nvidia-h100-80gb",
            "nvidia-h100-nvl-94gb",
            "nvidia-h200-141gb",
            "nvidia-b200-180gb",
            "nvidia-rtx-4090-24gb",
        ] {
            assert!(names.contains(&expected), "{expected}");
        }
    }

    #[test]
    fn names_are_unique_sorted_by_memory_and_usable_memory_is_near_nominal() {
        let catalog = gpu_catalog();
        for (index, gpu) in catalog.iter().enumerate() {
            assert!(
                catalog[..index].iter().all(|other| other.name != gpu.name),
                "{}",
                gpu.name
            );
            assert!(
                catalog[..index]
                    .iter()
                    .all(|other| other.memory_gib <= gpu.memory_gib)
            );
            assert!(
                gpu.name.ends_with(&format!("-{}gb", gpu.memory_gib)),
                "{}",
                gpu.name
            );
            // Within 7% of nominal: ECC reserve on GDDR boards, HBM stacks a little over.
            let (usable, nominal) = (gpu.usable_memory_bytes() as f64, gpu.memory_bytes() as f64);
            assert!((usable / nominal - 1.0).abs() < 0.07, "{}", gpu.name);
        }
    }

    #[test]
    fn lookup_by_name_or_product_label() {
        let h100 = lookup_gpu("nvidia-h100-80gb").expect("known");
        assert_eq!((h100.product, h100.memory_gib), ("NVIDIA-H100-80GB-HBM3", 80));
        assert_eq!(h100.memory_bytes(), 85_899_345_920);
        assert_eq!(h100.usable_memory_bytes(), 81_559 * 1_048_576);
        assert_eq!(
            lookup_gpu("NVIDIA-A100-80GB").map(|gpu| gpu.name),
            Some("nvidia-a100-80gb")
        );
        assert_eq!(lookup_gpu("Tesla-T4").map(|gpu| gpu.name), Some("nvidia-t4-16gb"));
        assert_eq!(
            lookup_gpu("NVIDIA-A100-80GB-PCIe").map(|gpu| gpu.name),
            Some("nvidia-a100-80gb")
        );
        let products: Vec<&str> = lookup_gpu("nvidia-a100-40gb")
            .expect("known")
            .products()
            .collect();
        assert_eq!(products, ["NVIDIA-A100-SXM4-40GB", "NVIDIA-A100-PCIE-40GB"]);
        assert_eq!(lookup_gpu("nvidia-h100"), None);
        assert_eq!(lookup_gpu("amd-mi300x-192gb"), None);
    }
}
