//! Firecracker's static CPU templates for x86_64 (deprecated in Firecracker in favour of
//! custom templates, kept for compatibility), written as the features each one hides or
//! shows, and the host CPUs each one may be used on.
//!
//! - T2 (Intel): the CPU of an AWS T2 instance: a Haswell server signature (family 6, model
//!   0x3f, stepping 2), and none of the features of later cores (AVX-512, SHA, ADX, RDSEED,
//!   CLWB, PKU, LA57, ...) or of host-only machinery (VMX, SGX, performance monitoring).
//! - C3 (Intel): the CPU of an AWS C3 instance (Ivy Bridge server, model 0x3e stepping 4):
//!   T2 without AVX2, BMI1/2, FMA, MOVBE, INVPCID, LZCNT either.
//! - T2S (Intel): T2, with `IA32_ARCH_CAPABILITIES` fixed to one value, so that a snapshot
//!   moves safely between Skylake and Cascade Lake hosts.
//! - T2CL (Intel, Cascade Lake and later): T2, with AMD's extended features hidden too and
//!   the `IA32_ARCH_CAPABILITIES` bits KVM does not pass through cleared; with T2A, the same
//!   instruction set on Intel and AMD hosts.
//! - T2A (AMD Milan): T2's features on AMD, with AMD's own extensions (SVM, SSE4A, CLZERO,
//!   ...) hidden, and the speculation-control hints a Milan has shown.
//!
//! [`StaticTemplate::for_host`] refuses a template on another vendor's CPU, or on a CPU
//! model (family, model and stepping) it was not made for, with Firecracker's errors.

use kvm_bindings::{kvm_cpuid_entry2, KVM_CPUID_FLAG_SIGNIFCANT_INDEX};

use super::CpuidRegister::{Eax, Ebx, Ecx, Edx};
use super::{
    CpuidLeafModifier, CpuidRegister, CpuidRegisterModifier, MsrModifier, RegisterBits, Template,
};
use crate::cpuid::{vendor, Vendor};

/// A static template.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum StaticTemplate {
    C3,
    T2,
    T2S,
    T2CL,
    T2A,
}

/// A CPU model as CPUID leaf 1 EAX identifies it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuModel {
    /// Extended family (bits 27-20).
    pub ext_family: u8,
    /// Extended model (bits 19-16).
    pub ext_model: u8,
    /// Family (bits 11-8).
    pub family: u8,
    /// Model (bits 7-4).
    pub model: u8,
    /// Stepping (bits 3-0).
    pub stepping: u8,
}

impl CpuModel {
    /// The model of processor signature `eax` (CPUID leaf 1 EAX).
    #[must_use]
    pub fn from_signature(eax: u32) -> Self {
        let field = |shift: u32, mask: u32| ((eax >> shift) & mask) as u8;
        Self {
            ext_family: field(20, 0xff),
            ext_model: field(16, 0xf),
            family: field(8, 0xf),
            model: field(4, 0xf),
            stepping: field(0, 0xf),
        }
    }

    const fn new(ext_family: u8, ext_model: u8, family: u8, model: u8, stepping: u8) -> Self {
        Self {
            ext_family,
            ext_model,
            family,
            model,
            stepping,
        }
    }
}

/// Intel Skylake server (signature 0x50654).
pub const SKYLAKE: CpuModel = CpuModel::new(0, 5, 6, 5, 4);
/// Intel Cascade Lake server (0x50657).
pub const CASCADE_LAKE: CpuModel = CpuModel::new(0, 5, 6, 5, 7);
/// Intel Ice Lake server (0x606a6).
pub const ICE_LAKE: CpuModel = CpuModel::new(0, 6, 6, 0xa, 6);
/// AMD Milan (0xa00f11).
pub const MILAN: CpuModel = CpuModel::new(0xa, 0, 0xf, 1, 1);

/// Why a static template may not be used on this host (Firecracker's texts).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostCheckError {
    /// The template is for the other vendor.
    #[error("CPU vendor mismatched between actual CPU and CPU template.")]
    VendorMismatch,
    /// The template was not made for this CPU model.
    #[error("The current CPU model is not permitted to apply the CPU template.")]
    ModelNotPermitted,
}

