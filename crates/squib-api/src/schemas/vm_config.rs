//! The whole-VM document: the `--config-file` format and the `GET /vm/config` answer.
//!
//! Top-level keys are kebab-case; unknown top-level keys are ignored (as Firecracker), every
//! section goes through the same `Raw*` type and `TryFrom` validation as its HTTP route.
//! `logger` and `metrics` always serialise as `null`, as Firecracker does. `cpu-config` shows
//! the custom CPU template that was set (Firecracker always shows `null`), so that the
//! document, given back as a configuration file or kept in a snapshot, describes the same
//! CPU.

use serde::{Deserialize, Serialize, Serializer};

use super::balloon::{BalloonConfig, RawBalloon};
use super::boot_source::{BootSourceConfig, RawBootSource};
use super::cpu_config::CpuConfig;
use super::drive::{DriveConfig, RawDrive};
use super::entropy::{EntropyConfig, RawEntropy};
use super::error::SchemaError;
use super::hotplug_memory::{HotplugMemoryConfig, RawHotplugMemory};
use super::logger::{LoggerConfig, RawLogger};
use super::machine_config::{MachineConfig, RawMachineConfig};
use super::metrics::{MetricsConfig, RawMetrics};
use super::mmds::{MmdsConfig, RawMmdsConfig};
use super::net::{NetworkInterfaceConfig, RawNetworkInterface};
use super::pmem::{PmemConfig, RawPmem};
use super::vsock::{RawVsock, VsockConfig};

/// Why a configuration document was refused.
#[derive(Debug, thiserror::Error)]
pub enum VmConfigError {
    /// Not JSON, or a section with a wrong type, a missing or an unknown field.
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    /// A section that parsed but is not valid.
    #[error("invalid {section}: {source}")]
    Invalid {
        /// The top-level key.
        section: &'static str,
        /// The validation failure.
        #[source]
        source: SchemaError,
    },
    /// `cpu-config` given as a file path: squib reads inline templates only.
    #[error("cpu-config as a file path is not supported by squib yet; give the template inline")]
    CpuConfigPath,
}

#[derive(Debug, Deserialize)]
struct RawVmConfig {
    #[serde(default)]
    balloon: Option<RawBalloon>,
    #[serde(default)]
    drives: Vec<RawDrive>,
    #[serde(rename = "boot-source")]
    boot_source: RawBootSource,
    #[serde(rename = "cpu-config", default)]
    cpu_config: Option<serde_json::Value>,
    #[serde(default)]
    logger: Option<RawLogger>,
    #[serde(rename = "machine-config", default)]
    machine_config: Option<RawMachineConfig>,
    #[serde(default)]
    metrics: Option<RawMetrics>,
    #[serde(rename = "mmds-config", default)]
    mmds_config: Option<RawMmdsConfig>,
    #[serde(rename = "network-interfaces", default)]
    network_interfaces: Vec<RawNetworkInterface>,
    #[serde(default)]
    vsock: Option<RawVsock>,
    #[serde(default)]
    entropy: Option<RawEntropy>,
    #[serde(default)]
    pmem: Vec<RawPmem>,
    #[serde(rename = "memory-hotplug", default)]
    memory_hotplug: Option<RawHotplugMemory>,
}

/// A validated whole-VM configuration.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VmConfig {
    /// Balloon device.
    pub balloon: Option<BalloonConfig>,
    /// Block devices.
    pub drives: Vec<DriveConfig>,
    /// Kernel, initrd, command line.
    #[serde(rename = "boot-source")]
    pub boot_source: BootSourceConfig,
    /// Custom CPU template.
    #[serde(rename = "cpu-config")]
    pub cpu_config: Option<CpuConfig>,
    /// Logger (serialised as `null`).
    #[serde(serialize_with = "always_null")]
    pub logger: Option<LoggerConfig>,
    /// vCPUs and memory.
    #[serde(rename = "machine-config")]
    pub machine_config: MachineConfig,
    /// Metrics (serialised as `null`).
    #[serde(serialize_with = "always_null")]
    pub metrics: Option<MetricsConfig>,
    /// MMDS configuration.
    #[serde(rename = "mmds-config")]
    pub mmds_config: Option<MmdsConfig>,
    /// Network interfaces.
    #[serde(rename = "network-interfaces")]
    pub network_interfaces: Vec<NetworkInterfaceConfig>,
    /// vsock device.
    pub vsock: Option<VsockConfig>,
    /// Entropy device.
    pub entropy: Option<EntropyConfig>,
    /// pmem devices.
    pub pmem: Vec<PmemConfig>,
    /// virtio-mem.
    #[serde(rename = "memory-hotplug")]
    pub memory_hotplug: Option<HotplugMemoryConfig>,
}

fn always_null<T, S: Serializer>(_: &T, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_none()
}

fn section<R, T: TryFrom<R, Error = SchemaError>>(
    name: &'static str,
    raw: R,
) -> Result<T, VmConfigError> {
    T::try_from(raw).map_err(|source| VmConfigError::Invalid {
        section: name,
        source,
    })
}

