//! What the API thread hands to the VMM event loop: one [`ApiAction`] per request, answered
//! with one [`ApiResponse`].
//!
//! Actions carry validated payloads only. [`ApiAction::admission`] encodes Firecracker's
//! pre-boot / post-boot table (`rpc_interface.rs`); the VMM applies it in one place.
//! [`ApiAction::class`] selects the API thread's reply timeout.

use std::fmt::Display;
use std::time::Duration;

use serde::Serialize;

use crate::schemas::{
    BalloonConfig, BalloonHintingOp, BalloonStatsUpdate, BalloonUpdate, BootSourceConfig,
    CpuConfig, DriveConfig, DriveId, DrivePatch, EntropyConfig, HotplugMemoryConfig,
    HotplugMemoryUpdate, IfaceId, InstanceAction, LoggerConfig, MachineConfig, MachineConfigPatch,
    MetricsConfig, MmdsConfig, MmdsContents, NetworkInterfaceConfig, NetworkPatch, PmemConfig,
    PmemPatch, SerialConfig, SnapshotCreateConfig, SnapshotLoadConfig, VmStateChange, VsockConfig,
};

/// Per-action class: how long the API thread waits for the VMM's reply.
#[derive(Debug, Clone, Copy, Eq, PartialEq)]
pub enum ActionClass {
    /// Configuration changes and GETs (5 s).
    PreBootConfig,
    /// `InstanceStart` (30 s).
    InstanceStart,
    /// `PUT /snapshot/create` (5 min).
    SnapshotCreate,
    /// `PUT /snapshot/load` (5 min).
    SnapshotLoad,
    /// `PATCH /vm` (5 s).
    VmStateChange,
    /// `PATCH /balloon` (30 s).
    BalloonResize,
    /// Everything else (5 s).
    Other,
}

impl ActionClass {
    /// Name used in log lines and timeout messages.
    #[must_use]
    pub const fn label(self) -> &'static str {
        match self {
            Self::PreBootConfig => "configuration",
            Self::InstanceStart => "InstanceStart",
            Self::SnapshotCreate => "PUT /snapshot/create",
            Self::SnapshotLoad => "PUT /snapshot/load",
            Self::VmStateChange => "PATCH /vm",
            Self::BalloonResize => "PATCH /balloon",
            Self::Other => "VMM action",
        }
    }

    /// How long the API thread waits for the VMM.
    #[must_use]
    pub const fn timeout(self) -> Duration {
        match self {
            Self::PreBootConfig | Self::VmStateChange | Self::Other => Duration::from_secs(5),
            Self::InstanceStart | Self::BalloonResize => Duration::from_secs(30),
            Self::SnapshotCreate | Self::SnapshotLoad => Duration::from_secs(300),
        }
    }
}

/// When Firecracker accepts an action.
#[derive(Debug, Clone, Copy, Eq, PartialEq)]
pub enum Admission {
    /// Before `InstanceStart` / snapshot load only.
    PreBootOnly,
    /// After boot only.
    PostBootOnly,
    /// In both states (the VMM may still refuse, e.g. hotplug without PCI).
    Always,
}

/// One request for the VMM event loop.
#[derive(Debug)]
#[allow(missing_docs)]
pub enum ApiAction {
    GetVmConfig,
    GetMachineConfig,
    GetMmds,
    GetBalloon,
    GetBalloonStats,
    GetBalloonHintingStatus,
    GetHotplugMemory,
    PutBootSource(BootSourceConfig),
    PutDrive(DriveConfig),
    PatchDrive(DrivePatch),
    DeleteDrive { drive_id: DriveId },
    PutNetwork(NetworkInterfaceConfig),
    PatchNetwork(NetworkPatch),
    DeleteNetwork { iface_id: IfaceId },
    PutVsock(VsockConfig),
    PutMmds(MmdsContents),
    PatchMmds(MmdsContents),
    PutMmdsConfig(MmdsConfig),
    PutBalloon(BalloonConfig),
    PatchBalloon(BalloonUpdate),
    PatchBalloonStats(BalloonStatsUpdate),
    PatchBalloonHinting { op: BalloonHintingOp },
    PutEntropy(EntropyConfig),
    PutSerial(SerialConfig),
    PutPmem(PmemConfig),
    PatchPmem(PmemPatch),
    DeletePmem { pmem_id: DriveId },
    PutHotplugMemory(HotplugMemoryConfig),
    PatchHotplugMemory(HotplugMemoryUpdate),
    PutCpuConfig(CpuConfig),
    PutMachineConfig(MachineConfig),
    PatchMachineConfig(MachineConfigPatch),
    PutLogger(LoggerConfig),
    PutMetrics(MetricsConfig),
    Action(InstanceAction),
    PatchVm(VmStateChange),
    SnapshotCreate(SnapshotCreateConfig),
    SnapshotLoad(SnapshotLoadConfig),
}

