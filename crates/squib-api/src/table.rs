//! The one table of API actions. Each row names an action once, with everything that
//! squib's layers need to know about it:
//!
//! ```text
//! Variant(binding: Payload) => vmm_handler:
//!     METHOD "/path" [/ {id}], parser,
//!     spec(admission, timeout class, request counter, "fault prefix");
//! ```
//!
//! (`PUT /actions` serves three actions that differ in admission and timeout: its row's spec
//! is a function of the payload.)
//!
//! - the router ([`crate::routes`]) matches `METHOD "/path"` (plus one `{id}` segment where the
//!   row has one) and runs `parser` on the request, which yields the payload;
//! - [`ApiAction`] is generated from the rows, and [`ApiAction::spec`] answers with the row's
//!   [`ActionSpec`]: the API thread's timeout, the VMM's admission gate, Firecracker's request
//!   counters and the prefix of the action's fault messages;
//! - the VMM runs the same table through [`for_each_api_action!`] to call
//!   `Vmm::vmm_handler(payload)` for each action: a row whose handler does not exist does not
//!   compile.
//!
//! Adding a route is: its schema (the payload type, and a parser there if the generic ones in
//! [`crate::routes::parse`] do not fit), one row here, and its handler in `squib-vmm`.

use squib_logger::metrics::{
    GetRequestsMetrics, PatchRequestsMetrics, PutRequestsMetrics, METRICS,
};

use crate::action::{ActionClass, ActionSpec, Admission, RequestCounter};
use crate::routes::parse;
use crate::schemas::*;