impl StaticTemplate {
    /// The vendor the template is for.
    #[must_use]
    pub fn vendor(self) -> Vendor {
        match self {
            Self::C3 | Self::T2 | Self::T2S | Self::T2CL => Vendor::Intel,
            Self::T2A => Vendor::Amd,
        }
    }

    /// The host CPU models the template may be used on.
    #[must_use]
    pub fn permitted_models(self) -> &'static [CpuModel] {
        match self {
            Self::C3 | Self::T2 => &[SKYLAKE, CASCADE_LAKE, ICE_LAKE],
            Self::T2S => &[SKYLAKE, CASCADE_LAKE],
            Self::T2CL => &[CASCADE_LAKE, ICE_LAKE],
            Self::T2A => &[MILAN],
        }
    }

    /// The template, if `host_cpuid` (the host's CPUID as `KVM_GET_SUPPORTED_CPUID` reports
    /// it: leaf 0 names the vendor, leaf 1 EAX the model) is a CPU it was made for.
    ///
    /// # Errors
    /// [`HostCheckError`]: the vendor first, then the model.
    pub fn for_host(self, host_cpuid: &[kvm_cpuid_entry2]) -> Result<Template, HostCheckError> {
        if vendor(host_cpuid) != self.vendor() {
            return Err(HostCheckError::VendorMismatch);
        }
        let model = host_cpuid
            .iter()
            .find(|e| e.function == 1)
            .map(|e| CpuModel::from_signature(e.eax));
        if !model.is_some_and(|m| self.permitted_models().contains(&m)) {
            return Err(HostCheckError::ModelNotPermitted);
        }
        Ok(self.template())
    }

    /// The template's changes, without the host check.
    #[must_use]
    pub fn template(self) -> Template {
        match self {
            Self::C3 => c3(),
            Self::T2 => t2_family(
                &EXT1_ECX_T2_OFF,
                &EXT1_EDX_T2_OFF,
                clear(&EXT8_EBX_T2_OFF),
                None,
            ),
            Self::T2S => t2_family(
                &EXT1_ECX_T2_OFF,
                &EXT1_EDX_T2_OFF,
                clear(&EXT8_EBX_T2_OFF),
                Some(RegisterBits {
                    filter: u64::MAX,
                    value: mask64(&ARCH_CAPABILITIES_T2S_ON),
                }),
            ),
            Self::T2CL => t2_family(
                &EXT1_ECX_T2CL_OFF,
                &EXT1_EDX_T2CL_OFF,
                clear(&EXT8_EBX_T2_OFF),
                Some(RegisterBits {
                    filter: mask64(&ARCH_CAPABILITIES_T2CL_OFF) | (u64::MAX << 29),
                    value: 0,
                }),
            ),
            Self::T2A => t2_family(
                &EXT1_ECX_T2A_OFF,
                &EXT1_EDX_T2A_OFF,
                force(&EXT8_EBX_T2A_OFF, &EXT8_EBX_T2A_ON),
                None,
            ),
        }
    }
}

/// `IA32_ARCH_CAPABILITIES`: what the CPU says about its speculation vulnerabilities.
pub const MSR_IA32_ARCH_CAPABILITIES: u32 = 0x10a;

/// Leaf 1 EAX: the processor signature. Bits 14-15 and 28-31 are reserved and left alone;
/// the processor type (bits 13-12) becomes 0, an original OEM processor.
fn signature(ext_model: u32, family: u32, model: u32, stepping: u32) -> RegisterBits<u32> {
    RegisterBits {
        filter: 0x0fff_3fff,
        value: (ext_model << 16) | (family << 8) | (model << 4) | stepping,
    }
}

/// T2's signature: Haswell server (Xeon E5 v3), 0x306f2.
const T2_SIGNATURE: (u32, u32, u32, u32) = (3, 6, 0xf, 2);
/// C3's signature: Ivy Bridge server (Xeon E5 v2), 0x306e4.
const C3_SIGNATURE: (u32, u32, u32, u32) = (3, 6, 0xe, 4);

