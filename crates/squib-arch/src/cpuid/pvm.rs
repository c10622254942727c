//! Hiding what a `kvm_pvm` host cannot run in the guest kernel.
//!
//! `kvm_pvm` emulates guest CPL0 code, and its emulator fails on `xrstor`/`xsave`, `popcnt`
//! and `clac`/`stac` (guest-kit README); guest programs lose their FS base when the kernel
//! uses FSGSBASE. The guest kernel only uses these when CPUID advertises them, so clearing
//! the bits here is the CPUID form of `noxsave clearcpuid=popcnt,smap nofsgsbase`:
//! - leaf 1 ECX: XSAVE, OSXSAVE, POPCNT, and AVX with the features that need its state
//!   (FMA, F16C);
//! - leaf 7 subleaf 0: FSGSBASE, SMAP, AVX2, AVX-512 (all), VAES, VPCLMULQDQ and AMX;
//!   subleaf 1: AVX-VNNI, AVX512-BF16 and the other AVX-state features;
//! - leaf 0xD (XSAVE state components): all zero;
//! - AMD leaf 0x8000_0001 ECX: XOP and FMA4 (AVX-state instructions).
//!
//! Caveat measured on this machine's `kvm_pvm` (2 vCPU AMD EPYC): `KVM_GET_SUPPORTED_CPUID`
//! already lacks XSAVE and POPCNT, yet after `KVM_SET_CPUID2` the vCPU's `KVM_GET_CPUID2`
//! shows the host's native leaf 1 ECX/EDX and leaf 7 again (only EBX of leaf 1 keeps what
//! was set), and the guest-kit README saw a stock kernel execute `xrstor` and `popcnt` under
//! Firecracker, which sets the same trimmed CPUID. So on `kvm_pvm` hiding bits in CPUID is
//! not enough: the VMM should also append [`PVM_GUEST_KERNEL_ARGS`] to the command line.

use kvm_bindings::kvm_cpuid_entry2;

/// Kernel arguments that keep a guest kernel off what `kvm_pvm` cannot run (guest-kit
/// README), for a VMM to append when [`super::host_is_kvm_pvm`] is true.
pub const PVM_GUEST_KERNEL_ARGS: &str = "noxsave clearcpuid=popcnt,smap nofsgsbase";

/// Leaf 1 ECX bits cleared.
pub const LEAF1_ECX_HIDDEN: u32 = (1 << 12) // FMA
    | (1 << 23) // POPCNT
    | (1 << 26) // XSAVE
    | (1 << 27) // OSXSAVE
    | (1 << 28) // AVX
    | (1 << 29); // F16C

/// Leaf 7 subleaf 0 EBX bits cleared.
pub const LEAF7_EBX_HIDDEN: u32 = 1 // FSGSBASE
    | (1 << 5) // AVX2
    | (1 << 16) // AVX512F
    | (1 << 17) // AVX512DQ
    | (1 << 20) // SMAP
    | (1 << 21) // AVX512_IFMA
    | (1 << 26) // AVX512PF
    | (1 << 27) // AVX512ER
    | (1 << 28) // AVX512CD
    | (1 << 30) // AVX512BW
    | (1 << 31); // AVX512VL

/// Leaf 7 subleaf 0 ECX bits cleared.
pub const LEAF7_ECX_HIDDEN: u32 = (1 << 1) // AVX512_VBMI
    | (1 << 6) // AVX512_VBMI2
    | (1 << 9) // VAES
    | (1 << 10) // VPCLMULQDQ
    | (1 << 11) // AVX512_VNNI
    | (1 << 12) // AVX512_BITALG
    | (1 << 14); // AVX512_VPOPCNTDQ

/// Leaf 7 subleaf 0 EDX bits cleared.
pub const LEAF7_EDX_HIDDEN: u32 = (1 << 2) // AVX512_4VNNIW
    | (1 << 3) // AVX512_4FMAPS
    | (1 << 8) // AVX512_VP2INTERSECT
    | (1 << 22) // AMX_BF16
    | (1 << 23) // AVX512_FP16
    | (1 << 24) // AMX_TILE
    | (1 << 25); // AMX_INT8

/// Leaf 7 subleaf 1 EAX bits cleared.
pub const LEAF7_1_EAX_HIDDEN: u32 = (1 << 4) // AVX_VNNI
    | (1 << 5) // AVX512_BF16
    | (1 << 23); // AVX_IFMA

/// KVM's paravirtual feature leaf.
pub const KVM_CPUID_FEATURES: u32 = 0x4000_0001;

