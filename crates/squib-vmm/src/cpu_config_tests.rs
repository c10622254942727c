//! The CPU template from choice to vCPU: the required KVM capabilities, custom templates
//! turned into arch templates, and templates applied to real vCPUs on `/dev/kvm`, read back
//! with `KVM_GET_CPUID2` and `KVM_GET_MSRS` (and through a vCPU state save). The API-level
//! rules (last choice wins, errors at `InstanceStart`) are in `cpu_config_api_tests.rs`.
//!
//! On a `kvm_pvm` host, `KVM_GET_CPUID2` shows the host's own leaf 1 ECX/EDX and leaf 7
//! whatever was set (see `squib_arch::cpuid::pvm`), so the CPUID checks use the registers
//! that host keeps: leaf 1 EAX and EBX, and the extended and KVM leaves.

use kvm_bindings::kvm_cpuid_entry2;
use squib_arch::cpuid::host_is_kvm_pvm;

use super::*;
use crate::vstate::vcpu_state::save_vcpu;
use crate::vstate::vm::Vm;

/// `IA32_TSC_AUX`: writable, and not set at boot.
const MSR_TSC_AUX: u32 = 0xc000_0103;
/// `IA32_MISC_ENABLE`: set at boot (fast strings on).
const MSR_MISC_ENABLE: u32 = 0x1a0;
/// `IA32_UCODE_REV`: a host-written value squib does not save unless a template changes it.
const MSR_UCODE_REV: u32 = 0x8b;

fn template(json: &str) -> CpuConfig {
    serde_json::from_str(json).unwrap()
}

fn cpuid_of(fd: &VcpuFd, function: u32, index: u32) -> kvm_cpuid_entry2 {
    *fd.get_cpuid2(KVM_MAX_CPUID_ENTRIES)
        .unwrap()
        .as_slice()
        .iter()
        .find(|e| e.function == function && e.index == index)
        .unwrap()
}

fn msr_of(fd: &VcpuFd, index: u32) -> u64 {
    read_msrs(fd, &[index]).unwrap()[0].data
}

fn supported(kvm: &Kvm, function: u32) -> kvm_cpuid_entry2 {
    *kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .unwrap()
        .as_slice()
        .iter()
        .find(|e| e.function == function && e.index == 0)
        .unwrap()
}

fn cpuid_config(vcpu_index: u8, vcpu_count: u8) -> CpuidConfig {
    CpuidConfig {
        vcpu_index,
        vcpu_count,
        smt: false,
        hide_pvm_unsupported: host_is_kvm_pvm(),
    }
}

#[test]
fn a_template_adds_and_drops_capabilities_from_the_defaults() {
    let caps = required_capabilities(&[
        KvmCapability::Remove(kvm_bindings::KVM_CAP_XCRS),
        KvmCapability::Add(kvm_bindings::KVM_CAP_IOEVENTFD),
        KvmCapability::Add(999),
        KvmCapability::Add(999),
        KvmCapability::Remove(12345),
    ]);
    assert!(!caps.contains(&kvm_bindings::KVM_CAP_XCRS));
    assert_eq!(caps.iter().filter(|&&c| c == 999).count(), 1);
    assert_eq!(caps.len(), DEFAULT_KVM_CAPABILITIES.len());
    assert_eq!(caps[..3], DEFAULT_KVM_CAPABILITIES[..3]);

    let kvm = Kvm::new().expect("this test needs /dev/kvm");
    check_kvm_capabilities(&kvm, &DEFAULT_KVM_CAPABILITIES).unwrap();
    let err = check_kvm_capabilities(&kvm, &caps).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Kvm error: Missing KVM capabilities: 0x3e7"
    );
}

#[test]
fn a_custom_template_becomes_the_same_changes() {
    let config = template(
        r#"{"cpuid_modifiers":[{"leaf":"0x80000001","subleaf":"0x0","flags":0,
              "modifiers":[{"register":"ecx","bitmap":"0b0x1"},{"register":"edx","bitmap":"0b1"}]}],
            "msr_modifiers":[{"addr":"0x10a","bitmap":"0b10"}]}"#,
    );
    let t = template_of(&config);
    let leaf = &t.cpuid_modifiers[0];
    assert_eq!((leaf.leaf, leaf.subleaf, leaf.flags), (0x8000_0001, 0, 0));
    assert_eq!(leaf.modifiers[0].register, CpuidRegister::Ecx);
    assert_eq!(
        leaf.modifiers[0].bits,
        RegisterBits {
            filter: 0b101,
            value: 0b001
        }
    );
    assert_eq!(leaf.modifiers[1].register, CpuidRegister::Edx);
    assert_eq!(
        t.msr_modifiers,
        vec![MsrModifier {
            addr: 0x10a,
            bits: RegisterBits {
                filter: 0b11,
                value: 0b10
            }
        }]
    );
    assert_eq!(
        CpuTemplateChoice::Custom(&config).msr_indices(),
        vec![0x10a]
    );
    assert_eq!(
        CpuTemplateChoice::Static(CpuTemplate::T2S).msr_indices(),
        vec![0x10a]
    );
    assert!(CpuTemplateChoice::Static(CpuTemplate::T2A)
        .msr_indices()
        .is_empty());
}

