//! Firecracker's per-route API request counters (`get_api_requests`, `put_api_requests`,
//! `patch_api_requests`): `<route>_count` for every request the VMM handles, `<route>_fails`
//! for those it refuses. `GET /` and `GET /version` never reach the VMM; the API thread
//! answers them.

use squib_api::action::{ApiAction, ApiResponse};
use squib_logger::metrics::{IncMetric, METRICS};

/// The counters of one request: how many, and how many failed (when Firecracker counts it).
pub(crate) struct RequestCounters {
    count: Option<&'static IncMetric>,
    fails: Option<&'static IncMetric>,
}

impl RequestCounters {
    /// The counters Firecracker keeps for `action`'s route.
    pub(crate) fn of(action: &ApiAction) -> Self {
        use ApiAction as A;
        let (get, put, patch) = (
            &METRICS.get_api_requests,
            &METRICS.put_api_requests,
            &METRICS.patch_api_requests,
        );
        let (count, fails) = match action {
            A::GetMachineConfig => (Some(&get.machine_cfg_count), None),
            A::GetMmds => (Some(&get.mmds_count), None),
            A::GetHotplugMemory => (Some(&get.hotplug_memory_count), None),
            A::Action(_) => (Some(&put.actions_count), Some(&put.actions_fails)),
            A::PutBootSource(_) => (Some(&put.boot_source_count), Some(&put.boot_source_fails)),
            A::PutDrive(_) => (Some(&put.drive_count), Some(&put.drive_fails)),
            A::PutLogger(_) => (Some(&put.logger_count), Some(&put.logger_fails)),
            A::PutMachineConfig(_) => (Some(&put.machine_cfg_count), Some(&put.machine_cfg_fails)),
            A::PutCpuConfig(_) => (Some(&put.cpu_cfg_count), Some(&put.cpu_cfg_fails)),
            A::PutMetrics(_) => (Some(&put.metrics_count), Some(&put.metrics_fails)),
            A::PutNetwork(_) => (Some(&put.network_count), Some(&put.network_fails)),
            A::PutMmds(_) | A::PutMmdsConfig(_) => (Some(&put.mmds_count), Some(&put.mmds_fails)),
            A::PutVsock(_) => (Some(&put.vsock_count), Some(&put.vsock_fails)),
            A::PutPmem(_) => (Some(&put.pmem_count), Some(&put.pmem_fails)),
            A::PutSerial(_) => (Some(&put.serial_count), Some(&put.serial_fails)),
            A::PutHotplugMemory(_) => (
                Some(&put.hotplug_memory_count),
                Some(&put.hotplug_memory_fails),
            ),
            A::PatchDrive(_) => (Some(&patch.drive_count), Some(&patch.drive_fails)),
            A::PatchNetwork(_) => (Some(&patch.network_count), Some(&patch.network_fails)),
            A::PatchMachineConfig(_) => (
                Some(&patch.machine_cfg_count),
                Some(&patch.machine_cfg_fails),
            ),
            A::PatchMmds(_) => (Some(&patch.mmds_count), Some(&patch.mmds_fails)),
            A::PatchHotplugMemory(_) => (
                Some(&patch.hotplug_memory_count),
                Some(&patch.hotplug_memory_fails),
            ),
            // Routes Firecracker keeps no per-route counter for.
            _ => (None, None),
        };
        Self { count, fails }
    }

    /// Count the request, and its failure when `response` is a fault.
    pub(crate) fn record(&self, response: &ApiResponse) {
        if let Some(count) = self.count {
            count.inc();
        }
        if let (Some(fails), ApiResponse::Fault { .. }) = (self.fails, response) {
            fails.inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use squib_api::schemas::InstanceAction;

    use super::*;

    #[test]
    fn a_refused_action_counts_as_a_request_and_a_failure() {
        let before = (
            METRICS.put_api_requests.actions_count.count(),
            METRICS.put_api_requests.actions_fails.count(),
        );
        let counters = RequestCounters::of(&ApiAction::Action(InstanceAction::FlushMetrics));
        counters.record(&ApiResponse::fault("refused"));
        counters.record(&ApiResponse::NoContent);
        assert_eq!(METRICS.put_api_requests.actions_count.count(), before.0 + 2);
        assert_eq!(METRICS.put_api_requests.actions_fails.count(), before.1 + 1);
    }
}
