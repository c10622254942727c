//! `PUT`/`PATCH /hotplug/memory`: the virtio-mem region.

use serde::{Deserialize, Serialize};

use super::error::SchemaError;

/// `PUT /hotplug/memory` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHotplugMemory {
    total_size_mib: usize,
    #[serde(default = "default_block")]
    block_size_mib: usize,
    #[serde(default = "default_slot")]
    slot_size_mib: usize,
}

fn default_block() -> usize {
    2
}

fn default_slot() -> usize {
    128
}

/// A validated virtio-mem configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HotplugMemoryConfig {
    /// Size of the hotpluggable region.
    pub total_size_mib: usize,
    /// Plug granularity.
    pub block_size_mib: usize,
    /// KVM memory slot size.
    pub slot_size_mib: usize,
}

impl TryFrom<RawHotplugMemory> for HotplugMemoryConfig {
    type Error = SchemaError;

    fn try_from(raw: RawHotplugMemory) -> Result<Self, SchemaError> {
        if raw.block_size_mib < 2 || !raw.block_size_mib.is_power_of_two() {
            return Err(SchemaError::InvalidHotplugBlockSize);
        }
        if raw.slot_size_mib < 128 || raw.slot_size_mib % raw.block_size_mib != 0 {
            return Err(SchemaError::InvalidHotplugSlotSize);
        }
        if raw.total_size_mib == 0 || raw.total_size_mib % raw.slot_size_mib != 0 {
            return Err(SchemaError::InvalidHotplugTotalSize);
        }
        Ok(Self {
            total_size_mib: raw.total_size_mib,
            block_size_mib: raw.block_size_mib,
            slot_size_mib: raw.slot_size_mib,
        })
    }
}

/// `PATCH /hotplug/memory` body.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HotplugMemoryUpdate {
    /// Memory the guest should have plugged.
    pub requested_size_mib: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<HotplugMemoryConfig, SchemaError> {
        HotplugMemoryConfig::try_from(serde_json::from_str::<RawHotplugMemory>(json).unwrap())
    }

    #[test]
    fn sizes_follow_virtio_mem_rules() {
        assert_eq!(
            parse(r#"{"total_size_mib":1024}"#).unwrap().slot_size_mib,
            128
        );
        assert_eq!(
            parse(r#"{"total_size_mib":1024,"block_size_mib":3}"#),
            Err(SchemaError::InvalidHotplugBlockSize)
        );
        assert_eq!(
            parse(r#"{"total_size_mib":1024,"slot_size_mib":64}"#),
            Err(SchemaError::InvalidHotplugSlotSize)
        );
        assert_eq!(
            parse(r#"{"total_size_mib":100}"#),
            Err(SchemaError::InvalidHotplugTotalSize)
        );
    }
}
