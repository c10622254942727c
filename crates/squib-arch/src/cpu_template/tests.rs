//! Template application to synthetic CPUID and MSR lists, and the static templates' host
//! checks and contents.

use kvm_bindings::{kvm_cpuid_entry2, kvm_msr_entry, CpuId, KVM_CPUID_FLAG_SIGNIFCANT_INDEX};

use super::static_templates::{
    CpuModel, HostCheckError, StaticTemplate, CASCADE_LAKE, ICE_LAKE, MILAN,
    MSR_IA32_ARCH_CAPABILITIES, SKYLAKE,
};
use super::*;

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

fn vendor_leaf(name: &[u8; 12]) -> kvm_cpuid_entry2 {
    let word = |i: usize| u32::from_le_bytes([name[i], name[i + 1], name[i + 2], name[i + 3]]);
    entry(0, 0, [0x10, word(0), word(8), word(4)])
}

/// A host CPUID of `vendor` whose leaf 1 has `signature`, with every feature bit of the
/// leaves the templates touch set.
fn host(vendor: &[u8; 12], signature: u32) -> Vec<kvm_cpuid_entry2> {
    let all = u32::MAX;
    vec![
        vendor_leaf(vendor),
        entry(1, 0, [signature, 0x0002_0800, all, all]),
        entry(7, 0, [0, all, all, all]),
        entry(0xd, 0, [0x2ff, 0x340, 0x340, 0]),
        entry(0xd, 1, [0xf, 0, 0, 0]),
        entry(0x8000_0001, 0, [0, 0, all, all]),
        entry(0x8000_0008, 0, [0x3030, 0, 0, 0]),
    ]
}

fn signature_of(model: CpuModel) -> u32 {
    (u32::from(model.ext_family) << 20)
        | (u32::from(model.ext_model) << 16)
        | (u32::from(model.family) << 8)
        | (u32::from(model.model) << 4)
        | u32::from(model.stepping)
}

fn find(cpuid: &CpuId, function: u32, index: u32) -> kvm_cpuid_entry2 {
    *cpuid
        .as_slice()
        .iter()
        .find(|e| e.function == function && e.index == index)
        .unwrap()
}

fn msr(index: u32, data: u64) -> kvm_msr_entry {
    kvm_msr_entry {
        index,
        data,
        ..Default::default()
    }
}

#[test]
fn register_bits_replace_only_the_filtered_bits() {
    let bits = RegisterBits {
        filter: 0b1100u32,
        value: 0b0100,
    };
    assert_eq!(bits.apply(0b1011), 0b0111);
    assert_eq!(bits.apply(0), 0b0100);
    // A value bit outside the filter is not applied.
    let stray = RegisterBits {
        filter: 0u64,
        value: 1,
    };
    assert_eq!(stray.apply(6), 6);
}

#[test]
fn cpuid_modifiers_set_bits_and_flags_of_the_named_subleaf_only() {
    let mut cpuid = CpuId::from_entries(&[
        entry(7, 0, [0, 0xff, 0, 0]),
        entry(7, 1, [0xff, 0xff, 0, 0]),
    ])
    .unwrap();
    let template = Template {
        cpuid_modifiers: vec![CpuidLeafModifier {
            leaf: 7,
            subleaf: 0,
            flags: 1,
            modifiers: vec![
                CpuidRegisterModifier {
                    register: CpuidRegister::Ebx,
                    bits: RegisterBits {
                        filter: 0x0f,
                        value: 0x05,
                    },
                },
                CpuidRegisterModifier {
                    register: CpuidRegister::Edx,
                    bits: RegisterBits {
                        filter: 1 << 31,
                        value: 1 << 31,
                    },
                },
            ],
        }],
        msr_modifiers: Vec::new(),
    };
    template.apply_to_cpuid(&mut cpuid).unwrap();
    let sub0 = find(&cpuid, 7, 0);
    assert_eq!((sub0.ebx, sub0.edx, sub0.flags), (0xf5, 1 << 31, 1));
    assert_eq!(find(&cpuid, 7, 1), entry(7, 1, [0xff, 0xff, 0, 0]));
}

#[test]
fn a_leaf_kvm_does_not_offer_is_an_error_naming_it() {
    let mut cpuid = CpuId::from_entries(&[entry(1, 0, [0; 4])]).unwrap();
    let template = Template {
        cpuid_modifiers: vec![CpuidLeafModifier {
            leaf: 0x1f,
            subleaf: 3,
            flags: 0,
            modifiers: Vec::new(),
        }],
        msr_modifiers: Vec::new(),
    };
    let err = template.apply_to_cpuid(&mut cpuid).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Template changes a CPUID entry not supported by KVM: Leaf: 1f, Subleaf: 3"
    );
}

