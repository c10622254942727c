//! `PUT /cpu-config`: a custom CPU template (x86_64 form: KVM capabilities, CPUID and MSR
//! modifiers). Numbers may be decimal, `0x` hex or `0b` binary strings; bitmaps are `0b`
//! followed by one of `0`, `1`, `x` (leave unchanged) per bit.

use serde::{Deserialize, Serialize};

use super::error::SchemaError;

/// A KVM capability to require or to ignore.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum KvmCapability {
    /// `"N"`: require capability N.
    Add(u32),
    /// `"!N"`: do not require capability N.
    Remove(u32),
}

/// A CPUID output register.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
#[allow(missing_docs)]
pub enum CpuidRegister {
    Eax,
    Ebx,
    Ecx,
    Edx,
}

/// Which bits to set: `value` where `filter` is 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RegisterBitmap {
    /// Bits the template controls.
    pub filter: u64,
    /// Their values.
    pub value: u64,
}

/// One CPUID register change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CpuidRegisterModifier {
    /// Register.
    pub register: CpuidRegister,
    /// Bits.
    pub bitmap: RegisterBitmap,
}

/// Changes to one CPUID leaf.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CpuidLeafModifier {
    /// Leaf (EAX in).
    pub leaf: u32,
    /// Subleaf (ECX in).
    pub subleaf: u32,
    /// KVM CPUID entry flags.
    pub flags: i32,
    /// Register changes.
    pub modifiers: Vec<CpuidRegisterModifier>,
}

/// One MSR change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MsrModifier {
    /// MSR index.
    pub addr: u32,
    /// Bits.
    pub bitmap: RegisterBitmap,
}

/// A validated custom CPU template.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CpuConfig {
    /// KVM capabilities.
    pub kvm_capabilities: Vec<KvmCapability>,
    /// CPUID changes.
    pub cpuid_modifiers: Vec<CpuidLeafModifier>,
    /// MSR changes.
    pub msr_modifiers: Vec<MsrModifier>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCpuidRegisterModifier {
    register: CpuidRegister,
    bitmap: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCpuidLeafModifier {
    leaf: String,
    subleaf: String,
    flags: i32,
    modifiers: Vec<RawCpuidRegisterModifier>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMsrModifier {
    addr: String,
    bitmap: String,
}

/// `PUT /cpu-config` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCpuConfig {
    #[serde(default)]
    kvm_capabilities: Vec<String>,
    #[serde(default)]
    cpuid_modifiers: Vec<RawCpuidLeafModifier>,
    #[serde(default)]
    msr_modifiers: Vec<RawMsrModifier>,
}

fn parse_u32(field: &'static str, s: &str) -> Result<u32, SchemaError> {
    let parsed = if let Some(hex) = s.strip_prefix("0x") {
        u32::from_str_radix(hex, 16)
    } else if let Some(bin) = s.strip_prefix("0b") {
        u32::from_str_radix(bin, 2)
    } else {
        s.parse()
    };
    parsed.map_err(|_| SchemaError::InvalidCpuTemplateNumber {
        field,
        value: s.to_owned(),
    })
}

fn parse_bitmap(s: &str, bits: usize) -> Result<RegisterBitmap, SchemaError> {
    let invalid = || SchemaError::InvalidCpuTemplateBitmap {
        value: s.to_owned(),
        bits,
    };
    let digits = s.strip_prefix("0b").ok_or_else(invalid)?.replace('_', "");
    if digits.len() != bits {
        return Err(invalid());
    }
    let mut bitmap = RegisterBitmap {
        filter: 0,
        value: 0,
    };
    for (i, c) in digits.bytes().rev().enumerate() {
        match c {
            b'0' => bitmap.filter |= 1 << i,
            b'1' => {
                bitmap.filter |= 1 << i;
                bitmap.value |= 1 << i;
            }
            b'x' | b'X' => {}
            _ => return Err(invalid()),
        }
    }
    Ok(bitmap)
}

fn parse_capability(s: &str) -> Result<KvmCapability, SchemaError> {
    let invalid = || SchemaError::InvalidKvmCapability(s.to_owned());
    match s.strip_prefix('!') {
        Some(n) => n.parse().map(KvmCapability::Remove).map_err(|_| invalid()),
        None => s.parse().map(KvmCapability::Add).map_err(|_| invalid()),
    }
}

fn parse_leaf(raw: RawCpuidLeafModifier) -> Result<CpuidLeafModifier, SchemaError> {
    let modifiers = raw
        .modifiers
        .into_iter()
        .map(|m| {
            Ok(CpuidRegisterModifier {
                register: m.register,
                bitmap: parse_bitmap(&m.bitmap, 32)?,
            })
        })
        .collect::<Result<_, SchemaError>>()?;
    Ok(CpuidLeafModifier {
        leaf: parse_u32("leaf", &raw.leaf)?,
        subleaf: parse_u32("subleaf", &raw.subleaf)?,
        flags: raw.flags,
        modifiers,
    })
}

impl TryFrom<RawCpuConfig> for CpuConfig {
    type Error = SchemaError;

    fn try_from(raw: RawCpuConfig) -> Result<Self, SchemaError> {
        Ok(Self {
            kvm_capabilities: raw
                .kvm_capabilities
                .iter()
                .map(|c| parse_capability(c))
                .collect::<Result<_, _>>()?,
            cpuid_modifiers: raw
                .cpuid_modifiers
                .into_iter()
                .map(parse_leaf)
                .collect::<Result<_, _>>()?,
            msr_modifiers: raw
                .msr_modifiers
                .into_iter()
                .map(|m| {
                    Ok(MsrModifier {
                        addr: parse_u32("addr", &m.addr)?,
                        bitmap: parse_bitmap(&m.bitmap, 64)?,
                    })
                })
                .collect::<Result<_, SchemaError>>()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_numbers_bitmaps_and_capabilities() {
        let json = format!(
            r#"{{"kvm_capabilities":["121","!56"],"cpuid_modifiers":[{{"leaf":"0x1","subleaf":"0b0","flags":0,"modifiers":[{{"register":"ecx","bitmap":"0b{}10"}}]}}],"msr_modifiers":[{{"addr":"10","bitmap":"0b{}"}}]}}"#,
            "x".repeat(30),
            "1".repeat(64)
        );
        let config =
            CpuConfig::try_from(serde_json::from_str::<RawCpuConfig>(&json).unwrap()).unwrap();
        assert_eq!(
            config.kvm_capabilities,
            vec![KvmCapability::Add(121), KvmCapability::Remove(56)]
        );
        assert_eq!(
            config.cpuid_modifiers[0].modifiers[0].bitmap,
            RegisterBitmap {
                filter: 3,
                value: 2
            }
        );
        assert_eq!(config.msr_modifiers[0].bitmap.value, u64::MAX);
        assert!(parse_bitmap("0b10", 32).is_err());
        assert!(parse_capability("abc").is_err());
        assert!(parse_u32("leaf", "0xzz").is_err());
    }
}
