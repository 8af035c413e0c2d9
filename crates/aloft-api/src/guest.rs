//! Machine guests (CPU kind, CPUs, memory), the VM size presets of `fly platform vm-sizes`
//! and the client-side guest validation of `fly scale vm|memory` (flyctl-behaviour §4.3, §6.2).

use serde::{Deserialize, Serialize};

/// A machine's resources. Field names follow the Machines API JSON.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Guest {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cpu_kind: String,
    #[serde(default)]
    pub cpus: u32,
    #[serde(default)]
    pub memory_mb: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory_mb: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_dedication_id: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kernel_args: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persist_rootfs: Option<String>,
}

/// A named VM size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmPreset {
    pub name: &'static str,
    pub cpu_kind: &'static str,
    pub cpus: u32,
    pub memory_mb: u32,
    /// GPU presets are still accepted but not listed by `platform vm-sizes`.
    pub hidden: bool,
    pub gpu_kind: Option<&'static str>,
}

const fn preset(name: &'static str, cpu_kind: &'static str, cpus: u32, memory_mb: u32) -> VmPreset {
    VmPreset {
        name,
        cpu_kind,
        cpus,
        memory_mb,
        hidden: false,
        gpu_kind: None,
    }
}

const fn gpu(name: &'static str, gpu_kind: &'static str) -> VmPreset {
    VmPreset {
        name,
        cpu_kind: "performance",
        cpus: 8,
        memory_mb: 32768,
        hidden: true,
        gpu_kind: Some(gpu_kind),
    }
}

/// Every preset, in the order `platform vm-sizes` shows them (by cpus, then memory; shared first).
pub const VM_PRESETS: &[VmPreset] = &[
    preset("shared-cpu-1x", "shared", 1, 256),
    preset("shared-cpu-2x", "shared", 2, 512),
    preset("shared-cpu-4x", "shared", 4, 1024),
    preset("shared-cpu-6x", "shared", 6, 1536),
    preset("shared-cpu-8x", "shared", 8, 2048),
    preset("performance-1x", "performance", 1, 2048),
    preset("performance-2x", "performance", 2, 4096),
    preset("performance-4x", "performance", 4, 8192),
    preset("performance-6x", "performance", 6, 12288),
    preset("performance-8x", "performance", 8, 16384),
    preset("performance-10x", "performance", 10, 20480),
    preset("performance-12x", "performance", 12, 24576),
    preset("performance-14x", "performance", 14, 28672),
    preset("performance-16x", "performance", 16, 32768),
    gpu("a100-40gb", "a100-pcie-40gb"),
    gpu("a100-80gb", "a100-sxm4-80gb"),
    gpu("l40s", "l40s"),
    gpu("a10", "a10"),
];

pub const DEFAULT_VM_SIZE: &str = "shared-cpu-1x";
pub const DEFAULT_GPU_VM_SIZE: &str = "performance-8x";

impl VmPreset {
    pub fn by_name(name: &str) -> Option<&'static VmPreset> {
        VM_PRESETS.iter().find(|p| p.name == name)
    }

    pub fn guest(&self) -> Guest {
        Guest {
            cpu_kind: self.cpu_kind.to_string(),
            cpus: self.cpus,
            memory_mb: self.memory_mb,
            gpus: self.gpu_kind.map(|_| 1),
            gpu_kind: self.gpu_kind.map(str::to_string),
            ..Guest::default()
        }
    }

    /// Names of the visible presets of the same family (`shared…` or `performance…`) as `name`,
    /// or all visible presets when the family is unknown: the hint for an unknown size.
    pub fn suggestions_for(name: &str) -> Vec<&'static str> {
        let family = if name.starts_with("shared") {
            Some("shared")
        } else if name.starts_with("perf") {
            Some("performance")
        } else {
            None
        };
        VM_PRESETS
            .iter()
            .filter(|p| !p.hidden && family.is_none_or(|f| p.cpu_kind == f))
            .map(|p| p.name)
            .collect()
    }
}

/// A guest refused by [`Guest::validate`], with the value a user could use instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuestError {
    #[error("invalid cpu_kind {0:?}: must be \"shared\" or \"performance\"")]
    CpuKind(String),
    #[error("{kind} VMs may have {allowed} CPUs, not {cpus}")]
    Cpus {
        kind: String,
        cpus: u32,
        allowed: String,
    },
    #[error("memory must be a multiple of {step} MB for {kind} VMs; try {suggestion} MB")]
    MemoryStep {
        kind: String,
        step: u32,
        suggestion: u32,
    },
    #[error("{memory_mb} MB is below the minimum of {min} MB for {cpus} {kind} CPU(s); try {min} MB or fewer CPUs")]
    MemoryTooLow {
        kind: String,
        cpus: u32,
        memory_mb: u32,
        min: u32,
    },
    #[error("{memory_mb} MB is above the maximum of {max} MB for {cpus} {kind} CPU(s); try {max} MB or more CPUs")]
    MemoryTooHigh {
        kind: String,
        cpus: u32,
        memory_mb: u32,
        max: u32,
    },
}