/// Leaf 1 ECX hidden by the T2 family: DTES64, MONITOR, DS-CPL, VMX, SMX, EIST, TM2,
/// CNXT-ID, SDBG, xTPR update control, PDCM, DCA.
const LEAF1_ECX_T2_OFF: [u32; 12] = [2, 3, 4, 5, 6, 7, 8, 10, 11, 14, 15, 18];
/// Leaf 1 ECX hidden by C3: DTES64, MONITOR, DS-CPL, VMX, TM2, CNXT-ID, SDBG, FMA, xTPR,
/// PDCM, MOVBE.
const LEAF1_ECX_C3_OFF: [u32; 11] = [2, 3, 4, 5, 8, 10, 11, 12, 14, 15, 22];
/// Leaf 1 EDX shown by every template: MCE, MTRR.
const LEAF1_EDX_ON: [u32; 2] = [7, 12];
/// Leaf 1 EDX hidden by the T2 family: PSN, DS, ACPI, SS, TM, IA-64, PBE.
const LEAF1_EDX_T2_OFF: [u32; 7] = [18, 21, 22, 27, 29, 30, 31];
/// Leaf 1 EDX hidden by C3: PSN, DS, ACPI, SS, TM, PBE.
const LEAF1_EDX_C3_OFF: [u32; 6] = [18, 21, 22, 27, 29, 31];

/// Leaf 7 EBX shown by the T2 family: enhanced REP MOVSB/STOSB.
const LEAF7_EBX_T2_ON: [u32; 1] = [9];
/// Leaf 7 EBX hidden by the T2 family: SGX, HLE, RTM, RDT-M, MPX, RDT-A, AVX512F,
/// AVX512DQ, RDSEED, ADX, AVX512_IFMA, PCOMMIT (AMD: RDPID), CLFLUSHOPT, CLWB, processor
/// trace, AVX512PF, AVX512ER, AVX512CD, SHA, AVX512BW, AVX512VL.
const LEAF7_EBX_T2_OFF: [u32; 21] = [
    2, 4, 11, 12, 14, 15, 16, 17, 18, 19, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31,
];
/// Leaf 7 EBX hidden by C3: SGX, BMI1, HLE, AVX2, BMI2, INVPCID, RTM, RDT-M, MPX, RDT-A,
/// AVX512F, AVX512DQ, RDSEED, ADX, AVX512_IFMA, CLFLUSHOPT, CLWB, processor trace, AVX512PF,
/// AVX512ER, AVX512CD, SHA, AVX512BW, AVX512VL.
const LEAF7_EBX_C3_OFF: [u32; 24] = [
    2, 3, 4, 5, 8, 10, 11, 12, 14, 15, 16, 17, 18, 19, 21, 23, 24, 25, 26, 27, 28, 29, 30, 31,
];
/// Leaf 7 ECX hidden by the T2 family: AVX512_VBMI, UMIP, PKU, OSPKE, AVX512_VBMI2, GFNI,
/// VAES, VPCLMULQDQ, AVX512_VNNI, AVX512_BITALG, AVX512_VPOPCNTDQ, LA57, RDPID, SGX_LC.
const LEAF7_ECX_T2_OFF: [u32; 14] = [1, 2, 3, 4, 6, 8, 9, 10, 11, 12, 14, 16, 22, 30];
/// Leaf 7 ECX hidden by C3: AVX512_VBMI, UMIP, PKU, OSPKE, AVX512_VNNI, AVX512_VPOPCNTDQ,
/// LA57, RDPID, SGX_LC.
const LEAF7_ECX_C3_OFF: [u32; 9] = [1, 2, 3, 4, 11, 14, 16, 22, 30];
/// Leaf 7 EDX hidden by the T2 family: AVX512_4VNNIW, AVX512_4FMAPS, fast short REP MOV,
/// AVX512_VP2INTERSECT.
const LEAF7_EDX_T2_OFF: [u32; 4] = [2, 3, 4, 8];
/// Leaf 7 EDX hidden by C3: AVX512_4VNNIW, AVX512_4FMAPS.
const LEAF7_EDX_C3_OFF: [u32; 2] = [2, 3];