impl ApiAction {
    /// The timeout class.
    #[must_use]
    pub const fn class(&self) -> ActionClass {
        match self {
            Self::Action(InstanceAction::InstanceStart) => ActionClass::InstanceStart,
            Self::Action(_) => ActionClass::Other,
            Self::PatchVm(_) => ActionClass::VmStateChange,
            Self::PatchBalloon(_) => ActionClass::BalloonResize,
            Self::SnapshotCreate(_) => ActionClass::SnapshotCreate,
            Self::SnapshotLoad(_) => ActionClass::SnapshotLoad,
            _ => ActionClass::PreBootConfig,
        }
    }

    /// Firecracker's state table (facts §1). Post-boot `PUT` of drives, network interfaces
    /// and pmem is PCI hotplug, so those are [`Admission::Always`].
    #[must_use]
    pub const fn admission(&self) -> Admission {
        use ApiAction as A;
        match self {
            A::GetVmConfig
            | A::GetMachineConfig
            | A::GetMmds
            | A::GetBalloon
            | A::PutDrive(_)
            | A::PutNetwork(_)
            | A::PutPmem(_)
            | A::PutMmds(_)
            | A::PatchMmds(_) => Admission::Always,
            A::PutBootSource(_)
            | A::PutVsock(_)
            | A::PutMmdsConfig(_)
            | A::PutBalloon(_)
            | A::PutEntropy(_)
            | A::PutSerial(_)
            | A::PutHotplugMemory(_)
            | A::PutCpuConfig(_)
            | A::PutMachineConfig(_)
            | A::PatchMachineConfig(_)
            | A::PutLogger(_)
            | A::PutMetrics(_)
            | A::Action(InstanceAction::InstanceStart)
            | A::SnapshotLoad(_) => Admission::PreBootOnly,
            A::GetBalloonStats
            | A::GetBalloonHintingStatus
            | A::GetHotplugMemory
            | A::PatchDrive(_)
            | A::DeleteDrive { .. }
            | A::PatchNetwork(_)
            | A::DeleteNetwork { .. }
            | A::PatchPmem(_)
            | A::DeletePmem { .. }
            | A::PatchBalloon(_)
            | A::PatchBalloonStats(_)
            | A::PatchBalloonHinting { .. }
            | A::PatchHotplugMemory(_)
            | A::Action(InstanceAction::FlushMetrics | InstanceAction::SendCtrlAltDel)
            | A::PatchVm(_)
            | A::SnapshotCreate(_) => Admission::PostBootOnly,
        }
    }