const SHARED_CPUS: &[u32] = &[1, 2, 4, 6, 8];
const PERFORMANCE_CPUS: &[u32] = &[1, 2, 4, 6, 8, 10, 12, 14, 16, 32, 64, 128];

impl Guest {
    /// The guest of a preset, or `None` for an unknown name.
    pub fn from_preset(name: &str) -> Option<Guest> {
        VmPreset::by_name(name).map(VmPreset::guest)
    }

    /// The preset name this guest corresponds to: `shared-cpu-<n>x` / `performance-<n>x`.
    pub fn size_name(&self) -> String {
        if let Some(kind) = &self.gpu_kind {
            if let Some(p) = VM_PRESETS
                .iter()
                .find(|p| p.gpu_kind == Some(kind.as_str()))
            {
                return p.name.to_string();
            }
        }
        match self.cpu_kind.as_str() {
            "performance" => format!("performance-{}x", self.cpus),
            _ => format!("shared-cpu-{}x", self.cpus.max(1)),
        }
    }

    /// Validation of flyctl §4.3: CPU counts per kind, memory step and per-CPU bounds.
    pub fn validate(&self) -> Result<(), GuestError> {
        let (cpus_allowed, step, min_per_cpu, max_per_cpu) = match self.cpu_kind.as_str() {
            "shared" | "" => (SHARED_CPUS, 256, 256, 2048),
            "performance" => (PERFORMANCE_CPUS, 1024, 2048, 8192),
            other => return Err(GuestError::CpuKind(other.to_string())),
        };
        let kind = if self.cpu_kind.is_empty() {
            "shared".to_string()
        } else {
            self.cpu_kind.clone()
        };
        if !cpus_allowed.contains(&self.cpus) {
            let allowed = cpus_allowed
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            return Err(GuestError::Cpus {
                kind,
                cpus: self.cpus,
                allowed,
            });
        }
        let (min, max) = (min_per_cpu * self.cpus, max_per_cpu * self.cpus);
        if self.memory_mb < min {
            return Err(GuestError::MemoryTooLow {
                kind,
                cpus: self.cpus,
                memory_mb: self.memory_mb,
                min,
            });
        }
        if self.memory_mb > max {
            return Err(GuestError::MemoryTooHigh {
                kind,
                cpus: self.cpus,
                memory_mb: self.memory_mb,
                max,
            });
        }
        if !self.memory_mb.is_multiple_of(step) {
            let suggestion = (self.memory_mb / step * step).max(min);
            return Err(GuestError::MemoryStep {
                kind,
                step,
                suggestion,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_follow_the_memory_rule() {
        for p in VM_PRESETS.iter().filter(|p| !p.hidden) {
            let per_cpu = if p.cpu_kind == "shared" { 256 } else { 2048 };
            assert_eq!(p.memory_mb, p.cpus * per_cpu, "{}", p.name);
            assert_eq!(p.guest().validate(), Ok(()), "{}", p.name);
            assert_eq!(p.guest().size_name(), p.name);
        }
    }

    #[test]
    fn validation_bounds() {
        let g = |kind: &str, cpus, memory_mb| Guest {
            cpu_kind: kind.into(),
            cpus,
            memory_mb,
            ..Guest::default()
        };
        assert!(g("shared", 1, 2048).validate().is_ok());
        assert!(matches!(
            g("shared", 1, 4096).validate(),
            Err(GuestError::MemoryTooHigh { max: 2048, .. })
        ));
        assert!(matches!(
            g("shared", 2, 256).validate(),
            Err(GuestError::MemoryTooLow { min: 512, .. })
        ));
        assert!(matches!(
            g("shared", 1, 300).validate(),
            Err(GuestError::MemoryStep {
                suggestion: 256,
                ..
            })
        ));
        assert!(matches!(
            g("shared", 3, 768).validate(),
            Err(GuestError::Cpus { .. })
        ));
        assert!(g("performance", 2, 4096).validate().is_ok());
        assert!(matches!(
            g("performance", 2, 4608).validate(),
            Err(GuestError::MemoryStep {
                suggestion: 4096,
                ..
            })
        ));
        assert!(matches!(
            g("gpu", 1, 256).validate(),
            Err(GuestError::CpuKind(_))
        ));
    }

    #[test]
    fn suggestions_stay_in_family() {
        let s = VmPreset::suggestions_for("shared-cpu-3x");
        assert!(s.iter().all(|n| n.starts_with("shared")));
        assert_eq!(s.len(), 5);
        assert_eq!(VmPreset::suggestions_for("huge").len(), 14);
    }
}
