//! The CPU template a microVM boots with, from choice to every vCPU's registers.
//!
//! The choice is the last one made of a static `cpu_template` (PUT/PATCH `/machine-config`)
//! and a custom template (`PUT /cpu-config`). At `InstanceStart`, [`VcpuCpuConfig::new`]
//! checks it against the host as Firecracker does: a static template must be for this CPU
//! vendor and model; KVM must have squib's default capabilities, give or take those a custom
//! template names. The template's CPUID changes are then applied to what KVM supports.
//!
//! [`VcpuCpuConfig::configure`] sets up each vCPU in Firecracker's order: the templated CPUID
//! is normalised for the vCPU (topology, hypervisor bit, what `kvm_pvm` cannot run) and set;
//! the template's MSRs, read from the first vCPU before it is configured and changed by the
//! template, are written, then the boot MSRs, which win where both set the same MSR.

use kvm_bindings::{kvm_msr_entry, CpuId, Msrs, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Kvm, VcpuFd};
use squib_api::schemas::cpu_config::{
    CpuidLeafModifier as ApiLeaf, CpuidRegister as ApiRegister, KvmCapability,
    MsrModifier as ApiMsr,
};
use squib_api::schemas::{CpuConfig, CpuTemplate};
use squib_arch::cpu_template::static_templates::{HostCheckError, StaticTemplate};
use squib_arch::cpu_template::{
    CpuidLeafModifier, CpuidRegister, CpuidRegisterModifier, MsrModifier, RegisterBits, Template,
    TemplateError,
};
use squib_arch::cpuid::{normalize_cpuid, CpuidConfig};
use squib_arch::regs::{boot_msr_entries, setup_fpu_and_msrs};

use crate::builder::StartMicrovmError;
use crate::resources::VmResources;

/// The KVM capabilities squib needs on every host (Firecracker's list). A custom template's
/// `"!N"` drops one, `"N"` adds one.
pub const DEFAULT_KVM_CAPABILITIES: [u32; 14] = [
    kvm_bindings::KVM_CAP_IRQCHIP,
    kvm_bindings::KVM_CAP_IOEVENTFD,
    kvm_bindings::KVM_CAP_IRQFD,
    kvm_bindings::KVM_CAP_USER_MEMORY,
    kvm_bindings::KVM_CAP_SET_TSS_ADDR,
    kvm_bindings::KVM_CAP_PIT2,
    kvm_bindings::KVM_CAP_PIT_STATE2,
    kvm_bindings::KVM_CAP_ADJUST_CLOCK,
    kvm_bindings::KVM_CAP_DEBUGREGS,
    kvm_bindings::KVM_CAP_MP_STATE,
    kvm_bindings::KVM_CAP_VCPU_EVENTS,
    kvm_bindings::KVM_CAP_XCRS,
    kvm_bindings::KVM_CAP_XSAVE,
    kvm_bindings::KVM_CAP_EXT_CPUID,
];