/// KVM paravirtual features whose hypercalls (`vmcall`/`vmmcall`) a `kvm_pvm` guest kernel
/// cannot make: with them, a 4-vCPU guest dies at boot in `kvm_send_ipi_mask` with a page
/// fault on the hypercall instruction itself (seen here; 1 and 2 vCPUs never send one).
pub const KVM_FEATURES_HIDDEN: u32 = (1 << 11) // KVM_FEATURE_PV_SEND_IPI
    | (1 << 13); // KVM_FEATURE_PV_SCHED_YIELD

/// Leaf 0x8000_0001 ECX bits cleared.
pub const EXT1_ECX_HIDDEN: u32 = (1 << 11) // XOP
    | (1 << 16); // FMA4

/// Clears in `entry` whatever the `kvm_pvm` host cannot execute.
pub fn hide_unsupported(entry: &mut kvm_cpuid_entry2) {
    match (entry.function, entry.index) {
        (0x1, _) => entry.ecx &= !LEAF1_ECX_HIDDEN,
        (0x7, 0) => {
            entry.ebx &= !LEAF7_EBX_HIDDEN;
            entry.ecx &= !LEAF7_ECX_HIDDEN;
            entry.edx &= !LEAF7_EDX_HIDDEN;
        }
        (0x7, 1) => entry.eax &= !LEAF7_1_EAX_HIDDEN,
        (0xd, _) => {
            entry.eax = 0;
            entry.ebx = 0;
            entry.ecx = 0;
            entry.edx = 0;
        }
        (0x8000_0001, _) => entry.ecx &= !EXT1_ECX_HIDDEN,
        (KVM_CPUID_FEATURES, _) => entry.eax &= !KVM_FEATURES_HIDDEN,
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            eax: u32::MAX,
            ebx: u32::MAX,
            ecx: u32::MAX,
            edx: u32::MAX,
            ..Default::default()
        }
    }

    #[test]
    fn leaf1_loses_xsave_avx_and_popcnt_only() {
        let mut e = leaf(1, 0);
        hide_unsupported(&mut e);
        for bit in [12, 23, 26, 27, 28, 29] {
            assert_eq!(e.ecx & (1 << bit), 0, "ecx bit {bit}");
        }
        assert_eq!(e.ecx.count_ones(), 26);
        assert_eq!((e.eax, e.ebx, e.edx), (u32::MAX, u32::MAX, u32::MAX));
    }

    #[test]
    fn kvm_leaf_loses_the_hypercall_features_only() {
        let mut e = leaf(KVM_CPUID_FEATURES, 0);
        hide_unsupported(&mut e);
        assert_eq!(e.eax & (1 << 11), 0, "PV_SEND_IPI");
        assert_eq!(e.eax & (1 << 13), 0, "PV_SCHED_YIELD");
        assert_eq!(e.eax.count_ones(), 30);
        assert_ne!(e.eax & (1 << 3), 0, "KVM_FEATURE_CLOCKSOURCE2 stays");
    }

    #[test]
    fn leaf7_loses_fsgsbase_smap_and_avx_families() {
        let mut e = leaf(7, 0);
        hide_unsupported(&mut e);
        assert_eq!(e.ebx & 1, 0, "FSGSBASE");
        assert_eq!(e.ebx & (1 << 20), 0, "SMAP");
        assert_eq!(e.ebx & (1 << 5), 0, "AVX2");
        assert_ne!(e.ebx & (1 << 7), 0, "SMEP stays");
        assert_ne!(e.ebx & (1 << 3), 0, "BMI1 stays");
        assert_eq!(e.edx & (1 << 24), 0, "AMX_TILE");
        let mut sub1 = leaf(7, 1);
        hide_unsupported(&mut sub1);
        assert_eq!(sub1.eax & (1 << 4), 0, "AVX_VNNI");
    }

    #[test]
    fn xsave_leaf_is_zeroed_in_every_subleaf() {
        for index in [0, 1, 2, 9] {
            let mut e = leaf(0xd, index);
            hide_unsupported(&mut e);
            assert_eq!((e.eax, e.ebx, e.ecx, e.edx), (0, 0, 0, 0));
        }
    }

    #[test]
    fn other_leaves_are_untouched() {
        for function in [0, 4, 0xb, 0x4000_0000, 0x8000_0008] {
            let mut e = leaf(function, 0);
            hide_unsupported(&mut e);
            assert_eq!(e, leaf(function, 0));
        }
    }
}
