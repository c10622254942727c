//! CPU templates: changes to the CPUID leaves and MSRs a guest sees, so that guests on
//! different hosts see the same CPU features.
//!
//! A [`Template`] lists CPUID leaf modifiers and MSR modifiers; each forces some bits of a
//! register to 0 or 1 ([`RegisterBits`]) and leaves the others as KVM reports them. As in
//! Firecracker, a template is applied first, to what KVM offers (`KVM_GET_SUPPORTED_CPUID`
//! and the vCPU's MSRs as `KVM_GET_MSRS` reads them); squib's CPUID normalisation and its
//! boot MSRs come after and win where they touch the same bits.
//!
//! Templates come from the user (a custom template, parsed by the API) or from
//! [`static_templates`]: Firecracker's built-in C3, T2, T2S, T2CL (Intel) and T2A (AMD),
//! each allowed only on the host CPUs it was made for.

pub mod static_templates;

use std::ops::{BitAnd, BitOr, Not};

use kvm_bindings::{kvm_cpuid_entry2, kvm_msr_entry, CpuId};

/// The bits a modifier controls in a register (`filter`) and the values it gives them
/// (`value`): the register becomes `(old & !filter) | (value & filter)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RegisterBits<T> {
    /// The bits forced.
    pub filter: T,
    /// Their values.
    pub value: T,
}

impl<T> RegisterBits<T>
where
    T: Copy + Not<Output = T> + BitAnd<Output = T> + BitOr<Output = T>,
{
    /// `old` with the filtered bits replaced.
    #[must_use]
    pub fn apply(&self, old: T) -> T {
        (old & !self.filter) | (self.value & self.filter)
    }
}

/// A CPUID output register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum CpuidRegister {
    Eax,
    Ebx,
    Ecx,
    Edx,
}

/// Bits to force in one register of a CPUID leaf.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuidRegisterModifier {
    /// The register.
    pub register: CpuidRegister,
    /// The bits.
    pub bits: RegisterBits<u32>,
}

/// Changes to one CPUID leaf and subleaf.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuidLeafModifier {
    /// Leaf (EAX in).
    pub leaf: u32,
    /// Subleaf (ECX in).
    pub subleaf: u32,
    /// The KVM entry flags the leaf gets (`KVM_CPUID_FLAG_*`).
    pub flags: u32,
    /// The register changes, applied in order.
    pub modifiers: Vec<CpuidRegisterModifier>,
}

/// Bits to force in one MSR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsrModifier {
    /// The MSR index.
    pub addr: u32,
    /// The bits.
    pub bits: RegisterBits<u64>,
}

/// A CPU template: CPUID and MSR changes. The default template changes nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Template {
    /// CPUID changes, applied in order.
    pub cpuid_modifiers: Vec<CpuidLeafModifier>,
    /// MSR changes, applied in order.
    pub msr_modifiers: Vec<MsrModifier>,
}

/// Why a template cannot be applied to what KVM offers (Firecracker's texts).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The template changes a CPUID leaf KVM does not offer.
    #[error(
        "Template changes a CPUID entry not supported by KVM: Leaf: {leaf:x}, Subleaf: {subleaf:x}"
    )]
    CpuidEntryNotSupported {
        /// The leaf.
        leaf: u32,
        /// The subleaf.
        subleaf: u32,
    },
    /// The template changes an MSR whose value KVM did not give.
    #[error("Template changes an MSR entry not supported by KVM: Register Address: {0:x}")]
    MsrNotSupported(u32),
}

impl Template {
    /// Whether the template changes nothing.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.cpuid_modifiers.is_empty() && self.msr_modifiers.is_empty()
    }

    /// Apply the CPUID modifiers to `cpuid` (what `KVM_GET_SUPPORTED_CPUID` offers): each
    /// named leaf gets the template's flags and bits. No leaf is added.
    ///
    /// # Errors
    /// [`TemplateError::CpuidEntryNotSupported`] for the first leaf `cpuid` lacks; `cpuid`
    /// may then hold the changes made before it.
    pub fn apply_to_cpuid(&self, cpuid: &mut CpuId) -> Result<(), TemplateError> {
        let entries = cpuid.as_mut_slice();
        for leaf in &self.cpuid_modifiers {
            let entry = entries
                .iter_mut()
                .find(|e| e.function == leaf.leaf && e.index == leaf.subleaf)
                .ok_or(TemplateError::CpuidEntryNotSupported {
                    leaf: leaf.leaf,
                    subleaf: leaf.subleaf,
                })?;
            entry.flags = leaf.flags;
            for modifier in &leaf.modifiers {
                let register = register_mut(entry, modifier.register);
                *register = modifier.bits.apply(*register);
            }
        }
        Ok(())
    }

    /// The MSRs the template changes, each once, in the order it names them.
    #[must_use]
    pub fn msr_indices(&self) -> Vec<u32> {
        let mut indices: Vec<u32> = Vec::with_capacity(self.msr_modifiers.len());
        for modifier in &self.msr_modifiers {
            if !indices.contains(&modifier.addr) {
                indices.push(modifier.addr);
            }
        }
        indices
    }

    /// The template's MSRs with their new values, from `current` (their values as KVM
    /// reads them), in [`Template::msr_indices`] order.
    ///
    /// # Errors
    /// [`TemplateError::MsrNotSupported`] for the first MSR `current` lacks.
    pub fn apply_to_msrs(
        &self,
        current: &[kvm_msr_entry],
    ) -> Result<Vec<kvm_msr_entry>, TemplateError> {
        let mut msrs = Vec::with_capacity(self.msr_modifiers.len());
        for index in self.msr_indices() {
            let base = current
                .iter()
                .find(|e| e.index == index)
                .ok_or(TemplateError::MsrNotSupported(index))?;
            let data = self
                .msr_modifiers
                .iter()
                .filter(|m| m.addr == index)
                .fold(base.data, |data, m| m.bits.apply(data));
            msrs.push(kvm_msr_entry {
                index,
                data,
                ..Default::default()
            });
        }
        Ok(msrs)
    }
}

fn register_mut(entry: &mut kvm_cpuid_entry2, register: CpuidRegister) -> &mut u32 {
    match register {
        CpuidRegister::Eax => &mut entry.eax,
        CpuidRegister::Ebx => &mut entry.ebx,
        CpuidRegister::Ecx => &mut entry.ecx,
        CpuidRegister::Edx => &mut entry.edx,
    }
}

#[cfg(test)]
mod tests;