/// Hands every row of the action table to `$callback!`, which must accept the row grammar in
/// the module documentation. squib-api builds [`ApiAction`], its specs and the routes from it;
/// the VMM builds its dispatch.
#[macro_export]
macro_rules! for_each_api_action {
    ($callback:ident) => {
        $callback! {
            /// `GET /vm/config`: the whole configuration, in the `--config-file` format.
            GetVmConfig => get_vm_config:
                GET "/vm/config", parse::no_body,
                spec(Always, Config, None, "Internal error");
            /// `GET /machine-config`.
            GetMachineConfig => get_machine_config:
                GET "/machine-config", parse::no_body,
                spec(Always, Config, count(&GET.machine_cfg_count), "Machine config error");
            /// `GET /mmds`: the metadata document.
            GetMmds => get_mmds:
                GET "/mmds", parse::no_body,
                spec(Always, Config, count(&GET.mmds_count), "MMDS error");
            /// `GET /balloon`: the balloon's configuration.
            GetBalloon => get_balloon:
                GET "/balloon", parse::no_body,
                spec(Always, Config, None, "Balloon config error");
            /// `GET /balloon/statistics`.
            GetBalloonStats => get_balloon_stats:
                GET "/balloon/statistics", parse::no_body,
                spec(PostBootOnly, Config, None, "Balloon config error");
            /// `GET /balloon/hinting/status`.
            GetBalloonHintingStatus => get_balloon_hinting_status:
                GET "/balloon/hinting/status", parse::no_body,
                spec(PostBootOnly, Config, None, "Balloon config error");
            /// `GET /hotplug/memory`: the virtio-mem device's state.
            GetHotplugMemory => get_hotplug_memory:
                GET "/hotplug/memory", parse::no_body,
                spec(PostBootOnly, Config, count(&GET.hotplug_memory_count), "Memory hotplug error");
            /// `PUT /boot-source`.
            PutBootSource(config: BootSourceConfig) => put_boot_source:
                PUT "/boot-source", parse::validated::<boot_source::RawBootSource, _>,
                spec(PreBootOnly, Config, counts(&PUT.boot_source_count, &PUT.boot_source_fails), "Boot source error");
            /// `PUT /drives/{id}`: a block device (after boot, PCI hotplug).
            PutDrive(config: DriveConfig) => put_drive:
                PUT "/drives" / {id}, parse::with_id::<drive::RawDrive, _>,
                spec(Always, Config, counts(&PUT.drive_count, &PUT.drive_fails), "Drive config error");
            /// `PATCH /drives/{id}`: a new backing file or rate limiter for a running drive.
            PatchDrive(patch: DrivePatch) => patch_drive:
                PATCH "/drives" / {id}, parse::with_id::<drive::RawDrivePatch, _>,
                spec(PostBootOnly, Config, counts(&PATCH.drive_count, &PATCH.drive_fails), "Drive update error");
            /// `DELETE /drives/{id}`: PCI hot-unplug.
            DeleteDrive(drive_id: DriveId) => delete_drive:
                DELETE "/drives" / {id}, parse::path_id,
                spec(PostBootOnly, Config, None, "Device hot-unplug error");
            /// `PUT /network-interfaces/{id}`: a NIC on a host TAP (after boot, PCI hotplug).
            PutNetwork(config: NetworkInterfaceConfig) => put_network:
                PUT "/network-interfaces" / {id}, parse::with_id::<net::RawNetworkInterface, _>,
                spec(Always, Config, counts(&PUT.network_count, &PUT.network_fails), "Network interface error");
            /// `PATCH /network-interfaces/{id}`: new rate limiters for a running NIC.
            PatchNetwork(patch: NetworkPatch) => patch_network:
                PATCH "/network-interfaces" / {id}, parse::with_id::<net::RawNetworkPatch, _>,
                spec(PostBootOnly, Config, counts(&PATCH.network_count, &PATCH.network_fails), "Network interface update error");
            /// `DELETE /network-interfaces/{id}`: PCI hot-unplug.
            DeleteNetwork(iface_id: IfaceId) => delete_network:
                DELETE "/network-interfaces" / {id}, parse::path_id,
                spec(PostBootOnly, Config, None, "Device hot-unplug error");
            /// `PUT /vsock`.
            PutVsock(config: VsockConfig) => put_vsock:
                PUT "/vsock", vsock::parse_put,
                spec(PreBootOnly, Config, counts(&PUT.vsock_count, &PUT.vsock_fails), "Vsock config error");
            /// `PUT /mmds`: replace the metadata document.
            PutMmds(contents: MmdsContents) => put_mmds:
                PUT "/mmds", parse::json,
                spec(Always, Config, counts(&PUT.mmds_count, &PUT.mmds_fails), "MMDS error");
            /// `PATCH /mmds`: JSON merge patch of the metadata document.
            PatchMmds(contents: MmdsContents) => patch_mmds:
                PATCH "/mmds", parse::json,
                spec(Always, Config, counts(&PATCH.mmds_count, &PATCH.mmds_fails), "MMDS error");
            /// `PUT /mmds/config`: MMDS version, address and interfaces.
            PutMmdsConfig(config: MmdsConfig) => put_mmds_config:
                PUT "/mmds/config", mmds::parse_put_config,
                spec(PreBootOnly, Config, counts(&PUT.mmds_count, &PUT.mmds_fails), "MMMDS config error");
            /// `PUT /balloon`.
            PutBalloon(config: BalloonConfig) => put_balloon:
                PUT "/balloon", parse::validated::<balloon::RawBalloon, _>,
                spec(PreBootOnly, Config, None, "Balloon config error");
            /// `PATCH /balloon`: a new target size.
            PatchBalloon(update: BalloonUpdate) => patch_balloon:
                PATCH "/balloon", parse::json,
                spec(PostBootOnly, BalloonResize, None, "Balloon update error");
            /// `PATCH /balloon/statistics`: a new polling interval.
            PatchBalloonStats(update: BalloonStatsUpdate) => patch_balloon_stats:
                PATCH "/balloon/statistics", parse::json,
                spec(PostBootOnly, Config, None, "Balloon update error");
            /// `PATCH /balloon/hinting/start` (the body is optional).
            StartBalloonHinting(cmd: BalloonStartCmd) => start_balloon_hinting:
                PATCH "/balloon/hinting/start", parse::optional_json,
                spec(PostBootOnly, Config, None, "Balloon update error");
            /// `PATCH /balloon/hinting/stop` (any body is ignored).
            StopBalloonHinting => stop_balloon_hinting:
                PATCH "/balloon/hinting/stop", parse::ignore_body,
                spec(PostBootOnly, Config, None, "Balloon update error");
            /// `PUT /entropy`.
            PutEntropy(config: EntropyConfig) => put_entropy:
                PUT "/entropy", parse::validated::<entropy::RawEntropy, _>,
                spec(PreBootOnly, Config, None, "Entropy device error");
            /// `PUT /serial`: where the guest console goes.
            PutSerial(config: SerialConfig) => put_serial:
                PUT "/serial", parse::validated::<serial::RawSerial, _>,
                spec(PreBootOnly, Config, counts(&PUT.serial_count, &PUT.serial_fails), "Serial config error");
            /// `PUT /pmem/{id}` (after boot, PCI hotplug).
            PutPmem(config: PmemConfig) => put_pmem:
                PUT "/pmem" / {id}, parse::with_id::<pmem::RawPmem, _>,
                spec(Always, Config, counts(&PUT.pmem_count, &PUT.pmem_fails), "Pmem config error");
            /// `PATCH /pmem/{id}`.
            PatchPmem(patch: PmemPatch) => patch_pmem:
                PATCH "/pmem" / {id}, parse::with_id::<pmem::RawPmemPatch, _>,
                spec(PostBootOnly, Config, None, "Pmem update error");
            /// `DELETE /pmem/{id}`: PCI hot-unplug.
            DeletePmem(pmem_id: DriveId) => delete_pmem:
                DELETE "/pmem" / {id}, parse::path_id,
                spec(PostBootOnly, Config, None, "Device hot-unplug error");
            /// `PUT /hotplug/memory`: the virtio-mem region.
            PutHotplugMemory(config: HotplugMemoryConfig) => put_hotplug_memory:
                PUT "/hotplug/memory", parse::validated::<hotplug_memory::RawHotplugMemory, _>,
                spec(PreBootOnly, Config, counts(&PUT.hotplug_memory_count, &PUT.hotplug_memory_fails), "Memory hotplug config error");
            /// `PATCH /hotplug/memory`: a new plugged size.
            PatchHotplugMemory(update: HotplugMemoryUpdate) => patch_hotplug_memory:
                PATCH "/hotplug/memory", parse::json,
                spec(PostBootOnly, Config, counts(&PATCH.hotplug_memory_count, &PATCH.hotplug_memory_fails), "Memory hotplug update error");
            /// `PUT /cpu-config`: a custom CPU template.
            PutCpuConfig(config: CpuConfig) => put_cpu_config:
                PUT "/cpu-config", parse::json::<CpuConfig>,
                spec(PreBootOnly, Config, counts(&PUT.cpu_cfg_count, &PUT.cpu_cfg_fails), "Configure CPU error");
            /// `PUT /machine-config`: a full replacement.
            PutMachineConfig(config: MachineConfig) => put_machine_config:
                PUT "/machine-config", machine_config::parse_put,
                spec(PreBootOnly, Config, counts(&PUT.machine_cfg_count, &PUT.machine_cfg_fails), "Machine config error");
            /// `PATCH /machine-config`: the given fields over the current configuration.
            PatchMachineConfig(patch: MachineConfigPatch) => patch_machine_config:
                PATCH "/machine-config", machine_config::parse_patch,
                spec(PreBootOnly, Config, counts(&PATCH.machine_cfg_count, &PATCH.machine_cfg_fails), "Machine config error");
            /// `PUT /logger`.
            PutLogger(config: LoggerConfig) => put_logger:
                PUT "/logger", parse::validated::<logger::RawLogger, _>,
                spec(PreBootOnly, Config, counts(&PUT.logger_count, &PUT.logger_fails), "Logger error");
            /// `PUT /metrics`.
            PutMetrics(config: MetricsConfig) => put_metrics:
                PUT "/metrics", parse::validated::<metrics::RawMetrics, _>,
                spec(PreBootOnly, Config, counts(&PUT.metrics_count, &PUT.metrics_fails), "Metrics error");
            /// `PUT /actions`: `InstanceStart`, `FlushMetrics` or `SendCtrlAltDel`, each with its
            /// own admission, timeout and fault prefix (see [`instance_action_spec`]).
            Action(action: InstanceAction) => instance_action:
                PUT "/actions", instance::parse_action,
                instance_action_spec(*action);
            /// `PATCH /vm`: pause or resume.
            PatchVm(state: VmStateChange) => patch_vm:
                PATCH "/vm", instance::parse_patch_vm,
                vm_state_spec(*state);
            /// `PUT /snapshot/create`.
            SnapshotCreate(config: SnapshotCreateConfig) => create_snapshot:
                PUT "/snapshot/create", parse::validated::<snapshot::RawSnapshotCreate, _>,
                spec(PostBootOnly, SnapshotCreate, None, "Create snapshot error");
            /// `PUT /snapshot/load`.
            SnapshotLoad(config: SnapshotLoadConfig) => load_snapshot:
                PUT "/snapshot/load", snapshot::parse_load,
                spec(PreBootOnly, SnapshotLoad, None, "Load snapshot error");
        }
    };
}