/// Two vCPUs configured with a template touching leaves this host keeps and three MSRs.
#[test]
fn vcpus_get_the_templates_cpuid_and_msrs_then_squibs_own_values() {
    let kvm = Kvm::new().expect("this test needs /dev/kvm");
    let vm = Vm::new(&kvm).unwrap();
    let ext1 = supported(&kvm, 0x8000_0001);
    let ext8 = supported(&kvm, 0x8000_0008);
    // Leaf 1: the T2 signature, and an APIC id 0xff the normalisation must replace.
    // Leaf 0x8000_0001 ECX: its lowest bit that KVM offers, cleared. Leaf 0x8000_0008 EBX:
    // bit 18 (IBRS preferred) set. MSRs: TSC_AUX low byte 0x5a, MISC_ENABLE bit 0 cleared
    // (the boot value wins), UCODE_REV bit 40 set.
    let ext1_bit = ext1.ecx.trailing_zeros();
    assert!(ext1_bit < 32, "KVM offers no leaf 0x8000_0001 ECX feature");
    let config = template(&format!(
        r#"{{"cpuid_modifiers":[
            {{"leaf":"0x1","subleaf":"0x0","flags":0,"modifiers":[
                {{"register":"eax","bitmap":"0b0000_00000000_0011_xx_00_0110_1111_0010"}},
                {{"register":"ebx","bitmap":"0b11111111xxxxxxxxxxxxxxxxxxxxxxxx"}}]}},
            {{"leaf":"0x80000001","subleaf":"0x0","flags":0,"modifiers":[
                {{"register":"ecx","bitmap":"0b0{}"}}]}},
            {{"leaf":"0x80000008","subleaf":"0x0","flags":0,"modifiers":[
                {{"register":"ebx","bitmap":"0b1{}"}}]}}],
          "msr_modifiers":[
            {{"addr":"0xc0000103","bitmap":"0b01011010"}},
            {{"addr":"0x1a0","bitmap":"0b0"}},
            {{"addr":"0x8b","bitmap":"0b1{}"}}]}}"#,
        "x".repeat(ext1_bit as usize),
        "x".repeat(18),
        "x".repeat(40),
    ));
    let mut cpu = VcpuCpuConfig::new(&kvm, CpuTemplateChoice::Custom(&config)).unwrap();
    assert_eq!(
        cpu.msr_indices(),
        vec![MSR_TSC_AUX, MSR_MISC_ENABLE, MSR_UCODE_REV]
    );
    let fds: Vec<VcpuFd> = (0..2u8)
        .map(|index| {
            let fd = vm.fd().create_vcpu(u64::from(index)).unwrap();
            cpu.configure(&fd, &cpuid_config(index, 2)).unwrap();
            fd
        })
        .collect();
    for (index, fd) in (0u32..).zip(&fds) {
        let leaf1 = cpuid_of(fd, 1, 0);
        assert_eq!(
            leaf1.eax & 0x0fff_3fff,
            0x0003_06f2,
            "vCPU {index} signature"
        );
        assert_eq!(leaf1.ebx >> 24, index, "the normalisation sets the APIC id");
        assert_eq!(
            cpuid_of(fd, 0x8000_0001, 0).ecx,
            ext1.ecx & !(1 << ext1_bit)
        );
        assert_eq!(cpuid_of(fd, 0x8000_0008, 0).ebx, ext8.ebx | (1 << 18));
        assert_eq!(msr_of(fd, MSR_TSC_AUX) & 0xff, 0x5a, "vCPU {index} TSC_AUX");
        assert_eq!(msr_of(fd, MSR_MISC_ENABLE) & 1, 1, "boot MISC_ENABLE wins");
        assert_ne!(
            msr_of(fd, MSR_UCODE_REV) & (1 << 40),
            0,
            "vCPU {index} UCODE_REV"
        );
    }

    // A snapshot saves the template's MSRs, even one squib would not save otherwise.
    let caps = vm.vcpu_state_caps(&kvm).unwrap();
    assert!(!caps.msrs().contains(&MSR_UCODE_REV));
    let caps = caps.with_msrs(&cpu.msr_indices());
    let state = save_vcpu(&fds[1], &caps).unwrap();
    let saved = |index: u32| state.msrs.iter().find(|e| e.index == index).map(|e| e.data);
    assert_eq!(saved(MSR_TSC_AUX).map(|v| v & 0xff), Some(0x5a));
    assert!(saved(MSR_UCODE_REV).is_some_and(|v| v & (1 << 40) != 0));
    let saved_leaf1 = state.cpuid.iter().find(|e| e.function == 1).unwrap();
    assert_eq!(saved_leaf1.eax & 0x0fff_3fff, 0x0003_06f2);
}