/// Why the CPU template cannot be used; `Display` is Firecracker's text after
/// `Start microvm error: `.
#[derive(Debug, thiserror::Error)]
pub enum CpuConfigError {
    /// A static template is not for this host's CPU.
    #[error("Failed to get CPU template: {0}")]
    HostCheck(#[from] HostCheckError),
    /// KVM lacks a capability squib or the template requires.
    #[error("Kvm error: Missing KVM capabilities: {0:#x}")]
    MissingKvmCapability(u32),
    /// `KVM_GET_SUPPORTED_CPUID` failed.
    #[error("Kvm error: Failed to get supported cpuid: {0}")]
    SupportedCpuid(#[source] kvm_ioctls::Error),
    /// The template names a CPUID leaf or MSR KVM does not have.
    #[error("System configuration error: Failed to create guest config: {0}")]
    Template(#[from] TemplateError),
    /// KVM cannot read an MSR the template changes.
    #[error("System configuration error: Failed to create guest config: KVM vcpu ioctl failed: Failed to get KVM vcpu msr: {0:#x}")]
    MsrUnreadable(u32),
    /// `KVM_GET_MSRS` or `KVM_SET_MSRS` failed outright, or the list is too long for it.
    #[error("System configuration error: Failed to create guest config: KVM vcpu ioctl failed: Failed to {0} the template's MSRs: {1}")]
    MsrIoctl(&'static str, String),
    /// KVM refused the template's value for an MSR.
    #[error("System configuration error: KVM refused the CPU template's value for MSR {0:#x}")]
    MsrRefused(u32),
}

/// The template chosen for the next boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuTemplateChoice<'a> {
    /// None: KVM's CPUID and MSRs, normalised.
    None,
    /// A static template (never `CpuTemplate::None`).
    Static(CpuTemplate),
    /// A custom template.
    Custom(&'a CpuConfig),
}

impl<'a> CpuTemplateChoice<'a> {
    /// What `resources` holds: the custom template if one is set (a later static choice
    /// clears it), else the static one.
    #[must_use]
    pub fn of(resources: &'a VmResources) -> Self {
        match (
            &resources.cpu_config,
            resources.machine_config().cpu_template,
        ) {
            (Some(custom), _) => Self::Custom(custom),
            (None, Some(template)) if template != CpuTemplate::None => Self::Static(template),
            (None, _) => Self::None,
        }
    }

    /// The MSRs the chosen template changes, without checking it against the host.
    #[must_use]
    pub fn msr_indices(self) -> Vec<u32> {
        match self {
            Self::None => Vec::new(),
            Self::Static(name) => static_template(name)
                .map(|t| t.template().msr_indices())
                .unwrap_or_default(),
            Self::Custom(config) => template_of(config).msr_indices(),
        }
    }
}

/// The template ready for the vCPUs.
#[derive(Debug)]
pub struct VcpuCpuConfig {
    /// What KVM supports, with the template's CPUID changes.
    cpuid: CpuId,
    /// The template (its MSR changes are applied when the first vCPU exists).
    template: Template,
    /// The template's MSRs and values, from the first vCPU configured.
    msrs: Option<Vec<kvm_msr_entry>>,
}

impl VcpuCpuConfig {
    /// Check `choice` against this host and apply its CPUID changes to what KVM supports.
    ///
    /// # Errors
    /// [`CpuConfigError`]: a static template for another CPU, a missing KVM capability, or
    /// a CPUID leaf KVM does not have.
    pub fn new(kvm: &Kvm, choice: CpuTemplateChoice<'_>) -> Result<Self, CpuConfigError> {
        let mut cpuid = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(CpuConfigError::SupportedCpuid)?;
        let (template, capabilities) = match choice {
            CpuTemplateChoice::None => (Template::default(), Vec::new()),
            CpuTemplateChoice::Static(name) => match static_template(name) {
                Some(t) => (t.for_host(cpuid.as_slice())?, Vec::new()),
                None => (Template::default(), Vec::new()),
            },
            CpuTemplateChoice::Custom(config) => {
                (template_of(config), config.kvm_capabilities.clone())
            }
        };
        check_kvm_capabilities(kvm, &required_capabilities(&capabilities))?;
        template.apply_to_cpuid(&mut cpuid)?;
        warn_about_boot_msrs(&template);
        Ok(Self {
            cpuid,
            template,
            msrs: None,
        })
    }

    /// The MSRs the template changes: a snapshot must save them too.
    #[must_use]
    pub fn msr_indices(&self) -> Vec<u32> {
        self.template.msr_indices()
    }

    /// Set up `fd`'s CPUID, MSRs and FPU: the template, then the normalisation for `cfg`,
    /// then the boot MSRs.
    ///
    /// # Errors
    /// [`StartMicrovmError`] naming what KVM refused.
    pub fn configure(&mut self, fd: &VcpuFd, cfg: &CpuidConfig) -> Result<(), StartMicrovmError> {
        if self.msrs.is_none() {
            // As in Firecracker, the values the template changes are the first vCPU's, read
            // before its CPUID is set; every vCPU gets the same.
            let current = read_msrs(fd, &self.msr_indices())?;
            let templated = self
                .template
                .apply_to_msrs(&current)
                .map_err(CpuConfigError::Template)?;
            self.msrs = Some(templated);
        }
        let mut cpuid = self.cpuid.clone();
        normalize_cpuid(&mut cpuid, cfg)?;
        fd.set_cpuid2(&cpuid).map_err(StartMicrovmError::Kvm)?;
        write_msrs(fd, self.msrs.as_deref().unwrap_or_default())?;
        // After the template's MSRs: the boot protocol's values win.
        setup_fpu_and_msrs(fd)?;
        Ok(())
    }
}

/// The static template behind an API name; `None` for `CpuTemplate::None`.
#[must_use]
pub fn static_template(name: CpuTemplate) -> Option<StaticTemplate> {
    match name {
        CpuTemplate::C3 => Some(StaticTemplate::C3),
        CpuTemplate::T2 => Some(StaticTemplate::T2),
        CpuTemplate::T2S => Some(StaticTemplate::T2S),
        CpuTemplate::T2CL => Some(StaticTemplate::T2CL),
        CpuTemplate::T2A => Some(StaticTemplate::T2A),
        CpuTemplate::None => None,
    }
}

/// A custom template's CPUID and MSR changes.
#[must_use]
pub fn template_of(config: &CpuConfig) -> Template {
    Template {
        cpuid_modifiers: config.cpuid_modifiers.iter().map(leaf_modifier).collect(),
        msr_modifiers: config.msr_modifiers.iter().map(msr_modifier).collect(),
    }
}

fn leaf_modifier(leaf: &ApiLeaf) -> CpuidLeafModifier {
    CpuidLeafModifier {
        leaf: leaf.leaf,
        subleaf: leaf.subleaf,
        flags: leaf.flags,
        modifiers: leaf
            .modifiers
            .iter()
            .map(|m| CpuidRegisterModifier {
                register: match m.register {
                    ApiRegister::Eax => CpuidRegister::Eax,
                    ApiRegister::Ebx => CpuidRegister::Ebx,
                    ApiRegister::Ecx => CpuidRegister::Ecx,
                    ApiRegister::Edx => CpuidRegister::Edx,
                },
                bits: RegisterBits {
                    filter: m.bitmap.filter,
                    value: m.bitmap.value,
                },
            })
            .collect(),
    }
}

fn msr_modifier(msr: &ApiMsr) -> MsrModifier {
    MsrModifier {
        addr: msr.addr,
        bits: RegisterBits {
            filter: msr.bitmap.filter,
            value: msr.bitmap.value,
        },
    }
}

/// [`DEFAULT_KVM_CAPABILITIES`] with a template's additions and removals, in order.
#[must_use]
pub fn required_capabilities(changes: &[KvmCapability]) -> Vec<u32> {
    let mut caps = DEFAULT_KVM_CAPABILITIES.to_vec();
    for change in changes {
        match *change {
            KvmCapability::Add(cap) if !caps.contains(&cap) => caps.push(cap),
            KvmCapability::Remove(cap) => caps.retain(|&c| c != cap),
            KvmCapability::Add(_) => {}
        }
    }
    caps
}

/// `KVM_CHECK_EXTENSION` for each of `caps`.
///
/// # Errors
/// [`CpuConfigError::MissingKvmCapability`] naming the first one KVM lacks.
pub fn check_kvm_capabilities(kvm: &Kvm, caps: &[u32]) -> Result<(), CpuConfigError> {
    match caps
        .iter()
        .find(|&&cap| kvm.check_extension_raw(libc::c_ulong::from(cap)) <= 0)
    {
        Some(&missing) => Err(CpuConfigError::MissingKvmCapability(missing)),
        None => Ok(()),
    }
}

/// The boot protocol sets some MSRs after the template: say so when the template changes
/// one of them, since its change will not be seen.
fn warn_about_boot_msrs(template: &Template) {
    let boot = boot_msr_entries();
    for index in template.msr_indices() {
        if boot.iter().any(|e| e.index == index) {
            log::warn!(
                "The CPU template changes MSR {index:#x}, which the boot protocol sets after it: \
                 the boot value is used."
            );
        }
    }
}

fn msr_list(entries: &[kvm_msr_entry], op: &'static str) -> Result<Msrs, CpuConfigError> {
    Msrs::from_entries(entries).map_err(|e| CpuConfigError::MsrIoctl(op, format!("{e:?}")))
}

/// `indices` as KVM reads them from `fd`.
fn read_msrs(fd: &VcpuFd, indices: &[u32]) -> Result<Vec<kvm_msr_entry>, CpuConfigError> {
    if indices.is_empty() {
        return Ok(Vec::new());
    }
    let entries: Vec<kvm_msr_entry> = indices
        .iter()
        .map(|&index| kvm_msr_entry {
            index,
            ..Default::default()
        })
        .collect();
    let mut msrs = msr_list(&entries, "get")?;
    let read = fd
        .get_msrs(&mut msrs)
        .map_err(|e| CpuConfigError::MsrIoctl("get", e.to_string()))?;
    // KVM stops at the first MSR it cannot read.
    if let Some(&unreadable) = indices.get(read) {
        return Err(CpuConfigError::MsrUnreadable(unreadable));
    }
    Ok(msrs.as_slice().to_vec())
}

fn write_msrs(fd: &VcpuFd, msrs: &[kvm_msr_entry]) -> Result<(), CpuConfigError> {
    if msrs.is_empty() {
        return Ok(());
    }
    let written = fd
        .set_msrs(&msr_list(msrs, "set")?)
        .map_err(|e| CpuConfigError::MsrIoctl("set", e.to_string()))?;
    match msrs.get(written) {
        Some(refused) => Err(CpuConfigError::MsrRefused(refused.index)),
        None => Ok(()),
    }
}

#[cfg(test)]
#[path = "cpu_config_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "cpu_config_api_tests.rs"]
mod api_tests;
