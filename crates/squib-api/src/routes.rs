//! Routing: method + path + body -> a validated [`ApiAction`] (or a route the API thread
//! answers itself). Pure and synchronous, so it is tested and fuzzed without a socket.
//!
//! Follows Firecracker's `parsed_request.rs`: unknown method/path names the first path
//! segment; GET must have no body; PUT/PATCH must have one; path IDs are checked before the
//! body and must equal the body ID.

use serde::de::DeserializeOwned;

use crate::action::ApiAction;
use crate::error::RequestError;
use crate::schemas::balloon::{
    BalloonHintingOp, BalloonStartCmd, BalloonStatsUpdate, BalloonUpdate, RawBalloon,
};
use crate::schemas::boot_source::RawBootSource;
use crate::schemas::cpu_config::RawCpuConfig;
use crate::schemas::drive::{RawDrive, RawDrivePatch};
use crate::schemas::entropy::EntropyConfig;
use crate::schemas::hotplug_memory::{HotplugMemoryUpdate, RawHotplugMemory};
use crate::schemas::instance::{RawInstanceActionInfo, RawVm};
use crate::schemas::logger::RawLogger;
use crate::schemas::machine_config::{RawMachineConfig, RawMachineConfigPatch};
use crate::schemas::metrics::RawMetrics;
use crate::schemas::mmds::RawMmdsConfig;
use crate::schemas::net::{RawNetworkInterface, RawNetworkPatch};
use crate::schemas::pmem::{RawPmem, RawPmemPatch};
use crate::schemas::serial::RawSerial;
use crate::schemas::snapshot::{RawSnapshotCreate, RawSnapshotLoad};
use crate::schemas::vsock::RawVsock;
use crate::schemas::{
    DriveId, IfaceId, MachineConfig, MachineConfigPatch, MmdsConfig, MmdsContents, SchemaError,
    SnapshotLoadConfig, VsockConfig,
};

/// The methods Firecracker serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// GET
    Get,
    /// PUT
    Put,
    /// PATCH
    Patch,
    /// DELETE
    Delete,
}

impl Method {
    /// Firecracker's spelling in debug log lines (`Put`, `Get`, ...).
    #[must_use]
    pub const fn log_name(self) -> &'static str {
        match self {
            Self::Get => "Get",
            Self::Put => "Put",
            Self::Patch => "Patch",
            Self::Delete => "Delete",
        }
    }
}

/// What a request turned into.
// One short-lived value per request: boxing the action would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Parsed {
    /// `GET /`, answered from the state mirror.
    InstanceInfo,
    /// `GET /version`.
    Version,
    /// An action for the VMM; `deprecation` is the warning when a deprecated field was used.
    Action {
        /// The action.
        action: ApiAction,
        /// Warning text; `Some` adds `Deprecation: true` to the response.
        deprecation: Option<&'static str>,
    },
}

fn action(action: ApiAction) -> Result<Parsed, RequestError> {
    Ok(Parsed::Action {
        action,
        deprecation: None,
    })
}

fn json<T: DeserializeOwned>(body: &[u8]) -> Result<T, RequestError> {
    serde_json::from_slice(body).map_err(RequestError::Deserialize)
}

fn validate<R, T: TryFrom<R, Error = SchemaError>>(
    prefix: &'static str,
    raw: R,
) -> Result<T, RequestError> {
    T::try_from(raw).map_err(|source| RequestError::Invalid { prefix, source })
}

fn parsed<R: DeserializeOwned, T: TryFrom<R, Error = SchemaError>>(
    prefix: &'static str,
    body: &[u8],
) -> Result<T, RequestError> {
    validate(prefix, json::<R>(body)?)
}

fn path_id<T: TryFrom<String, Error = SchemaError>>(id: &str) -> Result<T, RequestError> {
    T::try_from(id.to_owned()).map_err(RequestError::InvalidPathId)
}