/// The three actions behind `PUT /actions`.
fn instance_action_spec(action: InstanceAction) -> ActionSpec {
    let counter = counts(&PUT.actions_count, &PUT.actions_fails);
    let (label, admission, class, fault_prefix) = match action {
        InstanceAction::InstanceStart => (
            "InstanceStart",
            Admission::PreBootOnly,
            ActionClass::InstanceStart,
            "Start microvm error",
        ),
        InstanceAction::FlushMetrics => (
            "FlushMetrics",
            Admission::PostBootOnly,
            ActionClass::Other,
            "Metrics error",
        ),
        InstanceAction::SendCtrlAltDel => (
            "SendCtrlAltDel",
            Admission::PostBootOnly,
            ActionClass::Other,
            "Failed to send CTRL+ALT+DEL",
        ),
    };
    ActionSpec {
        label,
        admission,
        class,
        counter,
        fault_prefix,
        latency: None,
    }
}

/// `PATCH /vm`: pause and resume, each timed as Firecracker does.
fn vm_state_spec(state: VmStateChange) -> ActionSpec {
    let latency = match state {
        VmStateChange::Paused => ("pause vm", &METRICS.latencies_us.pause_vm),
        VmStateChange::Resumed => ("resume vm", &METRICS.latencies_us.resume_vm),
    };
    ActionSpec {
        latency: Some(latency),
        ..spec(
            Admission::PostBootOnly,
            ActionClass::VmStateChange,
            None,
            "Internal error while changing the microVM state",
        )
    }
}

