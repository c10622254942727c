//! Device actions: drives, network interfaces, vsock, entropy, balloon, and the devices
//! squib does not build yet (pmem, memory hotplug: refused when put, naming them). Before boot
//! they configure the store (checks across resources: one root device, unique MACs); after
//! boot they update running devices.

use squib_api::action::ApiResponse;
use squib_api::schemas::{
    BalloonConfig, BalloonStartCmd, BalloonStatsUpdate, BalloonUpdate, DriveConfig, DriveId,
    DrivePatch, EntropyConfig, HotplugMemoryConfig, HotplugMemoryUpdate, IfaceId,
    NetworkInterfaceConfig, NetworkPatch, PmemConfig, PmemPatch, VsockConfig,
};

use std::sync::{Arc, Mutex, MutexGuard};

use squib_devices::virtio::balloon::Balloon;

use crate::controller::{not_supported, ActionError, ActionResult};
use crate::handlers::config::json_response;
use crate::limiter_config::{rate_limiter_update, update_block_rate_limiter};
use crate::resources::{open_drive_file, ResourceError};
use crate::vmm::Vmm;

/// Post-boot `PUT` of a device is PCI hotplug, which squib (like Firecracker without
/// `--enable-pci`) does not offer.
fn no_hotplug() -> ActionError {
    ActionError::fault("Device hotplug error: PCI is not enabled.")
}

/// `DELETE` of a device is PCI hot-unplug (row prefix `Device hot-unplug error`).
fn no_hot_unplug() -> ActionError {
    ActionError::invalid("PCI is not enabled.")
}

/// Every balloon action on a VM without a balloon device.
fn no_balloon() -> ActionError {
    ActionError::fault("Balloon config error: No balloon device found.")
}

/// The device, even if a panicking thread poisoned its lock (its state stays consistent:
/// every update is a single assignment).
fn lock(device: &Mutex<Balloon>) -> MutexGuard<'_, Balloon> {
    device
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// virtio-mem is not built yet.
fn no_memory_hotplug() -> ActionError {
    not_supported("virtio-mem (memory hotplug)")
}

impl Vmm {
    /// `PUT /drives/{id}`: the backing file is opened now.
    pub(crate) fn put_drive(&mut self, config: DriveConfig) -> ActionResult {
        if self.booted() {
            return Err(no_hotplug());
        }
        self.resources.put_drive(config)?;
        Ok(ApiResponse::NoContent)
    }

    /// `PATCH /drives/{id}` after boot: swap the backing file or change the rate limiter.
    pub(crate) fn patch_drive(&mut self, patch: DrivePatch) -> ActionResult {
        let drive_id = patch.drive_id.as_str();
        let read_only = self
            .resources
            .drive(drive_id)
            .is_some_and(|d| d.config.is_read_only);
        let block = self
            .running
            .as_ref()
            .and_then(|vm| vm.blocks.iter().find(|(id, _)| id == drive_id))
            .map(|(_, block)| block)
            .ok_or_else(|| {
                ActionError::invalid(format!("No block device with id {drive_id} was found."))
            })?;
        let mut block = block.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(path) = &patch.path_on_host {
            // Opened here without blocking and type-checked: a FIFO or a directory never
            // reaches the device, which takes this very file.
            let file = open_drive_file(path, read_only).inspect_err(|_| {
                block.metrics().update_fails.inc();
            })?;
            block.update_file(file, path)?;
        }
        if let Some(limiter) = &patch.rate_limiter {
            update_block_rate_limiter(&mut block, limiter);
        }
        Ok(ApiResponse::NoContent)
    }

    /// `DELETE /drives/{id}`.
    pub(crate) fn delete_drive(&mut self, _drive_id: DriveId) -> ActionResult {
        Err(no_hot_unplug())
    }

    /// `PUT /network-interfaces/{id}`: the TAP is opened now; the MAC must be unique.
    pub(crate) fn put_network(&mut self, config: NetworkInterfaceConfig) -> ActionResult {
        if self.booted() {
            return Err(no_hotplug());
        }
        match self.resources.put_network(config) {
            Ok(()) => Ok(ApiResponse::NoContent),
            Err(e @ ResourceError::GuestMacInUse(_)) => Err(ActionError::invalid(e)),
            Err(e) => Err(ActionError::fault(e)),
        }
    }

    /// `PATCH /network-interfaces/{id}` after boot: replace or remove rate-limiter buckets.
    pub(crate) fn patch_network(&mut self, patch: NetworkPatch) -> ActionResult {
        let iface_id = patch.iface_id.as_str();
        let (_, net) = self
            .running
            .as_ref()
            .and_then(|vm| vm.nets.iter().find(|(id, _)| id == iface_id))
            .ok_or_else(|| {
                ActionError::invalid(format!("no network interface with id {iface_id}."))
            })?;
        let rx = rate_limiter_update(patch.rx_rate_limiter.as_ref());
        let tx = rate_limiter_update(patch.tx_rate_limiter.as_ref());
        net.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .update_rate_limiters(rx, tx);
        Ok(ApiResponse::NoContent)
    }

    /// `DELETE /network-interfaces/{id}`.
    pub(crate) fn delete_network(&mut self, _iface_id: IfaceId) -> ActionResult {
        Err(no_hot_unplug())
    }

    /// `PUT /pmem/{id}`: virtio-pmem is not built yet.
    pub(crate) fn put_pmem(&mut self, _config: PmemConfig) -> ActionResult {
        if self.booted() {
            return Err(no_hotplug());
        }
        Err(not_supported("virtio-pmem"))
    }

    /// `PATCH /pmem/{id}`: no pmem device is ever built yet.
    pub(crate) fn patch_pmem(&mut self, _patch: PmemPatch) -> ActionResult {
        Err(ActionError::invalid("no pmem device found."))
    }

