//! Unit tests for CPUID normalisation on synthetic `KVM_GET_SUPPORTED_CPUID` data.

use super::*;

fn vendor_leaf(name: &[u8; 12]) -> kvm_cpuid_entry2 {
    let word = |i: usize| u32::from_le_bytes(name[i..i + 4].try_into().unwrap());
    kvm_cpuid_entry2 {
        function: 0,
        eax: 0x1f,
        ebx: word(0),
        edx: word(4),
        ecx: word(8),
        ..Default::default()
    }
}

fn entry(function: u32, index: u32, regs: [u32; 4]) -> kvm_cpuid_entry2 {
    kvm_cpuid_entry2 {
        function,
        index,
        eax: regs[0],
        ebx: regs[1],
        ecx: regs[2],
        edx: regs[3],
        ..Default::default()
    }
}

/// A host-like Intel CPUID: APIC id 5 and 16 logical CPUs in leaf 1, XSAVE/AVX/POPCNT on.
fn intel() -> CpuId {
    CpuId::from_entries(&[
        vendor_leaf(b"GenuineIntel"),
        entry(1, 0, [0x806c1, 0x0510_0800, 0x7ffa_fbff, 0xbfeb_fbff]),
        entry(7, 0, [0, 0x0019_07ab, 0, 0]),
        entry(0xb, 0, [1, 2, 0x100, 5]),
        entry(0xb, 1, [4, 16, 0x201, 5]),
        entry(0xd, 0, [0x7, 0x340, 0x340, 0]),
        entry(0xd, 1, [0xf, 0, 0, 0]),
    ])
    .unwrap()
}

fn get(cpuid: &CpuId, function: u32, index: u32) -> kvm_cpuid_entry2 {
    *cpuid
        .as_slice()
        .iter()
        .find(|e| e.function == function && e.index == index)
        .unwrap()
}

fn cfg(vcpu_index: u8, vcpu_count: u8, hide: bool) -> CpuidConfig {
    CpuidConfig {
        vcpu_index,
        vcpu_count,
        smt: false,
        hide_pvm_unsupported: hide,
    }
}

#[test]
fn vendor_is_read_from_leaf_0() {
    assert_eq!(vendor(intel().as_slice()), Vendor::Intel);
    assert_eq!(vendor(&[vendor_leaf(b"AuthenticAMD")]), Vendor::Amd);
    assert_eq!(vendor(&[vendor_leaf(b"HygonGenuine")]), Vendor::Amd);
    assert_eq!(vendor(&[vendor_leaf(b"VIA VIA VIA ")]), Vendor::Other);
    assert_eq!(vendor(&[]), Vendor::Other);
}

#[test]
fn leaf1_carries_this_vcpus_apic_id_and_the_vcpu_count() {
    let mut cpuid = intel();
    normalize_cpuid(&mut cpuid, &cfg(1, 2, false)).unwrap();
    let l1 = get(&cpuid, 1, 0);
    assert_eq!(l1.ebx >> 24, 1);
    assert_eq!((l1.ebx >> 16) & 0xff, 2);
    assert_eq!((l1.ebx >> 8) & 0xff, 8);
    assert_ne!(l1.ecx & (1 << 31), 0, "hypervisor bit");
    assert_ne!(l1.edx & (1 << 28), 0, "HTT");
    assert_eq!(l1.eax, 0x806c1);
    // Topology leaves follow.
    assert_eq!(get(&cpuid, 0xb, 1).ebx, 2);
    assert_eq!(get(&cpuid, 0xb, 0).edx, 1);
}

#[test]
fn single_vcpu_has_no_htt() {
    let mut cpuid = intel();
    normalize_cpuid(&mut cpuid, &cfg(0, 1, false)).unwrap();
    assert_eq!(get(&cpuid, 1, 0).edx & (1 << 28), 0);
}

#[test]
fn without_hiding_xsave_and_popcnt_stay() {
    let mut cpuid = intel();
    normalize_cpuid(&mut cpuid, &cfg(0, 1, false)).unwrap();
    let l1 = get(&cpuid, 1, 0);
    assert_ne!(l1.ecx & (1 << 26), 0);
    assert_ne!(l1.ecx & (1 << 23), 0);
    assert_eq!(get(&cpuid, 0xd, 0).eax, 0x7);
}

#[test]
fn hiding_for_pvm_clears_xsave_popcnt_smap_fsgsbase() {
    let mut cpuid = intel();
    normalize_cpuid(&mut cpuid, &cfg(0, 2, true)).unwrap();
    let l1 = get(&cpuid, 1, 0);
    assert_eq!(l1.ecx & ((1 << 23) | (1 << 26) | (1 << 27) | (1 << 28)), 0);
    assert_ne!(l1.ecx & (1 << 31), 0, "hypervisor bit still set");
    let l7 = get(&cpuid, 7, 0);
    assert_eq!(l7.ebx & ((1 << 20) | 1 | (1 << 5)), 0);
    assert_ne!(l7.ebx & (1 << 7), 0, "SMEP kept");
    for index in [0, 1] {
        let d = get(&cpuid, 0xd, index);
        assert_eq!((d.eax, d.ebx, d.ecx, d.edx), (0, 0, 0, 0));
    }
}

#[test]
fn bad_topology_is_refused() {
    let mut cpuid = intel();
    assert!(matches!(
        normalize_cpuid(&mut cpuid, &cfg(0, 0, false)),
        Err(CpuidError::NoCpus)
    ));
    let err = normalize_cpuid(&mut cpuid, &cfg(2, 2, false)).unwrap_err();
    assert_eq!(err.to_string(), "vCPU index 2 is out of range for 2 vCPUs");
    // Nothing was changed by the refused calls.
    assert_eq!(get(&cpuid, 1, 0).ebx, 0x0510_0800);
}

#[test]
fn pvm_detection_matches_sysfs() {
    assert_eq!(host_is_kvm_pvm(), Path::new("/sys/module/kvm_pvm").is_dir());
}