const GET: &GetRequestsMetrics = &METRICS.get_api_requests;
const PUT: &PutRequestsMetrics = &METRICS.put_api_requests;
const PATCH: &PatchRequestsMetrics = &METRICS.patch_api_requests;

/// A route Firecracker counts, without a failure counter.
fn count(count: &'static squib_logger::metrics::IncMetric) -> Option<RequestCounter> {
    Some(RequestCounter { count, fails: None })
}

/// A route Firecracker counts, with its failures.
fn counts(
    count: &'static squib_logger::metrics::IncMetric,
    fails: &'static squib_logger::metrics::IncMetric,
) -> Option<RequestCounter> {
    Some(RequestCounter {
        count,
        fails: Some(fails),
    })
}

/// A row's spec; the label is filled in from the route.
fn spec(
    admission: Admission,
    class: ActionClass,
    counter: Option<RequestCounter>,
    fault_prefix: &'static str,
) -> ActionSpec {
    ActionSpec {
        label: "",
        admission,
        class,
        counter,
        fault_prefix,
        latency: None,
    }
}

/// `GET` -> [`crate::routes::Method::Get`], ...
macro_rules! method {
    (GET) => {
        $crate::routes::Method::Get
    };
    (PUT) => {
        $crate::routes::Method::Put
    };
    (PATCH) => {
        $crate::routes::Method::Patch
    };
    (DELETE) => {
        $crate::routes::Method::Delete
    };
}

/// A row's fault prefix, for the router's validation errors (before there is an action to
/// ask). Rows whose spec depends on the payload validate nothing with a prefix.
macro_rules! route_fault_prefix {
    (spec($admission:expr, $class:expr, $counter:expr, $prefix:expr)) => {
        $prefix
    };
    ($spec_fn:ident($($arg:expr),*)) => {
        ""
    };
}

/// Builds [`ApiAction`], [`ApiAction::spec`] and the router's [`ROUTES`] from the table.
macro_rules! define_api_actions {
    ($(
        $(#[doc = $doc:literal])*
        $variant:ident $(($arg:ident: $payload:ty))? => $handler:ident:
            $method:ident $path:literal $(/ {$id:ident})?, $parse:expr,
            $spec_fn:ident($($spec_arg:expr),*);
    )*) => {
        /// One request for the VMM event loop, with its validated payload. Generated from the
        /// table in [`crate::table`].
        #[derive(Debug)]
        pub enum ApiAction {
            $(
                $(#[doc = $doc])*
                $variant $(($payload))?,
            )*
        }

        impl ApiAction {
            /// The action's row of the table: label, admission, timeout class, request
            /// counters and fault prefix.
            #[must_use]
            #[allow(unused_variables)] // rows whose spec does not depend on the payload
            pub fn spec(&self) -> ActionSpec {
                use ActionClass::{BalloonResize, SnapshotCreate, SnapshotLoad};
                use ActionClass::PreBootConfig as Config;
                use Admission::{Always, PostBootOnly, PreBootOnly};
                match self {
                    $(
                        Self::$variant $(($arg))? => {
                            let spec: ActionSpec = $spec_fn($($spec_arg),*);
                            if spec.label.is_empty() {
                                ActionSpec {
                                    label: concat!(stringify!($method), " ", $path),
                                    ..spec
                                }
                            } else {
                                spec
                            }
                        }
                    )*
                }
            }
        }

        /// Every route, in table order, for [`crate::routes::parse_request`].
        pub(crate) static ROUTES: &[$crate::routes::Route] = &[
            $(
                $crate::routes::Route {
                    method: method!($method),
                    path: $path,
                    with_id: { let ids: &[&str] = &[$(stringify!($id)),*]; !ids.is_empty() },
                    fault_prefix: route_fault_prefix!($spec_fn($($spec_arg),*)),
                    parse: |input| {
                        let _payload = ($parse)(input)?;
                        Ok(ApiAction::$variant $(({ let $arg: $payload = _payload; $arg }))?)
                    },
                },
            )*
        ];
    };
}

for_each_api_action!(define_api_actions);
