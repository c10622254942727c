//! `--config-file` and `--metadata`: the same validated types and the same dispatch as the
//! HTTP API, replayed in Firecracker's order, then `InstanceStart`.

use std::path::Path;

use squib_api::action::{ApiAction, ApiResponse};
use squib_api::schemas::vm_config::VmConfig;
use squib_api::schemas::{InstanceAction, MmdsContents};

use crate::vmm::Vmm;

/// Why `--config-file` or `--metadata` could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    /// The JSON did not parse or validate.
    #[error("Invalid configuration file: {0}")]
    Parse(String),
    /// A section was refused by the VMM, with the API's message.
    #[error("{0}")]
    Refused(String),
    /// The metadata file could not be read or is not JSON.
    #[error("Cannot load the metadata file {path}: {reason}")]
    Metadata {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
}

/// The actions a configuration file stands for, in the order Firecracker applies them.
fn actions_of(mut config: VmConfig) -> Vec<ApiAction> {
    let boot_source = std::mem::take(&mut config.boot_source);
    let cpu_config = config.cpu_config.take();
    let mut actions = Vec::new();
    actions.push(ApiAction::PutMachineConfig(config.machine_config.clone()));
    actions.extend(cpu_config.map(ApiAction::PutCpuConfig));
    actions.push(ApiAction::PutBootSource(boot_source));
    actions.extend(device_actions(config));
    actions.push(ApiAction::Action(InstanceAction::InstanceStart));
    actions
}

/// The device, MMDS, logger and metrics sections of `config` as API actions, in Firecracker's
/// order. A snapshot load replays these (after the machine configuration) to rebuild the
/// devices it restores.
pub(crate) fn device_actions(config: VmConfig) -> Vec<ApiAction> {
    let mut actions = Vec::new();
    actions.extend(config.drives.into_iter().map(ApiAction::PutDrive));
    actions.extend(
        config
            .network_interfaces
            .into_iter()
            .map(ApiAction::PutNetwork),
    );
    actions.extend(config.vsock.map(ApiAction::PutVsock));
    actions.extend(config.mmds_config.map(ApiAction::PutMmdsConfig));
    actions.extend(config.balloon.map(ApiAction::PutBalloon));
    actions.extend(config.entropy.map(ApiAction::PutEntropy));
    actions.extend(config.pmem.into_iter().map(ApiAction::PutPmem));
    actions.extend(config.memory_hotplug.map(ApiAction::PutHotplugMemory));
    actions.extend(config.logger.map(ApiAction::PutLogger));
    actions.extend(config.metrics.map(ApiAction::PutMetrics));
    actions
}

impl Vmm {
    /// Apply a `--config-file` document and boot the microVM.
    ///
    /// # Errors
    /// [`ConfigFileError`] with the first refusal's message.
    pub fn boot_from_config(&mut self, json: &[u8]) -> Result<(), ConfigFileError> {
        let config =
            VmConfig::from_json(json).map_err(|e| ConfigFileError::Parse(e.to_string()))?;
        for action in actions_of(config) {
            if let ApiResponse::Fault { fault_message, .. } = self.handle_action(action) {
                return Err(ConfigFileError::Refused(fault_message));
            }
        }
        Ok(())
    }

    /// Fill the MMDS data store from a `--metadata` JSON file.
    ///
    /// # Errors
    /// [`ConfigFileError::Metadata`] when the file cannot be read, parsed or stored.
    pub fn load_metadata(&mut self, path: &Path) -> Result<(), ConfigFileError> {
        let metadata_error = |reason: String| ConfigFileError::Metadata {
            path: path.display().to_string(),
            reason,
        };
        let bytes = std::fs::read(path).map_err(|e| metadata_error(e.to_string()))?;
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| metadata_error(e.to_string()))?;
        match self.handle_action(ApiAction::PutMmds(MmdsContents(value))) {
            ApiResponse::Fault { fault_message, .. } => Err(metadata_error(fault_message)),
            _ => Ok(()),
        }
    }
}