/// Parse one request. `method` is the raw method text; `path` has no query string.
///
/// # Errors
/// [`RequestError`] with Firecracker's message for the first problem found.
pub fn parse_request(method: &str, path: &str, body: &[u8]) -> Result<Parsed, RequestError> {
    let segments: Vec<&str> = path.strip_prefix('/').unwrap_or(path).split('/').collect();
    let invalid = || RequestError::InvalidPathMethod {
        method: method.to_owned(),
        path: segments[0].to_owned(),
    };
    let method = match method {
        "GET" => Method::Get,
        "PUT" => Method::Put,
        "PATCH" => Method::Patch,
        "DELETE" => Method::Delete,
        _ => return Err(invalid()),
    };
    let parsed = match method {
        Method::Get => parse_get(&segments, body),
        Method::Put => parse_put(&segments, body),
        Method::Patch => parse_patch(&segments, body),
        Method::Delete => parse_delete(&segments),
    };
    match parsed {
        Some(result) => result,
        None => Err(invalid()),
    }
}

fn parse_get(segments: &[&str], body: &[u8]) -> Option<Result<Parsed, RequestError>> {
    let result = match segments {
        [""] => Ok(Parsed::InstanceInfo),
        ["version"] => Ok(Parsed::Version),
        ["vm", "config"] => action(ApiAction::GetVmConfig),
        ["machine-config"] => action(ApiAction::GetMachineConfig),
        ["mmds"] => action(ApiAction::GetMmds),
        ["balloon"] => action(ApiAction::GetBalloon),
        ["balloon", "statistics"] => action(ApiAction::GetBalloonStats),
        ["balloon", "hinting", "status"] => action(ApiAction::GetBalloonHintingStatus),
        ["hotplug", "memory"] => action(ApiAction::GetHotplugMemory),
        _ => return None,
    };
    if !body.is_empty() {
        return Some(Err(RequestError::GetWithBody));
    }
    Some(result)
}

fn deprecated(action: ApiAction, warning: Option<&'static str>) -> Result<Parsed, RequestError> {
    if let Some(w) = warning {
        log::warn!("{w}");
    }
    Ok(Parsed::Action {
        action,
        deprecation: warning,
    })
}

fn put_machine_config(body: &[u8]) -> Result<Parsed, RequestError> {
    let config: MachineConfig = parsed::<RawMachineConfig, _>("Machine config error", body)?;
    let warning = config
        .uses_deprecated_cpu_template()
        .then_some("PUT /machine-config: cpu_template field is deprecated.");
    deprecated(ApiAction::PutMachineConfig(config), warning)
}

fn put_drive(id: &str, body: &[u8]) -> Result<Parsed, RequestError> {
    path_id::<DriveId>(id)?;
    let raw: RawDrive = json(body)?;
    if raw.drive_id != id {
        return Err(RequestError::IdMismatch);
    }
    action(ApiAction::PutDrive(validate("Drive config error", raw)?))
}

fn put_network(id: &str, body: &[u8]) -> Result<Parsed, RequestError> {
    path_id::<IfaceId>(id)?;
    let raw: RawNetworkInterface = json(body)?;
    if raw.iface_id != id {
        return Err(RequestError::NetIdMismatch {
            path: id.to_owned(),
            body: raw.iface_id,
        });
    }
    action(ApiAction::PutNetwork(validate(
        "Network interface error",
        raw,
    )?))
}

fn put_pmem(id: &str, body: &[u8]) -> Result<Parsed, RequestError> {
    path_id::<DriveId>(id)?;
    let raw: RawPmem = json(body)?;
    if raw.id != id {
        return Err(RequestError::IdMismatch);
    }
    action(ApiAction::PutPmem(validate("Pmem config error", raw)?))
}

fn put_vsock(body: &[u8]) -> Result<Parsed, RequestError> {
    let raw: RawVsock = json(body)?;
    let warning = raw
        .uses_deprecated_id()
        .then_some("PUT /vsock: vsock_id field is deprecated.");
    let config: VsockConfig = validate("Vsock config error", raw)?;
    deprecated(ApiAction::PutVsock(config), warning)
}

