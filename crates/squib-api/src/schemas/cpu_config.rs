//! `PUT /cpu-config`: a custom CPU template (x86_64 form): KVM capabilities to require or not
//! to require, and changes to CPUID leaves and MSRs.
//!
//! The template language is Firecracker's, and so are its parse errors (they surface as
//! `An error occurred when deserializing the json body of a request: ...`):
//! - leaves, subleaves and MSR addresses are strings with a `0x` or `0b` prefix;
//! - a bitmap is `0b` (optional) followed by one `0`, `1` or `x` (leave as is) per bit, most
//!   significant first; `_` separates groups and is ignored; a short bitmap is right-aligned
//!   and its missing high bits are `x`;
//! - KVM capabilities are decimal, `"N"` to require capability N at boot and `"!N"` to drop
//!   it from the capabilities squib requires by default.
//!
//! A template serialises back into the same language (hexadecimal numbers, full-width
//! bitmaps), so `GET /vm/config` output can be given back as a configuration file.

use std::fmt;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A KVM capability to require, or a default one not to require.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvmCapability {
    /// `"N"`: capability N must be present at boot.
    Add(u32),
    /// `"!N"`: capability N need not be present.
    Remove(u32),
}

/// A CPUID output register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum CpuidRegister {
    Eax,
    Ebx,
    Ecx,
    Edx,
}

/// The bits a template controls in a register (`filter`) and the values it gives them
/// (`value`, always within `filter`): the register becomes `(old & !filter) | value`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RegisterBitmap<T> {
    /// Bits the template sets (`0` or `1` in the bitmap).
    pub filter: T,
    /// Their values (`1` in the bitmap).
    pub value: T,
}

/// One register of a CPUID leaf and the bits to change in it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct CpuidRegisterModifier {
    /// The register.
    pub register: CpuidRegister,
    /// The bits.
    pub bitmap: RegisterBitmap<u32>,
}

/// Changes to one CPUID leaf and subleaf.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct CpuidLeafModifier {
    /// Leaf (EAX in).
    #[serde(deserialize_with = "prefixed_u32", serialize_with = "hex")]
    pub leaf: u32,
    /// Subleaf (ECX in).
    #[serde(deserialize_with = "prefixed_u32", serialize_with = "hex")]
    pub subleaf: u32,
    /// The KVM CPUID entry flags the leaf gets (`KVM_CPUID_FLAG_*`).
    pub flags: u32,
    /// The register changes, applied in order.
    pub modifiers: Vec<CpuidRegisterModifier>,
}

/// Changes to one MSR.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct MsrModifier {
    /// The MSR index.
    #[serde(deserialize_with = "prefixed_u32", serialize_with = "hex")]
    pub addr: u32,
    /// The bits.
    pub bitmap: RegisterBitmap<u64>,
}

/// A custom CPU template.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CpuConfig {
    /// Changes to the KVM capabilities checked at boot.
    #[serde(default)]
    pub kvm_capabilities: Vec<KvmCapability>,
    /// CPUID changes.
    #[serde(default)]
    pub cpuid_modifiers: Vec<CpuidLeafModifier>,
    /// MSR changes.
    #[serde(default)]
    pub msr_modifiers: Vec<MsrModifier>,
}

/// A number with a `0x` or `0b` prefix (Firecracker takes no decimal here).
fn parse_prefixed_u32(text: &str) -> Result<u32, String> {
    let (digits, radix) = if let Some(hex) = text.strip_prefix("0x") {
        (hex, 16)
    } else if let Some(bin) = text.strip_prefix("0b") {
        (bin, 2)
    } else {
        return Err(format!(
            "No supported number system prefix found in value [{text}]. Make sure to prefix \
             the number with '0x' for hexadecimal numbers or '0b' for binary numbers."
        ));
    };
    u32::from_str_radix(digits, radix).map_err(|e| {
        format!("Failed to parse string [{text}] as a number for CPU template - {e:?}")
    })
}

fn prefixed_u32<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_prefixed_u32(&text).map_err(D::Error::custom)
}