    /// `DELETE /pmem/{id}`.
    pub(crate) fn delete_pmem(&mut self, _pmem_id: DriveId) -> ActionResult {
        Err(no_hot_unplug())
    }

    /// `PUT /vsock`: the host Unix socket is bound now; a second PUT replaces the device and
    /// unlinks the old socket.
    pub(crate) fn put_vsock(&mut self, config: VsockConfig) -> ActionResult {
        self.resources.set_vsock(config)?;
        Ok(ApiResponse::NoContent)
    }

    /// `PUT /entropy`.
    pub(crate) fn put_entropy(&mut self, config: EntropyConfig) -> ActionResult {
        self.resources.entropy = Some(config);
        Ok(ApiResponse::NoContent)
    }

    /// `PUT /balloon` (before boot): the target is checked against guest memory.
    pub(crate) fn put_balloon(&mut self, config: BalloonConfig) -> ActionResult {
        if config.amount_mib as usize > self.resources.machine_config().mem_size_mib {
            return Err(ActionError::invalid(
                "Amount of pages requested is too large.",
            ));
        }
        self.resources.balloon = Some(config);
        Ok(ApiResponse::NoContent)
    }

    /// The running balloon device, if the VM has one.
    fn balloon_device(&self) -> Option<Arc<Mutex<Balloon>>> {
        self.running.as_ref().and_then(|vm| vm.balloon.clone())
    }

    /// The balloon's configuration as `GET /balloon` and `GET /vm/config` show it: the
    /// running device's current target and interval after boot, the stored PUT before.
    pub(crate) fn balloon_config(&self) -> Option<BalloonConfig> {
        let stored = self.resources.balloon.clone()?;
        let Some(device) = self.balloon_device() else {
            return Some(stored);
        };
        let live = lock(&device).config();
        Some(BalloonConfig {
            amount_mib: live.amount_mib,
            stats_polling_interval_s: live.stats_polling_interval_s,
            ..stored
        })
    }

    /// `GET /balloon`.
    pub(crate) fn get_balloon(&mut self) -> ActionResult {
        let config = self.balloon_config().ok_or_else(no_balloon)?;
        json_response(&config)
    }

    /// `GET /balloon/statistics`: the guest's latest statistics.
    pub(crate) fn get_balloon_stats(&mut self) -> ActionResult {
        let device = self.balloon_device().ok_or_else(no_balloon)?;
        let stats = lock(&device)
            .latest_stats()
            .map_err(|e| ActionError::fault(format!("Internal VMM error: {e}")))?;
        json_response(&stats)
    }

    /// `GET /balloon/hinting/status`: the host's and the guest's last command ids.
    pub(crate) fn get_balloon_hinting_status(&mut self) -> ActionResult {
        let device = self.balloon_device().ok_or_else(no_balloon)?;
        let status = lock(&device)
            .hinting_status()
            .map_err(ActionError::invalid)?;
        Ok(ApiResponse::Json(serde_json::json!({
            "host_cmd": status.host_cmd,
            "guest_cmd": status.guest_cmd,
        })))
    }

    /// `PATCH /balloon`: a new target, at most guest memory.
    pub(crate) fn patch_balloon(&mut self, update: BalloonUpdate) -> ActionResult {
        let device = self.balloon_device().ok_or_else(no_balloon)?;
        if update.amount_mib as usize > self.resources.machine_config().mem_size_mib {
            return Err(ActionError::invalid(format!(
                "Balloon: Requested memory should be less than {}MiB",
                update.amount_mib
            )));
        }
        lock(&device)
            .update_size(update.amount_mib)
            .map_err(ActionError::invalid)?;
        Ok(ApiResponse::NoContent)
    }

    /// `PATCH /balloon/statistics`: a new polling interval (statistics cannot be switched
    /// on or off after boot).
    pub(crate) fn patch_balloon_stats(&mut self, update: BalloonStatsUpdate) -> ActionResult {
        let device = self.balloon_device().ok_or_else(no_balloon)?;
        lock(&device)
            .update_stats_interval(update.stats_polling_interval_s)
            .map_err(ActionError::invalid)?;
        Ok(ApiResponse::NoContent)
    }

    /// `PATCH /balloon/hinting/start`: a new hinting run (the guest acknowledges its end
    /// on its own unless `acknowledge_on_stop` is false).
    pub(crate) fn start_balloon_hinting(&mut self, cmd: BalloonStartCmd) -> ActionResult {
        let device = self.balloon_device().ok_or_else(no_balloon)?;
        lock(&device)
            .start_hinting(cmd.acknowledge_on_stop.unwrap_or(true))
            .map_err(ActionError::invalid)?;
        Ok(ApiResponse::NoContent)
    }

    /// `PATCH /balloon/hinting/stop`: DONE, the guest takes its hinted pages back.
    pub(crate) fn stop_balloon_hinting(&mut self) -> ActionResult {
        let device = self.balloon_device().ok_or_else(no_balloon)?;
        lock(&device).stop_hinting().map_err(ActionError::invalid)?;
        Ok(ApiResponse::NoContent)
    }

    /// `PUT /hotplug/memory`.
    pub(crate) fn put_hotplug_memory(&mut self, _config: HotplugMemoryConfig) -> ActionResult {
        Err(no_memory_hotplug())
    }

    /// `GET /hotplug/memory`.
    pub(crate) fn get_hotplug_memory(&mut self) -> ActionResult {
        Err(no_memory_hotplug())
    }

    /// `PATCH /hotplug/memory`.
    pub(crate) fn patch_hotplug_memory(&mut self, _update: HotplugMemoryUpdate) -> ActionResult {
        Err(no_memory_hotplug())
    }
}
