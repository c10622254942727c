//! Machine-wide configuration: machine config, boot source, CPU templates (static and
//! custom: one replaces the other), serial, and the GET views of the store (`/vm/config`,
//! `/machine-config`).

use squib_api::action::ApiResponse;
use squib_api::schemas::vm_config::VmConfig;
use squib_api::schemas::{
    BootSourceConfig, CpuConfig, MachineConfig, MachineConfigPatch, SerialConfig,
};

use crate::controller::{ActionError, ActionResult};
use crate::vmm::Vmm;

/// A `200` with `value` as JSON.
pub(crate) fn json_response(value: &impl serde::Serialize) -> ActionResult {
    serde_json::to_value(value)
        .map(ApiResponse::Json)
        .map_err(|e| {
            ActionError::fault(format!(
                "Internal error: cannot serialise the response: {e}"
            ))
        })
}

impl Vmm {
    /// `PUT /machine-config`: a full replacement, but for the CPU template: without
    /// `cpu_template` the template chosen before (static or custom) stays, as in Firecracker;
    /// with one (`None` included) it replaces a custom template, since the last choice wins.
    pub(crate) fn put_machine_config(&mut self, mut config: MachineConfig) -> ActionResult {
        match config.cpu_template {
            None => config.cpu_template = self.resources.machine_config().cpu_template,
            Some(_) => self.resources.cpu_config = None,
        }
        if let Some(balloon) = &self.resources.balloon {
            if balloon.amount_mib as usize > config.mem_size_mib {
                return Err(ActionError::invalid(
                    "The memory size (MiB) is smaller than the previously set balloon device \
                     target size.",
                ));
            }
        }
        self.resources.set_machine_config(config);
        Ok(ApiResponse::NoContent)
    }

    /// `PATCH /machine-config`: the given fields over the current configuration, validated
    /// as a whole again (a patch may be valid alone but not with the current values).
    pub(crate) fn patch_machine_config(&mut self, patch: MachineConfigPatch) -> ActionResult {
        let config = patch.apply_to(self.resources.machine_config())?;
        self.put_machine_config(config)
    }

    /// `GET /machine-config`.
    pub(crate) fn get_machine_config(&mut self) -> ActionResult {
        json_response(self.resources.machine_config())
    }

    /// `PUT /boot-source`: the kernel and initrd are opened now, as Firecracker does.
    pub(crate) fn put_boot_source(&mut self, config: BootSourceConfig) -> ActionResult {
        self.resources.set_boot_source(config)?;
        Ok(ApiResponse::NoContent)
    }

    /// `PUT /cpu-config`: the custom template replaces a static one (the last choice wins);
    /// it is checked against the host at `InstanceStart`.
    pub(crate) fn put_cpu_config(&mut self, config: CpuConfig) -> ActionResult {
        let mut machine = self.resources.machine_config().clone();
        machine.cpu_template = None;
        self.resources.set_machine_config(machine);
        self.resources.cpu_config = Some(config);
        Ok(ApiResponse::NoContent)
    }

    /// `PUT /serial`.
    pub(crate) fn put_serial(&mut self, config: SerialConfig) -> ActionResult {
        self.resources.set_serial(config);
        Ok(ApiResponse::NoContent)
    }

    /// `GET /vm/config`: the whole store in the `--config-file` format.
    pub(crate) fn get_vm_config(&mut self) -> ActionResult {
        json_response(&self.vm_config())
    }

    /// The whole resource store in the `--config-file` format (also what a snapshot keeps of
    /// the configuration).
    pub(crate) fn vm_config(&self) -> VmConfig {
        let r = &self.resources;
        VmConfig {
            balloon: self.balloon_config(),
            drives: r
                .drives_in_attach_order()
                .map(|d| d.config.clone())
                .collect(),
            boot_source: r.boot_source_config().cloned().unwrap_or_default(),
            cpu_config: r.cpu_config.clone(),
            logger: None,
            machine_config: r.machine_config().clone(),
            metrics: None,
            mmds_config: r.mmds_config.clone(),
            network_interfaces: r.net_configs(),
            vsock: r.vsock().map(|v| v.config.clone()),
            entropy: r.entropy.clone(),
            pmem: Vec::new(),
            memory_hotplug: None,
        }
    }
}
