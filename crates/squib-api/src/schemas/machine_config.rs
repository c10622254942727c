//! `PUT`/`PATCH /machine-config`: vCPUs, memory, SMT, huge pages, static CPU templates.

use serde::{Deserialize, Serialize};

use super::error::SchemaError;

use crate::error::RequestError;
use crate::routes::{parse, RouteInput};

/// Most vCPUs Firecracker supports.
pub const MAX_SUPPORTED_VCPUS: u8 = 32;

/// Firecracker's deprecated static CPU templates on x86_64, in the order its parse errors
/// list them (Arm's `V1N1` is an unknown variant here, as in Firecracker on x86_64).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum CpuTemplate {
    /// Intel: like an AWS C3 instance.
    C3,
    /// Intel: like an AWS T2 instance.
    T2,
    /// Intel: T2, and safe snapshot migration between Skylake and Cascade Lake.
    T2S,
    /// No template.
    None,
    /// Intel: close to Cascade Lake, the instruction-set match of T2A.
    T2CL,
    /// AMD Milan: the instruction-set match of T2CL.
    T2A,
}

/// Guest memory backing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
pub enum HugePages {
    /// Normal 4 KiB pages.
    #[default]
    None,
    /// Transparent huge pages (`madvise(MADV_HUGEPAGE)`).
    Transparent,
    /// hugetlbfs 2 MiB pages.
    #[serde(rename = "2M")]
    Hugetlbfs2M,
}

impl HugePages {
    fn needs_2mib_multiple(self) -> bool {
        !matches!(self, Self::None)
    }
}

/// `PUT /machine-config` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMachineConfig {
    vcpu_count: u8,
    mem_size_mib: usize,
    #[serde(default)]
    smt: bool,
    #[serde(default)]
    cpu_template: Option<CpuTemplate>,
    #[serde(default)]
    track_dirty_pages: bool,
    #[serde(default)]
    huge_pages: HugePages,
}

/// A validated machine configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MachineConfig {
    /// vCPUs, 1..=32 (1 or even with SMT).
    pub vcpu_count: u8,
    /// Guest memory in MiB.
    pub mem_size_mib: usize,
    /// Simultaneous multithreading.
    pub smt: bool,
    /// Static CPU template (deprecated); omitted from JSON unless a real template is set.
    #[serde(skip_serializing_if = "no_template")]
    pub cpu_template: Option<CpuTemplate>,
    /// KVM dirty-page tracking for diff snapshots.
    pub track_dirty_pages: bool,
    /// Memory backing.
    pub huge_pages: HugePages,
}

fn no_template(t: &Option<CpuTemplate>) -> bool {
    matches!(t, None | Some(CpuTemplate::None))
}

impl Default for MachineConfig {
    fn default() -> Self {
        Self {
            vcpu_count: 1,
            mem_size_mib: 128,
            smt: false,
            cpu_template: None,
            track_dirty_pages: false,
            huge_pages: HugePages::None,
        }
    }
}

impl MachineConfig {
    /// Check the cross-field rules.
    ///
    /// # Errors
    /// [`SchemaError::InvalidVcpuCount`] or [`SchemaError::InvalidMemorySize`].
    pub fn validate(&self) -> Result<(), SchemaError> {
        let n = self.vcpu_count;
        if n == 0 || n > MAX_SUPPORTED_VCPUS || (self.smt && n > 1 && n % 2 == 1) {
            return Err(SchemaError::InvalidVcpuCount);
        }
        if self.mem_size_mib == 0
            || (self.huge_pages.needs_2mib_multiple() && self.mem_size_mib % 2 != 0)
        {
            return Err(SchemaError::InvalidMemorySize);
        }
        Ok(())
    }

    /// `true` when the deprecated `cpu_template` field was given.
    #[must_use]
    pub fn uses_deprecated_cpu_template(&self) -> bool {
        self.cpu_template.is_some()
    }
}

impl TryFrom<RawMachineConfig> for MachineConfig {
    type Error = SchemaError;

    fn try_from(raw: RawMachineConfig) -> Result<Self, SchemaError> {
        let config = Self {
            vcpu_count: raw.vcpu_count,
            mem_size_mib: raw.mem_size_mib,
            smt: raw.smt,
            cpu_template: raw.cpu_template,
            track_dirty_pages: raw.track_dirty_pages,
            huge_pages: raw.huge_pages,
        };
        config.validate()?;
        Ok(config)
    }
}

/// `PATCH /machine-config` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMachineConfigPatch {
    vcpu_count: Option<u8>,
    mem_size_mib: Option<usize>,
    smt: Option<bool>,
    cpu_template: Option<CpuTemplate>,
    track_dirty_pages: Option<bool>,
    huge_pages: Option<HugePages>,
}

/// A validated, non-empty machine configuration patch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MachineConfigPatch {
    /// New vCPU count.
    pub vcpu_count: Option<u8>,
    /// New memory size.
    pub mem_size_mib: Option<usize>,
    /// New SMT setting.
    pub smt: Option<bool>,
    /// New static template.
    pub cpu_template: Option<CpuTemplate>,
    /// New dirty tracking setting.
    pub track_dirty_pages: Option<bool>,
    /// New memory backing.
    pub huge_pages: Option<HugePages>,
}

impl MachineConfigPatch {
    /// The patch applied over `current`, validated as a whole.
    ///
    /// # Errors
    /// The [`MachineConfig::validate`] errors of the result.
    pub fn apply_to(&self, current: &MachineConfig) -> Result<MachineConfig, SchemaError> {
        let config = MachineConfig {
            vcpu_count: self.vcpu_count.unwrap_or(current.vcpu_count),
            mem_size_mib: self.mem_size_mib.unwrap_or(current.mem_size_mib),
            smt: self.smt.unwrap_or(current.smt),
            cpu_template: self.cpu_template.or(current.cpu_template),
            track_dirty_pages: self.track_dirty_pages.unwrap_or(current.track_dirty_pages),
            huge_pages: self.huge_pages.unwrap_or(current.huge_pages),
        };
        config.validate()?;
        Ok(config)
    }
}

