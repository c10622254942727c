//! CPUID for a vCPU: what `KVM_GET_SUPPORTED_CPUID` offers, normalised for the guest's
//! topology, and trimmed of what the host cannot run.
//!
//! Like Firecracker (`cpu_config/x86_64/cpuid/normalize.rs`) the
//! supported set is adjusted per vCPU:
//! - leaf 1: initial APIC id = vCPU index, logical processor count, CLFLUSH size, HTT when
//!   there is more than one vCPU, and the hypervisor bit;
//! - topology ([`topology`]): Intel leaves 4, 0xB and 0x1F, AMD leaves 0x8000_0008 and
//!   0x8000_001E, describing `vcpu_count` vCPUs in one package, two threads per core with SMT;
//! - on a `kvm_pvm` host ([`host_is_kvm_pvm`]), the features its instruction emulator cannot
//!   execute in the guest kernel are hidden ([`pvm`]): XSAVE (and leaf 0xD), AVX and
//!   everything built on it, POPCNT, SMAP and FSGSBASE (see the guest-kit README). On the
//!   `kvm_pvm` measured here the guest still reads the host's native feature bits, so the
//!   VMM must also pass [`pvm::PVM_GUEST_KERNEL_ARGS`] (see [`pvm`] for the evidence).
//!
//! Only leaves already present are changed; none are added. The brand string is kept.

pub mod pvm;
pub mod topology;

use std::path::Path;

use kvm_bindings::{kvm_cpuid_entry2, CpuId, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Kvm, VcpuFd};

/// The sysfs directory that exists when `/dev/kvm` comes from the `kvm_pvm` module.
pub const KVM_PVM_SYSFS: &str = "/sys/module/kvm_pvm";

/// Leaf 1 EBX: CLFLUSH line size in 8-byte units (64 bytes).
const CLFLUSH_LINE_SIZE: u32 = 8;
/// Leaf 1 ECX: running under a hypervisor.
const LEAF1_ECX_HYPERVISOR: u32 = 1 << 31;
/// Leaf 1 EDX: more than one logical processor per package.
const LEAF1_EDX_HTT: u32 = 1 << 28;

/// The guest topology and the host quirks CPUID is normalised for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuidConfig {
    /// Index of this vCPU, which is also its APIC id.
    pub vcpu_index: u8,
    /// Number of vCPUs in the guest.
    pub vcpu_count: u8,
    /// Two threads per core (hyper-threading) instead of one.
    pub smt: bool,
    /// Hide the features a `kvm_pvm` host cannot execute in the guest kernel.
    pub hide_pvm_unsupported: bool,
}

/// Errors normalising or setting CPUID.
#[derive(Debug, thiserror::Error)]
pub enum CpuidError {
    /// Zero vCPUs.
    #[error("CPUID needs at least one vCPU")]
    NoCpus,
    /// The vCPU index is not below the vCPU count.
    #[error("vCPU index {vcpu_index} is out of range for {vcpu_count} vCPUs")]
    IndexOutOfRange {
        /// The index given.
        vcpu_index: u8,
        /// The vCPU count.
        vcpu_count: u8,
    },
    /// A KVM ioctl failed.
    #[error("KVM_{ioctl} failed")]
    Ioctl {
        /// Which ioctl (without the `KVM_` prefix).
        ioctl: &'static str,
        /// What KVM said.
        #[source]
        source: kvm_ioctls::Error,
    },
}

/// The CPU vendor, which decides the topology leaves used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vendor {
    /// "GenuineIntel".
    Intel,
    /// "AuthenticAMD" (or "HygonGenuine", which uses AMD's leaves).
    Amd,
    /// Anything else: only the vendor-neutral leaves are touched.
    Other,
}

/// Whether `/dev/kvm` is provided by the `kvm_pvm` module.
pub fn host_is_kvm_pvm() -> bool {
    Path::new(KVM_PVM_SYSFS).exists()
}

/// Normalises `cpuid` (as returned by `KVM_GET_SUPPORTED_CPUID`) for the vCPU in `cfg`.
pub fn normalize_cpuid(cpuid: &mut CpuId, cfg: &CpuidConfig) -> Result<(), CpuidError> {
    if cfg.vcpu_count == 0 {
        return Err(CpuidError::NoCpus);
    }
    if cfg.vcpu_index >= cfg.vcpu_count {
        return Err(CpuidError::IndexOutOfRange {
            vcpu_index: cfg.vcpu_index,
            vcpu_count: cfg.vcpu_count,
        });
    }
    let entries = cpuid.as_mut_slice();
    let vendor = vendor(entries);
    for entry in entries.iter_mut() {
        if entry.function == 1 {
            normalize_leaf1(entry, cfg);
        }
        topology::normalize(entry, vendor, cfg);
        if cfg.hide_pvm_unsupported {
            pvm::hide_unsupported(entry);
        }
    }
    Ok(())
}

/// Reads the host's supported CPUID, normalises it for `cfg` and sets it on `vcpu`.
pub fn setup_cpuid(kvm: &Kvm, vcpu: &VcpuFd, cfg: &CpuidConfig) -> Result<(), CpuidError> {
    let mut cpuid = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(|source| CpuidError::Ioctl {
            ioctl: "GET_SUPPORTED_CPUID",
            source,
        })?;
    normalize_cpuid(&mut cpuid, cfg)?;
    vcpu.set_cpuid2(&cpuid).map_err(|source| CpuidError::Ioctl {
        ioctl: "SET_CPUID2",
        source,
    })
}

/// The vendor named by leaf 0 (EBX, EDX, ECX spell it).
pub fn vendor(entries: &[kvm_cpuid_entry2]) -> Vendor {
    let Some(leaf0) = entries.iter().find(|e| e.function == 0) else {
        return Vendor::Other;
    };
    let mut name = [0u8; 12];
    name[0..4].copy_from_slice(&leaf0.ebx.to_le_bytes());
    name[4..8].copy_from_slice(&leaf0.edx.to_le_bytes());
    name[8..12].copy_from_slice(&leaf0.ecx.to_le_bytes());
    match &name {
        b"GenuineIntel" => Vendor::Intel,
        b"AuthenticAMD" | b"HygonGenuine" => Vendor::Amd,
        _ => Vendor::Other,
    }
}

/// Leaf 1: APIC id, logical count, CLFLUSH size, HTT and the hypervisor bit.
fn normalize_leaf1(entry: &mut kvm_cpuid_entry2, cfg: &CpuidConfig) {
    entry.ebx = (entry.ebx & 0x0000_00ff)
        | (u32::from(cfg.vcpu_index) << 24)
        | (u32::from(cfg.vcpu_count) << 16)
        | (CLFLUSH_LINE_SIZE << 8);
    entry.ecx |= LEAF1_ECX_HYPERVISOR;
    if cfg.vcpu_count > 1 {
        entry.edx |= LEAF1_EDX_HTT;
    } else {
        entry.edx &= !LEAF1_EDX_HTT;
    }
}

#[cfg(test)]
mod tests;
