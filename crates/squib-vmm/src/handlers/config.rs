//! Machine-wide configuration: machine config, boot source, CPU template, serial, and the GET
//! views of the store (`/vm/config`, `/machine-config`).

use squib_api::action::ApiResponse;
use squib_api::schemas::vm_config::VmConfig;
use squib_api::schemas::{
    BootSourceConfig, CpuConfig, CpuTemplate, HugePages, MachineConfig, MachineConfigPatch,
    SerialConfig,
};

use crate::controller::{not_supported, ActionError, ActionResult};
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
    /// `PUT /machine-config`: a full replacement.
    /// Settings squib does not implement yet are refused here, naming them, rather than
    /// accepted and ignored.
    pub(crate) fn put_machine_config(&mut self, config: MachineConfig) -> ActionResult {
        if config.huge_pages != HugePages::None {
            return Err(not_supported("Huge pages (huge_pages)"));
        }
        if config
            .cpu_template
            .is_some_and(|template| template != CpuTemplate::None)
        {
            return Err(not_supported("Static CPU templates (cpu_template)"));
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

    /// `PUT /cpu-config`: custom CPU templates are not applied yet.
    pub(crate) fn put_cpu_config(&mut self, _config: CpuConfig) -> ActionResult {
        Err(not_supported("Custom CPU templates (PUT /cpu-config)"))
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
            balloon: None,
            drives: r
                .drives_in_attach_order()
                .map(|d| d.config.clone())
                .collect(),
            boot_source: r.boot_source_config().cloned().unwrap_or_default(),
            cpu_config: None,
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
