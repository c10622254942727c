//! A lock-free copy of what `GET /` reports, so the API thread answers it without the VMM
//! (even while a long action holds the event loop). The VMM calls [`StateMirror::set_state`]
//! on every state change.

use arc_swap::ArcSwap;
use serde::Serialize;
use std::sync::Arc;

use crate::version::{APP_NAME, FIRECRACKER_VERSION};

/// The microVM state as `GET /` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum VmState {
    /// Before `InstanceStart`.
    #[serde(rename = "Not started")]
    NotStarted,
    /// vCPUs running.
    Running,
    /// vCPUs paused.
    Paused,
}

/// The `GET /` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceInfo {
    /// `--id`.
    pub id: String,
    /// Current state.
    pub state: VmState,
    /// Firecracker version squib implements.
    pub vmm_version: &'static str,
    /// Always `Firecracker`.
    pub app_name: &'static str,
}

/// Shared between the VMM (writer) and the API thread (reader).
#[derive(Debug)]
pub struct StateMirror {
    info: ArcSwap<InstanceInfo>,
}

impl StateMirror {
    /// A mirror for instance `id`, not started.
    #[must_use]
    pub fn new(id: String) -> Self {
        let info = InstanceInfo {
            id,
            state: VmState::NotStarted,
            vmm_version: FIRECRACKER_VERSION,
            app_name: APP_NAME,
        };
        Self {
            info: ArcSwap::from_pointee(info),
        }
    }

    /// Record a state change.
    pub fn set_state(&self, state: VmState) {
        self.info.rcu(|old| {
            Arc::new(InstanceInfo {
                state,
                ..InstanceInfo::clone(old)
            })
        });
    }

    /// The current state.
    #[must_use]
    pub fn state(&self) -> VmState {
        self.info.load().state
    }

    /// The current `GET /` body.
    #[must_use]
    pub fn instance_info(&self) -> Arc<InstanceInfo> {
        self.info.load_full()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_state_changes() {
        let mirror = StateMirror::new("vm1".into());
        let json = serde_json::to_value(&*mirror.instance_info()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"id":"vm1","state":"Not started","vmm_version":FIRECRACKER_VERSION,"app_name":"Firecracker"})
        );
        mirror.set_state(VmState::Paused);
        assert_eq!(mirror.state(), VmState::Paused);
        assert_eq!(
            serde_json::to_value(&*mirror.instance_info()).unwrap()["state"],
            "Paused"
        );
    }
}