    /// Route label for log lines.
    #[must_use]
    pub const fn label(&self) -> &'static str {
        use ApiAction as A;
        match self {
            A::GetVmConfig => "GET /vm/config",
            A::GetMachineConfig => "GET /machine-config",
            A::GetMmds => "GET /mmds",
            A::GetBalloon => "GET /balloon",
            A::GetBalloonStats => "GET /balloon/statistics",
            A::GetBalloonHintingStatus => "GET /balloon/hinting/status",
            A::GetHotplugMemory => "GET /hotplug/memory",
            A::PutBootSource(_) => "PUT /boot-source",
            A::PutDrive(_) => "PUT /drives",
            A::PatchDrive(_) => "PATCH /drives",
            A::DeleteDrive { .. } => "DELETE /drives",
            A::PutNetwork(_) => "PUT /network-interfaces",
            A::PatchNetwork(_) => "PATCH /network-interfaces",
            A::DeleteNetwork { .. } => "DELETE /network-interfaces",
            A::PutVsock(_) => "PUT /vsock",
            A::PutMmds(_) => "PUT /mmds",
            A::PatchMmds(_) => "PATCH /mmds",
            A::PutMmdsConfig(_) => "PUT /mmds/config",
            A::PutBalloon(_) => "PUT /balloon",
            A::PatchBalloon(_) => "PATCH /balloon",
            A::PatchBalloonStats(_) => "PATCH /balloon/statistics",
            A::PatchBalloonHinting { .. } => "PATCH /balloon/hinting",
            A::PutEntropy(_) => "PUT /entropy",
            A::PutSerial(_) => "PUT /serial",
            A::PutPmem(_) => "PUT /pmem",
            A::PatchPmem(_) => "PATCH /pmem",
            A::DeletePmem { .. } => "DELETE /pmem",
            A::PutHotplugMemory(_) => "PUT /hotplug/memory",
            A::PatchHotplugMemory(_) => "PATCH /hotplug/memory",
            A::PutCpuConfig(_) => "PUT /cpu-config",
            A::PutMachineConfig(_) => "PUT /machine-config",
            A::PatchMachineConfig(_) => "PATCH /machine-config",
            A::PutLogger(_) => "PUT /logger",
            A::PutMetrics(_) => "PUT /metrics",
            A::Action(InstanceAction::InstanceStart) => "InstanceStart",
            A::Action(InstanceAction::FlushMetrics) => "FlushMetrics",
            A::Action(InstanceAction::SendCtrlAltDel) => "SendCtrlAltDel",
            A::PatchVm(_) => "PATCH /vm",
            A::SnapshotCreate(_) => "PUT /snapshot/create",
            A::SnapshotLoad(_) => "PUT /snapshot/load",
        }
    }
}

/// The VMM's answer to one action.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ApiResponse {
    /// `204`, no body.
    NoContent,
    /// `200` with this JSON body.
    Json(serde_json::Value),
    /// An error status (400, 413) with `{"fault_message": ...}`.
    Fault {
        /// HTTP status.
        status: u16,
        /// The message.
        fault_message: String,
    },
}

impl ApiResponse {
    /// A `400` with `msg` as the `fault_message`.
    pub fn fault(msg: impl Display) -> Self {
        Self::Fault {
            status: 400,
            fault_message: msg.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_and_timeouts() {
        assert_eq!(
            ApiAction::Action(InstanceAction::InstanceStart).class(),
            ActionClass::InstanceStart
        );
        assert_eq!(
            ActionClass::InstanceStart.timeout(),
            Duration::from_secs(30)
        );
        assert_eq!(
            ActionClass::SnapshotLoad.timeout(),
            Duration::from_secs(300)
        );
        assert_eq!(
            ApiAction::PatchBalloon(BalloonUpdate { amount_mib: 1 }).class(),
            ActionClass::BalloonResize
        );
        assert_eq!(ApiAction::GetMmds.class().timeout(), Duration::from_secs(5));
    }

    #[test]
    fn admission_matches_firecracker_table() {
        let drive_patch = DrivePatch {
            drive_id: DriveId::try_from("a").unwrap(),
            path_on_host: None,
            rate_limiter: None,
        };
        assert_eq!(
            ApiAction::PatchDrive(drive_patch).admission(),
            Admission::PostBootOnly
        );
        assert_eq!(
            ApiAction::GetBalloonHintingStatus.admission(),
            Admission::PostBootOnly
        );
        assert_eq!(
            ApiAction::PutEntropy(EntropyConfig::default()).admission(),
            Admission::PreBootOnly
        );
        assert_eq!(
            ApiAction::PatchMmds(MmdsContents(serde_json::json!({}))).admission(),
            Admission::Always
        );
        assert_eq!(
            ApiAction::Action(InstanceAction::FlushMetrics).admission(),
            Admission::PostBootOnly
        );
    }

    #[test]
    fn fault_is_400() {
        assert_eq!(
            ApiResponse::fault("x"),
            ApiResponse::Fault {
                status: 400,
                fault_message: "x".into()
            }
        );
    }
}