fn put_mmds_config(body: &[u8]) -> Result<Parsed, RequestError> {
    let config: MmdsConfig = parsed::<RawMmdsConfig, _>("MMMDS config error", body)?;
    let warning = config
        .is_deprecated_version()
        .then_some("PUT /mmds/config: V1 is deprecated. Use V2 instead.");
    deprecated(ApiAction::PutMmdsConfig(config), warning)
}

fn snapshot_load(body: &[u8]) -> Result<Parsed, RequestError> {
    let raw: RawSnapshotLoad = json(body)?;
    let warning = raw.uses_deprecated_fields().then_some(
        "PUT /snapshot/load: mem_file_path and enable_diff_snapshots fields are deprecated.",
    );
    let config = SnapshotLoadConfig::try_from(raw).map_err(|source| match source {
        SchemaError::SnapshotMemBackendMissing | SchemaError::SnapshotMemBackendTooMany => {
            RequestError::SnapshotMemBackend(source)
        }
        source => RequestError::Invalid {
            prefix: "Load snapshot error",
            source,
        },
    })?;
    deprecated(ApiAction::SnapshotLoad(config), warning)
}

fn parse_put(segments: &[&str], body: &[u8]) -> Option<Result<Parsed, RequestError>> {
    let known = matches!(
        segments,
        ["actions"
            | "machine-config"
            | "cpu-config"
            | "boot-source"
            | "vsock"
            | "entropy"
            | "balloon"]
            | ["logger" | "metrics" | "serial" | "mmds"]
            | ["drives" | "network-interfaces" | "pmem", _]
            | ["mmds", "config"]
            | ["hotplug", "memory"]
            | ["snapshot", "create" | "load"]
    );
    if !known {
        return None;
    }
    if body.is_empty() {
        return Some(Err(RequestError::EmptyPut));
    }
    Some(put_route(segments, body))
}

fn put_route(segments: &[&str], body: &[u8]) -> Result<Parsed, RequestError> {
    use ApiAction as A;
    match segments {
        ["actions"] => action(A::Action(json::<RawInstanceActionInfo>(body)?.action_type)),
        ["machine-config"] => put_machine_config(body),
        ["cpu-config"] => action(A::PutCpuConfig(parsed::<RawCpuConfig, _>(
            "Configure CPU error",
            body,
        )?)),
        ["boot-source"] => action(A::PutBootSource(parsed::<RawBootSource, _>(
            "Boot source error",
            body,
        )?)),
        ["vsock"] => put_vsock(body),
        ["entropy"] => action(A::PutEntropy(json::<EntropyConfig>(body)?)),
        ["balloon"] => action(A::PutBalloon(parsed::<RawBalloon, _>(
            "Balloon config error",
            body,
        )?)),
        ["logger"] => action(A::PutLogger(parsed::<RawLogger, _>("Logger error", body)?)),
        ["metrics"] => action(A::PutMetrics(parsed::<RawMetrics, _>(
            "Metrics error",
            body,
        )?)),
        ["serial"] => action(A::PutSerial(parsed::<RawSerial, _>(
            "Serial config error",
            body,
        )?)),
        ["mmds"] => action(A::PutMmds(MmdsContents(json(body)?))),
        ["drives", id] => put_drive(id, body),
        ["network-interfaces", id] => put_network(id, body),
        ["pmem", id] => put_pmem(id, body),
        ["mmds", "config"] => put_mmds_config(body),
        ["hotplug", "memory"] => action(A::PutHotplugMemory(parsed::<RawHotplugMemory, _>(
            "Memory hotplug config error",
            body,
        )?)),
        ["snapshot", "create"] => action(A::SnapshotCreate(parsed::<RawSnapshotCreate, _>(
            "Create snapshot error",
            body,
        )?)),
        _ => snapshot_load(body),
    }
}