/// Leaf 0xD subleaf 0 EAX (XSAVE state components) hidden by every template: MPX's BNDREGS
/// and BNDCSR, AVX-512's opmask, ZMM_Hi256 and Hi16_ZMM, PKRU.
const XSAVE_STATE_OFF: [u32; 6] = [3, 4, 5, 6, 7, 9];
/// Leaf 0xD subleaf 1 EAX hidden by every template: XSAVEC, XGETBV with ECX=1, XSAVES.
const XSAVE_FEATURES_OFF: [u32; 3] = [1, 2, 3];

/// Leaf 0x8000_0001 ECX hidden by T2 and T2S: PREFETCHW, MONITORX/MWAITX.
const EXT1_ECX_T2_OFF: [u32; 2] = [8, 29];
/// ... by T2CL: SSE4A, misaligned SSE, PREFETCHW, MONITORX/MWAITX.
const EXT1_ECX_T2CL_OFF: [u32; 4] = [6, 7, 8, 29];
/// ... by T2A: SVM, SSE4A, misaligned SSE, PREFETCHW, MONITORX/MWAITX.
const EXT1_ECX_T2A_OFF: [u32; 5] = [2, 6, 7, 8, 29];
/// ... by C3: LZCNT, PREFETCHW.
const EXT1_ECX_C3_OFF: [u32; 2] = [5, 8];
/// Leaf 0x8000_0001 EDX hidden by T2, T2S and C3: 1 GiB pages.
const EXT1_EDX_T2_OFF: [u32; 1] = [26];
/// ... by T2CL: AMD's MMX extensions, MMX, FXSR, FFXSR, 1 GiB pages.
const EXT1_EDX_T2CL_OFF: [u32; 5] = [22, 23, 24, 25, 26];
/// ... by T2A: AMD's MMX extensions, FFXSR, 1 GiB pages.
const EXT1_EDX_T2A_OFF: [u32; 3] = [22, 25, 26];

/// Leaf 0x8000_0008 EBX hidden by T2, T2S and T2CL: WBNOINVD.
const EXT8_EBX_T2_OFF: [u32; 1] = [9];
/// ... by T2A: CLZERO, WBNOINVD.
const EXT8_EBX_T2A_OFF: [u32; 2] = [0, 9];
/// Leaf 0x8000_0008 EBX shown by T2A: FP error pointers always restored, IBRS preferred,
/// IBRS same mode, long mode segment limit (LMSLE) unsupported.
const EXT8_EBX_T2A_ON: [u32; 4] = [2, 18, 19, 20];

/// `IA32_ARCH_CAPABILITIES` under T2S, every other bit 0: RSBA, SKIP_L1DFL_VMENTRY,
/// IF_PSCHANGE_MC_NO, MISC_PACKAGE_CTLS, ENERGY_FILTERING_CTL, RRSBA, GDS_NO.
const ARCH_CAPABILITIES_T2S_ON: [u32; 7] = [2, 3, 6, 10, 11, 19, 26];
/// `IA32_ARCH_CAPABILITIES` bits T2CL clears (besides the reserved bits 29-63), passing the
/// mitigation bits KVM reports through: MCU_CONTROL, MISC_PACKAGE_CTLS,
/// ENERGY_FILTERING_CTL, DOITM, bit 16, FB_CLEAR_CTRL, BHI_NO, XAPIC_DISABLE_STATUS,
/// bit 22, OVERCLOCKING_STATUS, GDS_CTRL.
const ARCH_CAPABILITIES_T2CL_OFF: [u32; 11] = [9, 10, 11, 12, 16, 18, 20, 21, 22, 23, 25];

fn mask(bits: &[u32]) -> u32 {
    bits.iter().fold(0, |m, &b| m | (1 << b))
}

fn mask64(bits: &[u32]) -> u64 {
    bits.iter().fold(0, |m, &b| m | (1 << b))
}

/// `off` bits forced to 0, `on` bits to 1.
fn force(off: &[u32], on: &[u32]) -> RegisterBits<u32> {
    RegisterBits {
        filter: mask(off) | mask(on),
        value: mask(on),
    }
}

fn clear(off: &[u32]) -> RegisterBits<u32> {
    force(off, &[])
}