#[test]
fn msr_modifiers_apply_in_order_to_kvms_values() {
    let modifier = |addr, filter, value| MsrModifier {
        addr,
        bits: RegisterBits { filter, value },
    };
    let template = Template {
        cpuid_modifiers: Vec::new(),
        msr_modifiers: vec![
            modifier(0x10a, 0xff, 0x0f),
            modifier(0x1a0, 1, 0),
            modifier(0x10a, 0x100, 0x100),
        ],
    };
    assert_eq!(template.msr_indices(), vec![0x10a, 0x1a0]);
    let current = [msr(0x1a0, 0x81), msr(0x10a, 0xf0f0)];
    let msrs = template.apply_to_msrs(&current).unwrap();
    assert_eq!(
        msrs.iter().map(|e| (e.index, e.data)).collect::<Vec<_>>(),
        vec![(0x10a, 0xf10f), (0x1a0, 0x80)]
    );
    let err = template.apply_to_msrs(&current[..1]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Template changes an MSR entry not supported by KVM: Register Address: 10a"
    );
    assert!(Template::default().is_empty());
    assert!(!template.is_empty());
}

#[test]
fn the_cpu_model_is_read_from_the_signature() {
    assert_eq!(CpuModel::from_signature(0x0005_0654), SKYLAKE);
    assert_eq!(CpuModel::from_signature(0x0005_0657), CASCADE_LAKE);
    assert_eq!(CpuModel::from_signature(0x0006_06a6), ICE_LAKE);
    assert_eq!(CpuModel::from_signature(0x00a0_0f11), MILAN);
    // Reserved bits 14-15 and 28-31 and the processor type do not matter.
    assert_eq!(CpuModel::from_signature(0xf0a0_ff11), MILAN);
    assert_eq!(signature_of(MILAN), 0x00a0_0f11);
}

#[test]
fn a_static_template_needs_its_vendor_then_one_of_its_models() {
    let zen1 = host(b"AuthenticAMD", 0x0080_0f12);
    let milan = host(b"AuthenticAMD", signature_of(MILAN));
    let skylake = host(b"GenuineIntel", signature_of(SKYLAKE));
    let icelake = host(b"GenuineIntel", signature_of(ICE_LAKE));
    use StaticTemplate::*;
    for intel in [C3, T2, T2S, T2CL] {
        assert_eq!(
            intel.for_host(&milan),
            Err(HostCheckError::VendorMismatch),
            "{intel:?}"
        );
    }
    assert_eq!(T2A.for_host(&skylake), Err(HostCheckError::VendorMismatch));
    assert_eq!(T2A.for_host(&zen1), Err(HostCheckError::ModelNotPermitted));
    assert_eq!(T2A.for_host(&milan), Ok(T2A.template()));
    assert_eq!(
        T2CL.for_host(&skylake),
        Err(HostCheckError::ModelNotPermitted)
    );
    assert_eq!(
        T2S.for_host(&icelake),
        Err(HostCheckError::ModelNotPermitted)
    );
    assert_eq!(T2.for_host(&icelake), Ok(T2.template()));
    // A host CPUID without leaf 1 has no model a template is made for.
    assert_eq!(
        T2A.for_host(&milan[..1]),
        Err(HostCheckError::ModelNotPermitted)
    );
    assert_eq!(
        HostCheckError::VendorMismatch.to_string(),
        "CPU vendor mismatched between actual CPU and CPU template."
    );
    assert_eq!(
        HostCheckError::ModelNotPermitted.to_string(),
        "The current CPU model is not permitted to apply the CPU template."
    );
}

/// `host` with `template` applied.
fn templated(template: StaticTemplate, host: &[kvm_cpuid_entry2]) -> CpuId {
    let mut cpuid = CpuId::from_entries(host).unwrap();
    template.template().apply_to_cpuid(&mut cpuid).unwrap();
    cpuid
}

