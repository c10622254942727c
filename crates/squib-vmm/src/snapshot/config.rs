//! The VM configuration a snapshot carries, and how a load turns it back into a resource
//! store: the `--config-file` document of the snapshotted VM, changed by the load request's
//! overrides, then replayed through the same validated API actions as a configuration file
//! (machine configuration, CPU template, devices) — all but the boot source, which a
//! restored guest no longer needs (its kernel is in guest memory; the file need not exist
//! any more).

use squib_api::action::{ApiAction, ApiResponse};
use squib_api::schemas::vm_config::VmConfig;
use squib_api::schemas::SnapshotLoadConfig;

use crate::config_file::device_actions;
use crate::vmm::Vmm;

/// Why the saved configuration could not be applied.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RestoreConfigError {
    /// The configuration in the snapshot does not parse or validate.
    #[error("Invalid configuration in the snapshot: {0}")]
    Invalid(String),
    /// `network_overrides` names an interface the snapshot does not have.
    #[error("Unknown Network Device.")]
    UnknownNetworkDevice,
    /// `vsock_override` given for a snapshot without a vsock device.
    #[error("Unknown Vsock Device.")]
    UnknownVsockDevice,
    /// Rebuilding a device from the configuration failed (the API's message).
    #[error("Failed to restore devices: {0}")]
    Refused(String),
}

impl Vmm {
    /// The configuration to keep in a snapshot, as JSON text.
    pub(crate) fn snapshot_config_json(&self) -> String {
        // Serialising plain data into a string cannot fail.
        serde_json::to_string(&self.vm_config()).unwrap_or_default()
    }

    /// Rebuild the resource store from a snapshot's configuration with the load request's
    /// overrides (TAP names, vsock socket, dirty-page tracking).
    pub(crate) fn restore_resources(
        &mut self,
        config_json: &str,
        load: &SnapshotLoadConfig,
    ) -> Result<(), RestoreConfigError> {
        let mut config = VmConfig::from_json(config_json.as_bytes())
            .map_err(|e| RestoreConfigError::Invalid(e.to_string()))?;
        apply_overrides(&mut config, load)?;
        // Not replayed (no file is opened), but kept: a snapshot of the restored VM names it.
        self.resources
            .set_restored_boot_source(std::mem::take(&mut config.boot_source));
        // The CPU template is the snapshot's, not one set before the load. It is kept as
        // configuration only (`GET /vm/config`, a later snapshot): the guest's CPUID and MSRs
        // come back with the vCPU states.
        self.resources.cpu_config = None;
        let mut actions = vec![ApiAction::PutMachineConfig(config.machine_config.clone())];
        actions.extend(config.cpu_config.take().map(ApiAction::PutCpuConfig));
        actions.extend(device_actions(config));
        for action in actions {
            if let ApiResponse::Fault { fault_message, .. } = self.handle_action(action) {
                return Err(RestoreConfigError::Refused(fault_message));
            }
        }
        Ok(())
    }
}

/// The load request's changes to the saved configuration.
fn apply_overrides(
    config: &mut VmConfig,
    load: &SnapshotLoadConfig,
) -> Result<(), RestoreConfigError> {
    for o in &load.network_overrides {
        let iface = config
            .network_interfaces
            .iter_mut()
            .find(|i| i.iface_id == o.iface_id)
            .ok_or(RestoreConfigError::UnknownNetworkDevice)?;
        iface.host_dev_name.clone_from(&o.host_dev_name);
    }
    if let Some(uds_path) = &load.vsock_override {
        let vsock = config
            .vsock
            .as_mut()
            .ok_or(RestoreConfigError::UnknownVsockDevice)?;
        vsock.uds_path.clone_from(uds_path);
    }
    config.machine_config.track_dirty_pages = load.track_dirty_pages;
    if let Some(huge_pages) = load.huge_pages {
        config.machine_config.huge_pages = huge_pages;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use squib_api::schemas::snapshot::{MemBackend, MemBackendType, NetworkOverride};

    use super::*;

    fn load() -> SnapshotLoadConfig {
        SnapshotLoadConfig {
            snapshot_path: PathBuf::from("/s"),
            mem_backend: MemBackend {
                backend_type: MemBackendType::File,
                backend_path: PathBuf::from("/m"),
            },
            track_dirty_pages: false,
            resume_vm: false,
            network_overrides: Vec::new(),
            vsock_override: None,
            clock_realtime: false,
            huge_pages: None,
            working_set: None,
        }
    }

    fn config() -> VmConfig {
        VmConfig::from_json(
            br#"{
                "boot-source": {"kernel_image_path": "/vmlinux"},
                "machine-config": {"vcpu_count": 2, "mem_size_mib": 256},
                "network-interfaces": [
                    {"iface_id": "eth0", "host_dev_name": "tap0"},
                    {"iface_id": "eth1", "host_dev_name": "tap1"}
                ],
                "vsock": {"guest_cid": 3, "uds_path": "/old.sock"}
            }"#,
        )
        .unwrap()
    }

    #[test]
    fn overrides_rename_taps_and_the_vsock_socket() {
        let mut config = config();
        let mut load = load();
        load.network_overrides = vec![NetworkOverride {
            iface_id: "eth1".to_owned().try_into().unwrap(),
            host_dev_name: "tap9".to_owned(),
        }];
        load.vsock_override = Some(PathBuf::from("/new.sock"));
        load.track_dirty_pages = true;
        apply_overrides(&mut config, &load).unwrap();
        assert_eq!(config.network_interfaces[0].host_dev_name, "tap0");
        assert_eq!(config.network_interfaces[1].host_dev_name, "tap9");
        assert_eq!(config.vsock.unwrap().uds_path, PathBuf::from("/new.sock"));
        assert!(config.machine_config.track_dirty_pages);
    }

    #[test]
    fn overrides_naming_missing_devices_are_refused() {
        let mut load = load();
        load.network_overrides = vec![NetworkOverride {
            iface_id: "eth7".to_owned().try_into().unwrap(),
            host_dev_name: "tap9".to_owned(),
        }];
        assert_eq!(
            apply_overrides(&mut config(), &load),
            Err(RestoreConfigError::UnknownNetworkDevice)
        );
        let mut load = self::load();
        load.vsock_override = Some(PathBuf::from("/new.sock"));
        let mut no_vsock = config();
        no_vsock.vsock = None;
        assert_eq!(
            apply_overrides(&mut no_vsock, &load),
            Err(RestoreConfigError::UnknownVsockDevice)
        );
    }
}