#[test]
fn leaves_and_msrs_kvm_lacks_fail_with_firecrackers_errors() {
    let kvm = Kvm::new().expect("this test needs /dev/kvm");
    let no_leaf = template(
        r#"{"cpuid_modifiers":[{"leaf":"0x4fffffff","subleaf":"0x3","flags":0,"modifiers":[]}]}"#,
    );
    let err = VcpuCpuConfig::new(&kvm, CpuTemplateChoice::Custom(&no_leaf)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "System configuration error: Failed to create guest config: Template changes a CPUID \
         entry not supported by KVM: Leaf: 4fffffff, Subleaf: 3"
    );

    let vm = Vm::new(&kvm).unwrap();
    let no_msr = template(r#"{"msr_modifiers":[{"addr":"0xdead","bitmap":"0b1"}]}"#);
    let mut cpu = VcpuCpuConfig::new(&kvm, CpuTemplateChoice::Custom(&no_msr)).unwrap();
    let fd = vm.fd().create_vcpu(0).unwrap();
    let err = cpu.configure(&fd, &cpuid_config(0, 1)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "System configuration error: Failed to create guest config: KVM vcpu ioctl failed: \
         Failed to get KVM vcpu msr: 0xdead"
    );

    // MTRR_DEF_TYPE with a reserved bit set: KVM reads the MSR but refuses the value.
    let bad_value = template(&format!(
        r#"{{"msr_modifiers":[{{"addr":"0x2ff","bitmap":"0b1{}"}}]}}"#,
        "x".repeat(63)
    ));
    let mut cpu = VcpuCpuConfig::new(&kvm, CpuTemplateChoice::Custom(&bad_value)).unwrap();
    let fd = vm.fd().create_vcpu(1).unwrap();
    let err = cpu.configure(&fd, &cpuid_config(1, 2)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "System configuration error: KVM refused the CPU template's value for MSR 0x2ff"
    );

    let missing_cap = template(r#"{"kvm_capabilities":["999"]}"#);
    let err = VcpuCpuConfig::new(&kvm, CpuTemplateChoice::Custom(&missing_cap)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Kvm error: Missing KVM capabilities: 0x3e7"
    );
}

/// The static templates' host checks read this host's vendor and model from KVM, which
/// reports the host's own leaf 0 and leaf 1 EAX.
#[test]
fn static_templates_are_checked_against_this_host() {
    let kvm = Kvm::new().expect("this test needs /dev/kvm");
    let host = kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).unwrap();
    let vendor = squib_arch::cpuid::vendor(host.as_slice());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap();
    let field = |name: &str| -> u32 {
        cpuinfo
            .lines()
            .find(|l| l.split(':').next().is_some_and(|k| k.trim() == name))
            .and_then(|l| l.split(':').nth(1))
            .and_then(|v| v.trim().parse().ok())
            .unwrap()
    };
    let model = squib_arch::cpu_template::static_templates::CpuModel::from_signature(
        supported(&kvm, 1).eax,
    );
    let family = u32::from(model.family) + u32::from(model.ext_family);
    let full_model = (u32::from(model.ext_model) << 4) | u32::from(model.model);
    assert_eq!(
        (family, full_model, u32::from(model.stepping)),
        (field("cpu family"), field("model"), field("stepping"))
    );
    for name in [
        CpuTemplate::C3,
        CpuTemplate::T2,
        CpuTemplate::T2S,
        CpuTemplate::T2CL,
        CpuTemplate::T2A,
    ] {
        let template = static_template(name).unwrap();
        let result = VcpuCpuConfig::new(&kvm, CpuTemplateChoice::Static(name));
        match template.for_host(host.as_slice()) {
            Err(HostCheckError::VendorMismatch) => {
                assert_ne!(vendor, template.vendor());
                assert_eq!(
                    result.unwrap_err().to_string(),
                    "Failed to get CPU template: CPU vendor mismatched between actual CPU and CPU template."
                );
            }
            Err(HostCheckError::ModelNotPermitted) => assert_eq!(
                result.unwrap_err().to_string(),
                "Failed to get CPU template: The current CPU model is not permitted to apply the CPU template."
            ),
            Ok(_) => assert!(result.is_ok(), "{name:?} on its own host"),
        }
    }
}
