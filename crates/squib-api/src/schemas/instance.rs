//! `PUT /actions` and `PATCH /vm` bodies: lifecycle requests.

use serde::{Deserialize, Serialize};

use crate::error::RequestError;
use crate::routes::{parse, RouteInput};

/// `PUT /actions` `action_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum InstanceAction {
    /// Build and boot the microVM.
    InstanceStart,
    /// Write a metrics line now.
    FlushMetrics,
    /// Send Ctrl+Alt+Del through the i8042.
    SendCtrlAltDel,
}

/// `PUT /actions` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInstanceActionInfo {
    /// The action.
    pub action_type: InstanceAction,
}

/// `PATCH /vm` `state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum VmStateChange {
    /// Pause every vCPU.
    Paused,
    /// Run every vCPU again.
    Resumed,
}

/// `PATCH /vm` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVm {
    /// The requested state.
    pub state: VmStateChange,
}

/// `PUT /actions`: its `action_type`.
pub(crate) fn parse_action(input: &RouteInput<'_>) -> Result<InstanceAction, RequestError> {
    Ok(parse::json::<RawInstanceActionInfo>(input)?.action_type)
}

/// `PATCH /vm`: its `state`.
pub(crate) fn parse_patch_vm(input: &RouteInput<'_>) -> Result<VmStateChange, RequestError> {
    Ok(parse::json::<RawVm>(input)?.state)
}