impl TryFrom<RawMachineConfigPatch> for MachineConfigPatch {
    type Error = SchemaError;

    fn try_from(raw: RawMachineConfigPatch) -> Result<Self, SchemaError> {
        let patch = Self {
            vcpu_count: raw.vcpu_count,
            mem_size_mib: raw.mem_size_mib,
            smt: raw.smt,
            cpu_template: raw.cpu_template,
            track_dirty_pages: raw.track_dirty_pages,
            huge_pages: raw.huge_pages,
        };
        if patch == Self::default() {
            return Err(SchemaError::EmptyPatch);
        }
        if let Some(n) = patch.vcpu_count {
            if n == 0 || n > MAX_SUPPORTED_VCPUS {
                return Err(SchemaError::InvalidVcpuCount);
            }
        }
        if patch.mem_size_mib == Some(0) {
            return Err(SchemaError::InvalidMemorySize);
        }
        Ok(patch)
    }
}

/// `PUT /machine-config`: a validated body, with the deprecation warning for `cpu_template`.
pub(crate) fn parse_put(input: &RouteInput<'_>) -> Result<MachineConfig, RequestError> {
    let config: MachineConfig = parse::validated::<RawMachineConfig, _>(input)?;
    if config.uses_deprecated_cpu_template() {
        input.deprecate("PUT /machine-config: cpu_template field is deprecated.");
    }
    Ok(config)
}

/// `PATCH /machine-config`: a patch that changes nothing is an empty PATCH; `cpu_template`
/// gets the same deprecation warning as in a PUT.
pub(crate) fn parse_patch(input: &RouteInput<'_>) -> Result<MachineConfigPatch, RequestError> {
    let raw = parse::json::<RawMachineConfigPatch>(input)?;
    if raw.cpu_template.is_some() {
        input.deprecate("PATCH /machine-config: cpu_template field is deprecated.");
    }
    MachineConfigPatch::try_from(raw).map_err(|source| match source {
        SchemaError::EmptyPatch => RequestError::EmptyPatch,
        source => RequestError::Invalid {
            prefix: input.fault_prefix,
            source,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<MachineConfig, SchemaError> {
        MachineConfig::try_from(serde_json::from_str::<RawMachineConfig>(json).unwrap())
    }

    #[test]
    fn vcpu_rules() {
        assert!(parse(r#"{"vcpu_count":1,"mem_size_mib":128,"smt":true}"#).is_ok());
        assert!(parse(r#"{"vcpu_count":32,"mem_size_mib":128}"#).is_ok());
        assert_eq!(
            parse(r#"{"vcpu_count":0,"mem_size_mib":128}"#),
            Err(SchemaError::InvalidVcpuCount)
        );
        assert_eq!(
            parse(r#"{"vcpu_count":33,"mem_size_mib":128}"#),
            Err(SchemaError::InvalidVcpuCount)
        );
        assert_eq!(
            parse(r#"{"vcpu_count":3,"mem_size_mib":128,"smt":true}"#),
            Err(SchemaError::InvalidVcpuCount)
        );
    }

    #[test]
    fn memory_rules() {
        assert_eq!(
            parse(r#"{"vcpu_count":1,"mem_size_mib":0}"#),
            Err(SchemaError::InvalidMemorySize)
        );
        assert_eq!(
            parse(r#"{"vcpu_count":1,"mem_size_mib":129,"huge_pages":"2M"}"#),
            Err(SchemaError::InvalidMemorySize)
        );
        assert!(parse(r#"{"vcpu_count":1,"mem_size_mib":129}"#).is_ok());
    }

    #[test]
    fn serialises_like_firecracker() {
        let json = serde_json::to_string(&MachineConfig::default()).unwrap();
        assert_eq!(
            json,
            r#"{"vcpu_count":1,"mem_size_mib":128,"smt":false,"track_dirty_pages":false,"huge_pages":"None"}"#
        );
    }

    #[test]
    fn static_templates_are_firecrackers_x86_ones() {
        let json = r#"{"vcpu_count":1,"mem_size_mib":128,"cpu_template":"V1N1"}"#;
        let err = serde_json::from_str::<RawMachineConfig>(json).unwrap_err();
        assert!(
            err.to_string().starts_with(
                "unknown variant `V1N1`, expected one of `C3`, `T2`, `T2S`, `None`, `T2CL`, `T2A`"
            ),
            "{err}"
        );
        let t2a = parse(r#"{"vcpu_count":1,"mem_size_mib":128,"cpu_template":"T2A"}"#).unwrap();
        assert_eq!(t2a.cpu_template, Some(CpuTemplate::T2A));
        let json = serde_json::to_value(&t2a).unwrap();
        assert_eq!(json["cpu_template"], "T2A");
    }

    #[test]
    fn patch_is_revalidated_over_current() {
        let raw: RawMachineConfigPatch =
            serde_json::from_str(r#"{"smt":true,"vcpu_count":3}"#).unwrap();
        let patch = MachineConfigPatch::try_from(raw).unwrap();
        assert_eq!(
            patch.apply_to(&MachineConfig::default()),
            Err(SchemaError::InvalidVcpuCount)
        );
        let raw: RawMachineConfigPatch = serde_json::from_str("{}").unwrap();
        assert_eq!(
            MachineConfigPatch::try_from(raw),
            Err(SchemaError::EmptyPatch)
        );
    }
}
