//! Pre-boot configuration actions that need more than a store: checks across resources
//! (balloon vs. memory size, unique MACs, one root device) and the GET views of the store.

use squib_api::action::ApiResponse;
use squib_api::schemas::vm_config::VmConfig;
use squib_api::schemas::{
    BalloonConfig, DrivePatch, MachineConfig, MachineConfigPatch, NetworkInterfaceConfig,
    NetworkPatch, PmemConfig,
};

use crate::controller::fault;
use crate::net::rate_limiter_update;
use crate::resources::ResourceError;
use crate::vmm::Vmm;

fn json_response(value: &impl serde::Serialize) -> ApiResponse {
    match serde_json::to_value(value) {
        Ok(json) => ApiResponse::Json(json),
        Err(e) => ApiResponse::fault(format!(
            "Internal error: cannot serialise the response: {e}"
        )),
    }
}

impl Vmm {
    /// `PUT /machine-config`: a full replacement.
    pub(crate) fn put_machine_config(&mut self, config: MachineConfig) -> ApiResponse {
        if let Some(balloon) = &self.resources.balloon {
            if u64::from(balloon.amount_mib) > config.mem_size_mib as u64 {
                return fault(
                    "Machine config error",
                    "The memory size (MiB) is smaller than the previously set balloon device target size.",
                );
            }
        }
        self.resources.set_machine_config(config);
        ApiResponse::NoContent
    }

    /// `PATCH /machine-config`: the given fields over the current configuration, validated
    /// as a whole again (a patch may be valid alone but not with the current values).
    pub(crate) fn patch_machine_config(&mut self, patch: MachineConfigPatch) -> ApiResponse {
        match patch.apply_to(self.resources.machine_config()) {
            Ok(config) => self.put_machine_config(config),
            Err(e) => fault("Machine config error", e),
        }
    }

    /// `GET /machine-config`.
    pub(crate) fn machine_config_response(&self) -> ApiResponse {
        json_response(self.resources.machine_config())
    }

    /// `GET /vm/config`: the whole store in the `--config-file` format.
    pub(crate) fn vm_config_response(&self) -> ApiResponse {
        let r = &self.resources;
        let config = VmConfig {
            balloon: r.balloon.clone(),
            drives: r
                .drives_in_attach_order()
                .map(|d| d.config.clone())
                .collect(),
            boot_source: r
                .boot_source()
                .map(|b| b.config.clone())
                .unwrap_or_default(),
            cpu_config: None,
            logger: None,
            machine_config: r.machine_config().clone(),
            metrics: None,
            mmds_config: r.mmds_config.clone(),
            network_interfaces: r.net_configs(),
            vsock: r.vsock.clone(),
            entropy: r.entropy.clone(),
            pmem: r.pmem.clone(),
            memory_hotplug: r.memory_hotplug.clone(),
        };
        json_response(&config)
    }

    /// `GET /balloon` before boot: the configured balloon, if any.
    pub(crate) fn balloon_config_response(&self) -> ApiResponse {
        match &self.resources.balloon {
            Some(balloon) => json_response(balloon),
            None => ApiResponse::fault("Balloon config error: No balloon device found."),
        }
    }

    /// `PUT /network-interfaces/{id}`: the TAP is opened now; the MAC must be unique.
    pub(crate) fn put_network(&mut self, config: NetworkInterfaceConfig) -> ApiResponse {
        match self.resources.put_network(config) {
            Ok(()) => ApiResponse::NoContent,
            Err(e @ ResourceError::GuestMacInUse(_)) => fault("Network interface error", e),
            Err(e) => ApiResponse::fault(e.to_string()),
        }
    }

    /// `PATCH /network-interfaces/{id}` after boot: replace or remove rate-limiter buckets.
    pub(crate) fn patch_network(&mut self, patch: &NetworkPatch) -> ApiResponse {
        let iface_id = patch.iface_id.as_str();
        let Some((_, net)) = self
            .running
            .as_ref()
            .and_then(|vm| vm.nets.iter().find(|(id, _)| id == iface_id))
        else {
            return ApiResponse::fault(format!(
                "Network interface update error: no network interface with id {iface_id}."
            ));
        };
        let rx = rate_limiter_update(patch.rx_rate_limiter.as_ref());
        let tx = rate_limiter_update(patch.tx_rate_limiter.as_ref());
        net.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .update_rate_limiters(rx, tx);
        ApiResponse::NoContent
    }

    /// `PUT /balloon`: its target must fit in guest memory.
    pub(crate) fn put_balloon(&mut self, config: BalloonConfig) -> ApiResponse {
        if u64::from(config.amount_mib) > self.resources.machine_config().mem_size_mib as u64 {
            return fault(
                "Balloon config error",
                "Amount of pages requested is too large.",
            );
        }
        self.resources.balloon = Some(config);
        ApiResponse::NoContent
    }

    /// `PUT /pmem/{id}`: one root device across block and pmem.
    pub(crate) fn put_pmem(&mut self, config: PmemConfig) -> ApiResponse {
        if config.root_device && self.resources.root_device_cmdline().is_some() {
            return fault(
                "Pmem config error",
                "Attempt to add pmem as a root device while the root device defined as a block device",
            );
        }
        let pmem = &mut self.resources.pmem;
        if config.root_device && pmem.iter().any(|p| p.root_device && p.id != config.id) {
            return fault("Pmem config error", "A root pmem device already exist");
        }
        match pmem.iter_mut().find(|p| p.id == config.id) {
            Some(existing) => *existing = config,
            None => pmem.push(config),
        }
        ApiResponse::NoContent
    }

    /// `PATCH /drives/{id}` after boot: swap the backing file or change the rate limiter.
    pub(crate) fn patch_drive(&mut self, patch: DrivePatch) -> ApiResponse {
        let Some(vm) = &self.running else {
            return ApiResponse::fault(squib_api::NOT_SUPPORTED_BEFORE_START);
        };
        let Some((_, block)) = vm
            .blocks
            .iter()
            .find(|(id, _)| id == patch.drive_id.as_str())
        else {
            return fault(
                "Drive update error",
                format!(
                    "No block device with id {} was found.",
                    patch.drive_id.as_str()
                ),
            );
        };
        let mut block = block.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(path) = &patch.path_on_host {
            if let Err(e) = block.update_path(path) {
                return fault("Drive update error", e);
            }
        }
        if let Some(limiter) = &patch.rate_limiter {
            crate::rate_limiter::update_block_rate_limiter(&mut block, limiter);
        }
        ApiResponse::NoContent
    }
}