fn hex<S: Serializer>(value: &u32, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format!("{value:#x}"))
}

/// A bitmap string as `(filter, value)` for a register of `bits` bits.
///
/// Read from the right: each `0`/`1`/`x` is the next bit up, `_` is skipped. Any character
/// once `bits` bits are read, `_` included, makes the string too long (Firecracker's rule).
fn parse_bitmap(text: &str, bits: u32) -> Result<(u64, u64), String> {
    let digits = text.strip_prefix("0b").unwrap_or(text);
    let (mut filter, mut value) = (0u64, 0u64);
    let mut bit = 0u32;
    for &c in digits.as_bytes().iter().rev() {
        if bit == bits {
            return Err(format!(
                "Failed to parse string [{text}] as a bitmap - string is too long"
            ));
        }
        match c {
            b'_' => continue,
            b'x' => {}
            b'0' => filter |= 1 << bit,
            b'1' => {
                filter |= 1 << bit;
                value |= 1 << bit;
            }
            other => {
                return Err(format!(
                    "Failed to parse string [{text}] as a bitmap - unknown character: {other}"
                ))
            }
        }
        bit += 1;
    }
    Ok((filter, value))
}

/// The register widths a bitmap can have.
pub trait RegisterWidth: Copy + Into<u64> + TryFrom<u64> {
    /// Bits in the register.
    const BITS: u32;
}

impl RegisterWidth for u32 {
    const BITS: u32 = u32::BITS;
}

impl RegisterWidth for u64 {
    const BITS: u32 = u64::BITS;
}

impl<'de, T: RegisterWidth> Deserialize<'de> for RegisterBitmap<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let (filter, value) = parse_bitmap(&text, T::BITS).map_err(D::Error::custom)?;
        // `parse_bitmap` sets no bit at or above `T::BITS`, so both fit.
        let narrow = |bits: u64| {
            T::try_from(bits).map_err(|_| D::Error::custom(format!("bitmap [{text}] overflows")))
        };
        Ok(Self {
            filter: narrow(filter)?,
            value: narrow(value)?,
        })
    }
}

impl<T: RegisterWidth> fmt::Display for RegisterBitmap<T> {
    /// `0b` and one `0`, `1` or `x` per bit, most significant first.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (filter, value) = (self.filter.into(), self.value.into());
        f.write_str("0b")?;
        for bit in (0..T::BITS).rev() {
            let c = match (filter >> bit & 1, value >> bit & 1) {
                (0, _) => 'x',
                (_, 0) => '0',
                _ => '1',
            };
            write!(f, "{c}")?;
        }
        Ok(())
    }
}

impl<T: RegisterWidth> Serialize for RegisterBitmap<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for CpuidRegister {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match String::deserialize(deserializer)?.as_str() {
            "eax" => Ok(Self::Eax),
            "ebx" => Ok(Self::Ebx),
            "ecx" => Ok(Self::Ecx),
            "edx" => Ok(Self::Edx),
            _ => Err(D::Error::custom(
                "Invalid CPUID register. Must be one of [eax, ebx, ecx, edx]",
            )),
        }
    }
}

impl Serialize for CpuidRegister {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(match self {
            Self::Eax => "eax",
            Self::Ebx => "ebx",
            Self::Ecx => "ecx",
            Self::Edx => "edx",
        })
    }
}

impl<'de> Deserialize<'de> for KvmCapability {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let invalid = |e: std::num::ParseIntError| {
            D::Error::custom(format!(
                "Failed to parse string [{text}] as a kvm capability - can not convert to numeric: {e}"
            ))
        };
        match text.strip_prefix('!') {
            Some(n) => n.parse().map(Self::Remove).map_err(invalid),
            None => text.parse().map(Self::Add).map_err(invalid),
        }
    }
}

impl Serialize for KvmCapability {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Add(n) => serializer.collect_str(n),
            Self::Remove(n) => serializer.collect_str(&format_args!("!{n}")),
        }
    }
}

#[cfg(test)]
#[path = "cpu_config_tests.rs"]
mod tests;