fn sections<R, T: TryFrom<R, Error = SchemaError>>(
    name: &'static str,
    raw: Vec<R>,
) -> Result<Vec<T>, VmConfigError> {
    raw.into_iter().map(|r| section(name, r)).collect()
}

fn opt_section<R, T: TryFrom<R, Error = SchemaError>>(
    name: &'static str,
    raw: Option<R>,
) -> Result<Option<T>, VmConfigError> {
    raw.map(|r| section(name, r)).transpose()
}

fn cpu_config(value: Option<serde_json::Value>) -> Result<Option<CpuConfig>, VmConfigError> {
    match value {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(_)) => Err(VmConfigError::CpuConfigPath),
        Some(inline) => Ok(Some(serde_json::from_value::<CpuConfig>(inline)?)),
    }
}

impl VmConfig {
    /// Parse and validate a `--config-file` document.
    ///
    /// # Errors
    /// [`VmConfigError`] naming the JSON problem or the invalid section.
    pub fn from_json(json: &[u8]) -> Result<Self, VmConfigError> {
        let raw: RawVmConfig = serde_json::from_slice(json)?;
        Ok(Self {
            balloon: opt_section("balloon", raw.balloon)?,
            drives: sections("drives", raw.drives)?,
            boot_source: section("boot-source", raw.boot_source)?,
            cpu_config: cpu_config(raw.cpu_config)?,
            logger: opt_section("logger", raw.logger)?,
            machine_config: opt_section("machine-config", raw.machine_config)?.unwrap_or_default(),
            metrics: opt_section("metrics", raw.metrics)?,
            mmds_config: opt_section("mmds-config", raw.mmds_config)?,
            network_interfaces: sections("network-interfaces", raw.network_interfaces)?,
            vsock: opt_section("vsock", raw.vsock)?,
            entropy: opt_section("entropy", raw.entropy)?,
            pmem: sections("pmem", raw.pmem)?,
            memory_hotplug: opt_section("memory-hotplug", raw.memory_hotplug)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_a_config_file() {
        let json = br#"{
            "boot-source": {"kernel_image_path": "/vmlinux", "boot_args": "console=ttyS0"},
            "drives": [{"drive_id": "rootfs", "path_on_host": "/r.ext4", "is_root_device": true, "is_read_only": false}],
            "machine-config": {"vcpu_count": 2, "mem_size_mib": 256},
            "logger": {"level": "Debug"},
            "serial": {"ignored": true}
        }"#;
        let config = VmConfig::from_json(json).unwrap();
        assert_eq!(config.machine_config.vcpu_count, 2);
        assert!(config.logger.is_some());
        let value = serde_json::to_value(&config).unwrap();
        assert_eq!(value["logger"], serde_json::Value::Null);
        assert_eq!(value["drives"][0]["io_engine"], "Sync");
        assert_eq!(value["boot-source"]["initrd_path"], serde_json::Value::Null);
        let keys: Vec<_> = value.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys.len(), 13);
        let again = VmConfig::from_json(serde_json::to_string(&value).unwrap().as_bytes()).unwrap();
        assert_eq!(again.drives, config.drives);
    }

    #[test]
    fn the_custom_cpu_template_is_shown_and_read_back() {
        let json = br#"{"boot-source": {"kernel_image_path": "/k"},
            "cpu-config": {"kvm_capabilities": ["!56"],
                "msr_modifiers": [{"addr": "0x10a", "bitmap": "0b1"}]}}"#;
        let config = VmConfig::from_json(json).unwrap();
        let value = serde_json::to_value(&config).unwrap();
        assert_eq!(value["cpu-config"]["kvm_capabilities"][0], "!56");
        assert_eq!(value["cpu-config"]["msr_modifiers"][0]["addr"], "0x10a");
        let again = VmConfig::from_json(value.to_string().as_bytes()).unwrap();
        assert_eq!(again.cpu_config, config.cpu_config);
        let none = VmConfig::from_json(br#"{"boot-source": {"kernel_image_path": "/k"}}"#).unwrap();
        let value = serde_json::to_value(&none).unwrap();
        assert_eq!(value["cpu-config"], serde_json::Value::Null);
        let bad = br#"{"boot-source": {"kernel_image_path": "/k"}, "cpu-config": {"kvm_capabilities": ["x"]}}"#;
        assert!(VmConfig::from_json(bad)
            .unwrap_err()
            .to_string()
            .starts_with("Failed to parse string [x] as a kvm capability"));
    }

    #[test]
    fn names_the_invalid_section() {
        let json = br#"{"boot-source": {"kernel_image_path": "/k"}, "machine-config": {"vcpu_count": 0, "mem_size_mib": 1}}"#;
        let err = VmConfig::from_json(json).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("invalid machine-config: The number of vCPUs"),
            "{err}"
        );
        assert!(VmConfig::from_json(br#"{"drives": []}"#).is_err());
        let nested_unknown = br#"{"boot-source": {"kernel_image_path": "/k", "x": 1}}"#;
        assert!(VmConfig::from_json(nested_unknown)
            .unwrap_err()
            .to_string()
            .contains("unknown field"));
    }
}
