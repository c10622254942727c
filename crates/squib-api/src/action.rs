//! What the API thread hands to the VMM event loop: one [`ApiAction`] per request, answered
//! with one [`ApiResponse`].
//!
//! [`ApiAction`] itself is generated from the one table of actions in [`crate::table`]; this
//! module holds the vocabulary that table is written in: [`ActionSpec`] (label, [`Admission`],
//! [`ActionClass`] and its timeout, [`RequestCounter`], fault prefix) and [`ApiResponse`].

use std::fmt::Display;
use std::time::Duration;

use serde::Serialize;
use squib_logger::metrics::{IncMetric, StoreMetric};

pub use crate::table::ApiAction;

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

/// Firecracker's per-route request counters (`get_api_requests.machine_cfg_count`,
/// `put_api_requests.drive_count` and `drive_fails`, ...).
#[derive(Debug, Clone, Copy)]
pub struct RequestCounter {
    /// Counts every request the VMM handles on the route.
    pub count: &'static IncMetric,
    /// Counts the refused ones, where Firecracker keeps such a counter.
    pub fails: Option<&'static IncMetric>,
}

/// Everything squib knows about one action besides its payload: one row of the table in
/// [`crate::table`], read by the router, the API thread's timeout, the VMM's admission gate,
/// the request counters and the VMM's fault messages.
#[derive(Debug, Clone, Copy)]
pub struct ActionSpec {
    /// Names the action in log lines and timeout messages (`PUT /drives`, `InstanceStart`).
    pub label: &'static str,
    /// When the action is allowed.
    pub admission: Admission,
    /// How long the API thread waits for the VMM.
    pub class: ActionClass,
    /// The request counters, when Firecracker keeps some for the route.
    pub counter: Option<RequestCounter>,
    /// Firecracker's `<resource> error` prefix of this action's fault messages.
    pub fault_prefix: &'static str,
    /// For the actions Firecracker times (`pause vm`, `resume vm`): their name in the log
    /// line and where the API thread stores the request's round trip in µs.
    pub latency: Option<(&'static str, &'static StoreMetric)>,
}

impl ActionSpec {
    /// Count one handled request, and its failure when `response` is a fault.
    pub fn count(&self, response: &ApiResponse) {
        let Some(counter) = self.counter else { return };
        counter.count.inc();
        if let (Some(fails), ApiResponse::Fault { .. }) = (counter.fails, response) {
            fails.inc();
        }
    }
}

impl ApiAction {
    /// The timeout class.
    #[must_use]
    pub fn class(&self) -> ActionClass {
        self.spec().class
    }

    /// When Firecracker accepts the action.
    #[must_use]
    pub fn admission(&self) -> Admission {
        self.spec().admission
    }

    /// The action's name in log lines.
    #[must_use]
    pub fn label(&self) -> &'static str {
        self.spec().label
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
    use squib_logger::metrics::METRICS;

    use super::*;
    use crate::schemas::{
        BalloonUpdate, DriveId, DrivePatch, EntropyConfig, InstanceAction, MmdsContents,
    };

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

    #[test]
    fn a_refused_action_counts_as_a_request_and_a_failure() {
        let put = &METRICS.put_api_requests;
        let before = (put.actions_count.count(), put.actions_fails.count());
        let spec = ApiAction::Action(InstanceAction::FlushMetrics).spec();
        spec.count(&ApiResponse::fault("refused"));
        spec.count(&ApiResponse::NoContent);
        assert_eq!(put.actions_count.count(), before.0 + 2);
        assert_eq!(put.actions_fails.count(), before.1 + 1);
    }

    #[test]
    fn labels_name_the_route_or_the_instance_action() {
        assert_eq!(ApiAction::GetMmds.label(), "GET /mmds");
        assert_eq!(
            ApiAction::DeletePmem(DriveId::try_from("p").unwrap()).label(),
            "DELETE /pmem"
        );
        assert_eq!(
            ApiAction::Action(InstanceAction::SendCtrlAltDel).label(),
            "SendCtrlAltDel"
        );
    }
}