fn leaf(
    leaf: u32,
    subleaf: u32,
    flags: u32,
    modifiers: &[(CpuidRegister, RegisterBits<u32>)],
) -> CpuidLeafModifier {
    CpuidLeafModifier {
        leaf,
        subleaf,
        flags,
        modifiers: modifiers
            .iter()
            .map(|&(register, bits)| CpuidRegisterModifier { register, bits })
            .collect(),
    }
}

/// Leaves 7 and 0xD are indexed by subleaf: KVM needs the flag to tell their entries apart.
const INDEXED: u32 = KVM_CPUID_FLAG_SIGNIFCANT_INDEX;

/// Leaf 0xD (XSAVE), the same in every template.
fn xsave_leaves() -> [CpuidLeafModifier; 2] {
    [
        leaf(0xd, 0, INDEXED, &[(Eax, clear(&XSAVE_STATE_OFF))]),
        leaf(0xd, 1, INDEXED, &[(Eax, clear(&XSAVE_FEATURES_OFF))]),
    ]
}

/// T2, T2S, T2CL and T2A: the same leaves 1, 7 and 0xD; the extended leaves and
/// `IA32_ARCH_CAPABILITIES` differ.
fn t2_family(
    ext1_ecx_off: &[u32],
    ext1_edx_off: &[u32],
    ext8_ebx: RegisterBits<u32>,
    arch_capabilities: Option<RegisterBits<u64>>,
) -> Template {
    let (ext_model, family, model, stepping) = T2_SIGNATURE;
    let mut cpuid_modifiers = vec![
        leaf(
            1,
            0,
            0,
            &[
                (Eax, signature(ext_model, family, model, stepping)),
                (Ecx, clear(&LEAF1_ECX_T2_OFF)),
                (Edx, force(&LEAF1_EDX_T2_OFF, &LEAF1_EDX_ON)),
            ],
        ),
        leaf(
            7,
            0,
            INDEXED,
            &[
                (Ebx, force(&LEAF7_EBX_T2_OFF, &LEAF7_EBX_T2_ON)),
                (Ecx, clear(&LEAF7_ECX_T2_OFF)),
                (Edx, clear(&LEAF7_EDX_T2_OFF)),
            ],
        ),
    ];
    cpuid_modifiers.extend(xsave_leaves());
    cpuid_modifiers.push(leaf(
        0x8000_0001,
        0,
        0,
        &[(Ecx, clear(ext1_ecx_off)), (Edx, clear(ext1_edx_off))],
    ));
    cpuid_modifiers.push(leaf(0x8000_0008, 0, 0, &[(Ebx, ext8_ebx)]));
    Template {
        cpuid_modifiers,
        msr_modifiers: arch_capabilities
            .map(|bits| MsrModifier {
                addr: MSR_IA32_ARCH_CAPABILITIES,
                bits,
            })
            .into_iter()
            .collect(),
    }
}

fn c3() -> Template {
    let (ext_model, family, model, stepping) = C3_SIGNATURE;
    let mut cpuid_modifiers = vec![
        leaf(
            1,
            0,
            0,
            &[
                (Eax, signature(ext_model, family, model, stepping)),
                (Ecx, clear(&LEAF1_ECX_C3_OFF)),
                (Edx, force(&LEAF1_EDX_C3_OFF, &LEAF1_EDX_ON)),
            ],
        ),
        leaf(
            7,
            0,
            INDEXED,
            &[
                (Ebx, clear(&LEAF7_EBX_C3_OFF)),
                (Ecx, clear(&LEAF7_ECX_C3_OFF)),
                (Edx, clear(&LEAF7_EDX_C3_OFF)),
            ],
        ),
    ];
    cpuid_modifiers.extend(xsave_leaves());
    cpuid_modifiers.push(leaf(
        0x8000_0001,
        0,
        0,
        &[
            (Ecx, clear(&EXT1_ECX_C3_OFF)),
            (Edx, clear(&EXT1_EDX_T2_OFF)),
        ],
    ));
    Template {
        cpuid_modifiers,
        msr_modifiers: Vec::new(),
    }
}