#[test]
fn t2a_shows_a_milan_as_a_haswell_signature_without_amd_or_avx512_extras() {
    let cpuid = templated(
        StaticTemplate::T2A,
        &host(b"AuthenticAMD", signature_of(MILAN)),
    );
    let leaf1 = find(&cpuid, 1, 0);
    assert_eq!(leaf1.eax, 0x0003_06f2);
    assert_eq!(leaf1.ecx & (1 << 5), 0, "VMX hidden");
    assert_ne!(leaf1.ecx & (1 << 0), 0, "SSE3 kept");
    let leaf7 = find(&cpuid, 7, 0);
    assert_eq!(leaf7.flags, KVM_CPUID_FLAG_SIGNIFCANT_INDEX);
    assert_eq!(leaf7.ebx & (1 << 16), 0, "AVX512F hidden");
    assert_eq!(leaf7.ebx & (1 << 29), 0, "SHA hidden");
    assert_ne!(leaf7.ebx & (1 << 5), 0, "AVX2 kept");
    assert_eq!(leaf7.ecx & (1 << 9), 0, "VAES hidden");
    let ext1 = find(&cpuid, 0x8000_0001, 0);
    assert_eq!(ext1.ecx & (1 << 2), 0, "SVM hidden");
    assert_eq!(ext1.ecx & (1 << 6), 0, "SSE4A hidden");
    assert_ne!(ext1.ecx & (1 << 5), 0, "LZCNT kept");
    assert_eq!(ext1.edx & (1 << 26), 0, "1 GiB pages hidden");
    let ext8 = find(&cpuid, 0x8000_0008, 0);
    assert_eq!(ext8.ebx, (1 << 2) | (1 << 18) | (1 << 19) | (1 << 20));
    assert_eq!(find(&cpuid, 0xd, 0).eax, 0x7, "x87, SSE and AVX state only");
    assert_eq!(find(&cpuid, 0xd, 1).eax, 0x1, "XSAVEOPT only");
    assert!(StaticTemplate::T2A.template().msr_modifiers.is_empty());
}

#[test]
fn c3_hides_haswell_features_t2_keeps() {
    let intel = host(b"GenuineIntel", signature_of(SKYLAKE));
    let c3 = templated(StaticTemplate::C3, &intel);
    let t2 = templated(StaticTemplate::T2, &intel);
    assert_eq!(find(&c3, 1, 0).eax, 0x0003_06e4);
    for (function, register, bit, name) in [
        (7, CpuidRegister::Ebx, 5, "AVX2"),
        (7, CpuidRegister::Ebx, 8, "BMI2"),
        (1, CpuidRegister::Ecx, 12, "FMA"),
        (1, CpuidRegister::Ecx, 22, "MOVBE"),
        (0x8000_0001, CpuidRegister::Ecx, 5, "LZCNT"),
    ] {
        let get = |cpuid: &CpuId| {
            let mut e = find(cpuid, function, 0);
            *register_mut(&mut e, register) & (1 << bit)
        };
        assert_eq!(get(&c3), 0, "C3 hides {name}");
        assert_ne!(get(&t2), 0, "T2 keeps {name}");
    }
    // C3 leaves leaf 0x8000_0008 alone.
    assert_eq!(find(&c3, 0x8000_0008, 0).ebx, 0);
}

#[test]
fn t2s_fixes_arch_capabilities_and_t2cl_passes_mitigations_through() {
    let host_value = u64::MAX;
    let current = [msr(MSR_IA32_ARCH_CAPABILITIES, host_value)];
    let t2s = StaticTemplate::T2S
        .template()
        .apply_to_msrs(&current)
        .unwrap();
    let fixed = t2s[0].data;
    assert_eq!(
        StaticTemplate::T2S
            .template()
            .apply_to_msrs(&[msr(MSR_IA32_ARCH_CAPABILITIES, 0)])
            .unwrap()[0]
            .data,
        fixed,
        "T2S ignores the host's value"
    );
    assert_ne!(fixed & (1 << 26), 0, "GDS_NO");
    assert_eq!(fixed & 1, 0, "RDCL_NO");
    let t2cl = StaticTemplate::T2CL
        .template()
        .apply_to_msrs(&current)
        .unwrap();
    let passed = t2cl[0].data;
    for bit in [
        0, 1, 2, 3, 4, 5, 6, 7, 8, 13, 14, 15, 17, 19, 24, 26, 27, 28,
    ] {
        assert_ne!(passed & (1 << bit), 0, "T2CL passes bit {bit} through");
    }
    for bit in [9, 12, 18, 20, 25, 29, 63] {
        assert_eq!(passed & (1 << bit), 0, "T2CL clears bit {bit}");
    }
    // T2 and T2CL differ from T2A only in the extended leaves and the MSR.
    let t2 = StaticTemplate::T2.template();
    let t2cl = StaticTemplate::T2CL.template();
    assert_eq!(t2.cpuid_modifiers[..4], t2cl.cpuid_modifiers[..4]);
    assert_eq!(
        t2.cpuid_modifiers[..4],
        StaticTemplate::T2A.template().cpuid_modifiers[..4]
    );
}