fn patch_drive(id: &str, body: &[u8]) -> Result<Parsed, RequestError> {
    path_id::<DriveId>(id)?;
    let raw: RawDrivePatch = json(body)?;
    if raw.drive_id != id {
        return Err(RequestError::IdMismatch);
    }
    action(ApiAction::PatchDrive(validate("Drive update error", raw)?))
}

fn patch_network(id: &str, body: &[u8]) -> Result<Parsed, RequestError> {
    path_id::<IfaceId>(id)?;
    let raw: RawNetworkPatch = json(body)?;
    if raw.iface_id != id {
        return Err(RequestError::NetIdMismatch {
            path: id.to_owned(),
            body: raw.iface_id,
        });
    }
    action(ApiAction::PatchNetwork(validate(
        "Network interface update error",
        raw,
    )?))
}

fn patch_pmem(id: &str, body: &[u8]) -> Result<Parsed, RequestError> {
    path_id::<DriveId>(id)?;
    let raw: RawPmemPatch = json(body)?;
    if raw.id != id {
        return Err(RequestError::IdMismatch);
    }
    action(ApiAction::PatchPmem(validate("Pmem update error", raw)?))
}

fn patch_machine_config(body: &[u8]) -> Result<Parsed, RequestError> {
    let raw: RawMachineConfigPatch = json(body)?;
    let patch = MachineConfigPatch::try_from(raw).map_err(|source| match source {
        SchemaError::EmptyPatch => RequestError::EmptyPatch,
        source => RequestError::Invalid {
            prefix: "Machine config error",
            source,
        },
    })?;
    action(ApiAction::PatchMachineConfig(patch))
}

fn parse_patch(segments: &[&str], body: &[u8]) -> Option<Result<Parsed, RequestError>> {
    use ApiAction as A;
    match segments {
        ["balloon", "hinting", "start"] => {
            let cmd = if body.is_empty() {
                Ok(BalloonStartCmd::default())
            } else {
                json(body)
            };
            return Some(cmd.and_then(|c| {
                action(A::PatchBalloonHinting {
                    op: BalloonHintingOp::Start(c),
                })
            }));
        }
        ["balloon", "hinting", "stop"] => {
            return Some(action(A::PatchBalloonHinting {
                op: BalloonHintingOp::Stop,
            }))
        }
        _ => {}
    }
    let known = matches!(
        segments,
        ["machine-config" | "balloon" | "mmds" | "vm"]
            | ["drives" | "network-interfaces" | "pmem", _]
            | ["balloon", "statistics"]
            | ["hotplug", "memory"]
    );
    if !known {
        return None;
    }
    if body.is_empty() {
        return Some(Err(RequestError::EmptyPatch));
    }
    Some(match segments {
        ["machine-config"] => patch_machine_config(body),
        ["balloon"] => json::<BalloonUpdate>(body).and_then(|u| action(A::PatchBalloon(u))),
        ["mmds"] => json(body).and_then(|v| action(A::PatchMmds(MmdsContents(v)))),
        ["vm"] => json::<RawVm>(body).and_then(|v| action(A::PatchVm(v.state))),
        ["drives", id] => patch_drive(id, body),
        ["network-interfaces", id] => patch_network(id, body),
        ["pmem", id] => patch_pmem(id, body),
        ["balloon", "statistics"] => {
            json::<BalloonStatsUpdate>(body).and_then(|u| action(A::PatchBalloonStats(u)))
        }
        _ => json::<HotplugMemoryUpdate>(body).and_then(|u| action(A::PatchHotplugMemory(u))),
    })
}

fn parse_delete(segments: &[&str]) -> Option<Result<Parsed, RequestError>> {
    Some(match segments {
        ["drives", id] => {
            path_id(id).and_then(|drive_id| action(ApiAction::DeleteDrive { drive_id }))
        }
        ["network-interfaces", id] => {
            path_id(id).and_then(|iface_id| action(ApiAction::DeleteNetwork { iface_id }))
        }
        ["pmem", id] => path_id(id).and_then(|pmem_id| action(ApiAction::DeletePmem { pmem_id })),
        _ => return None,
    })
}

#[cfg(test)]
mod tests;
