//! `PUT /snapshot/create` and `PUT /snapshot/load`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::error::SchemaError;
use super::ids::IfaceId;
use super::machine_config::HugePages;
use super::paths::{host_path, socket_path};

use crate::error::RequestError;
use crate::routes::{parse, RouteInput};

/// Full or diff snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
pub enum SnapshotType {
    /// All guest memory.
    #[default]
    Full,
    /// Dirty pages only.
    Diff,
}

/// `PUT /snapshot/create` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSnapshotCreate {
    snapshot_path: String,
    mem_file_path: String,
    #[serde(default)]
    snapshot_type: SnapshotType,
}

/// A validated snapshot-create request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotCreateConfig {
    /// VM state file.
    pub snapshot_path: PathBuf,
    /// Guest memory file.
    pub mem_file_path: PathBuf,
    /// Full or diff.
    pub snapshot_type: SnapshotType,
}

impl TryFrom<RawSnapshotCreate> for SnapshotCreateConfig {
    type Error = SchemaError;

    fn try_from(raw: RawSnapshotCreate) -> Result<Self, SchemaError> {
        Ok(Self {
            snapshot_path: host_path("snapshot_path", raw.snapshot_path)?,
            mem_file_path: host_path("mem_file_path", raw.mem_file_path)?,
            snapshot_type: raw.snapshot_type,
        })
    }
}

/// Where restored guest memory comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum MemBackendType {
    /// mmap of the memory file.
    File,
    /// A userfaultfd handler listening on a Unix socket.
    Uffd,
}

/// `mem_backend` object.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MemBackend {
    /// Backend kind.
    pub backend_type: MemBackendType,
    /// File or socket path.
    pub backend_path: PathBuf,
}

/// `network_overrides` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNetworkOverride {
    iface_id: String,
    host_dev_name: String,
}

/// A TAP swap for one restored interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkOverride {
    /// Interface in the snapshot.
    pub iface_id: IfaceId,
    /// New host TAP.
    pub host_dev_name: String,
}

/// `vsock_override` object.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVsockOverride {
    uds_path: String,
}

/// `huge_pages` of a load: Firecracker's `Snapshot` (the default) keeps what the snapshot
/// had; the others override it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum LoadHugePages {
    /// As in the snapshot.
    #[default]
    Snapshot,
    /// Normal 4 KiB pages.
    None,
    /// Transparent huge pages.
    Transparent,
    /// hugetlbfs 2 MiB pages.
    #[serde(rename = "2M")]
    Hugetlbfs2M,
}

impl LoadHugePages {
    /// The backing to use instead of the snapshot's, if any.
    #[must_use]
    pub fn override_value(self) -> Option<HugePages> {
        match self {
            Self::Snapshot => None,
            Self::None => Some(HugePages::None),
            Self::Transparent => Some(HugePages::Transparent),
            Self::Hugetlbfs2M => Some(HugePages::Hugetlbfs2M),
        }
    }
}

/// Longest record window of a working set (ten minutes).
pub const MAX_WORKING_SET_RECORD_MS: u64 = 600_000;
/// Record window when `record_ms` is not given: a restored function's first second.
pub const DEFAULT_WORKING_SET_RECORD_MS: u64 = 1000;

/// squib's `working_set` object of a load (not in Firecracker's API).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWorkingSet {
    path: String,
    #[serde(default)]
    record_ms: Option<u64>,
}

/// Working-set prefetch (squib only): when the file at `path` exists, the guest pages it
/// lists are read in before the guest resumes; when it does not, the pages the restored guest
/// touches in its first `record_ms` are written there for the next load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkingSetConfig {
    /// The working-set file.
    pub path: PathBuf,
    /// How long after the resume the touched pages are recorded.
    pub record_ms: u64,
}

/// `PUT /snapshot/load` body; an unknown field is refused, as Firecracker's code does.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSnapshotLoad {
    snapshot_path: String,
    #[serde(default)]
    mem_backend: Option<MemBackend>,
    #[serde(default)]
    mem_file_path: Option<String>,
    #[serde(default)]
    track_dirty_pages: bool,
    #[serde(default)]
    enable_diff_snapshots: bool,
    #[serde(default)]
    resume_vm: bool,
    #[serde(default)]
    network_overrides: Vec<RawNetworkOverride>,
    #[serde(default)]
    vsock_override: Option<RawVsockOverride>,
    #[serde(default)]
    clock_realtime: bool,
    #[serde(default)]
    huge_pages: LoadHugePages,
    #[serde(default)]
    working_set: Option<RawWorkingSet>,
}

impl RawSnapshotLoad {
    /// `true` when a deprecated field (`mem_file_path`, `enable_diff_snapshots`) was used.
    #[must_use]
    pub fn uses_deprecated_fields(&self) -> bool {
        self.mem_file_path.is_some() || self.enable_diff_snapshots
    }
}

/// A validated snapshot-load request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotLoadConfig {
    /// VM state file.
    pub snapshot_path: PathBuf,
    /// Memory backend (from `mem_backend` or the deprecated `mem_file_path`).
    pub mem_backend: MemBackend,
    /// Dirty page tracking after restore.
    pub track_dirty_pages: bool,
    /// Resume right after loading.
    pub resume_vm: bool,
    /// TAP swaps.
    pub network_overrides: Vec<NetworkOverride>,
    /// New vsock socket path.
    pub vsock_override: Option<PathBuf>,
    /// Advance kvmclock by the wall-clock time passed.
    pub clock_realtime: bool,
    /// Memory backing; `None` = as in the snapshot.
    pub huge_pages: Option<HugePages>,
    /// squib's working-set prefetch, if asked for.
    pub working_set: Option<WorkingSetConfig>,
}

impl TryFrom<RawSnapshotLoad> for SnapshotLoadConfig {
    type Error = SchemaError;

    fn try_from(raw: RawSnapshotLoad) -> Result<Self, SchemaError> {
        let mem_backend = match (raw.mem_backend, raw.mem_file_path) {
            (Some(backend), None) => backend,
            (None, Some(path)) => MemBackend {
                backend_type: MemBackendType::File,
                backend_path: host_path("mem_file_path", path)?,
            },
            (None, None) => return Err(SchemaError::SnapshotMemBackendMissing),
            (Some(_), Some(_)) => return Err(SchemaError::SnapshotMemBackendTooMany),
        };
        let network_overrides = raw
            .network_overrides
            .into_iter()
            .map(|o| {
                Ok(NetworkOverride {
                    iface_id: IfaceId::try_from(o.iface_id)?,
                    host_dev_name: o.host_dev_name,
                })
            })
            .collect::<Result<_, SchemaError>>()?;
        let working_set = raw
            .working_set
            .map(|ws| working_set(ws, mem_backend.backend_type))
            .transpose()?;
        Ok(Self {
            snapshot_path: host_path("snapshot_path", raw.snapshot_path)?,
            mem_backend,
            track_dirty_pages: raw.track_dirty_pages || raw.enable_diff_snapshots,
            resume_vm: raw.resume_vm,
            network_overrides,
            vsock_override: raw
                .vsock_override
                .map(|v| socket_path("uds_path", v.uds_path))
                .transpose()?,
            clock_realtime: raw.clock_realtime,
            huge_pages: raw.huge_pages.override_value(),
            working_set,
        })
    }
}

fn working_set(
    raw: RawWorkingSet,
    backend: MemBackendType,
) -> Result<WorkingSetConfig, SchemaError> {
    if backend != MemBackendType::File {
        return Err(SchemaError::WorkingSetNeedsFileBackend);
    }
    let record_ms = raw.record_ms.unwrap_or(DEFAULT_WORKING_SET_RECORD_MS);
    if !(1..=MAX_WORKING_SET_RECORD_MS).contains(&record_ms) {
        return Err(SchemaError::InvalidWorkingSetRecordMs(record_ms));
    }
    Ok(WorkingSetConfig {
        path: host_path("working_set path", raw.path)?,
        record_ms,
    })
}

/// `PUT /snapshot/load`: the memory-backend rules are reported as Firecracker's deserializer
/// does; the deprecated fields warn.
pub(crate) fn parse_load(input: &RouteInput<'_>) -> Result<SnapshotLoadConfig, RequestError> {
    let raw = parse::json::<RawSnapshotLoad>(input)?;
    if raw.uses_deprecated_fields() {
        input.deprecate(
            "PUT /snapshot/load: mem_file_path and enable_diff_snapshots fields are deprecated.",
        );
    }
    SnapshotLoadConfig::try_from(raw).map_err(|source| match source {
        SchemaError::SnapshotMemBackendMissing | SchemaError::SnapshotMemBackendTooMany => {
            RequestError::SnapshotMemBackend(source)
        }
        source => RequestError::Invalid {
            prefix: input.fault_prefix,
            source,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<SnapshotLoadConfig, SchemaError> {
        SnapshotLoadConfig::try_from(serde_json::from_str::<RawSnapshotLoad>(json).unwrap())
    }

    #[test]
    fn working_set_needs_the_file_backend_and_a_sane_window() {
        let file = r#""mem_backend":{"backend_type":"File","backend_path":"/m"}"#;
        let ws = parse(&format!(
            r#"{{"snapshot_path":"/s",{file},"working_set":{{"path":"/w"}}}}"#
        ))
        .unwrap()
        .working_set
        .unwrap();
        assert_eq!(ws.path, PathBuf::from("/w"));
        assert_eq!(ws.record_ms, DEFAULT_WORKING_SET_RECORD_MS);
        for bad in [0, MAX_WORKING_SET_RECORD_MS + 1] {
            assert_eq!(
                parse(&format!(
                    r#"{{"snapshot_path":"/s",{file},"working_set":{{"path":"/w","record_ms":{bad}}}}}"#
                )),
                Err(SchemaError::InvalidWorkingSetRecordMs(bad))
            );
        }
        let uffd = r#"{"snapshot_path":"/s","mem_backend":{"backend_type":"Uffd","backend_path":"/u"},"working_set":{"path":"/w"}}"#;
        assert_eq!(parse(uffd), Err(SchemaError::WorkingSetNeedsFileBackend));
        assert!(parse(r#"{"snapshot_path":"/s","mem_file_path":"/m"}"#)
            .unwrap()
            .working_set
            .is_none());
    }

    #[test]
    fn exactly_one_memory_backend() {
        assert_eq!(
            parse(r#"{"snapshot_path":"/s"}"#),
            Err(SchemaError::SnapshotMemBackendMissing)
        );
        let both = r#"{"snapshot_path":"/s","mem_file_path":"/m","mem_backend":{"backend_type":"File","backend_path":"/m"}}"#;
        assert_eq!(parse(both), Err(SchemaError::SnapshotMemBackendTooMany));
        let legacy =
            parse(r#"{"snapshot_path":"/s","mem_file_path":"/m","enable_diff_snapshots":true}"#)
                .unwrap();
        assert_eq!(legacy.mem_backend.backend_type, MemBackendType::File);
        assert!(legacy.track_dirty_pages);
    }

    #[test]
    fn huge_pages_snapshot_keeps_the_snapshots_and_unknown_fields_are_refused() {
        let keep = parse(r#"{"snapshot_path":"/s","mem_file_path":"/m","huge_pages":"Snapshot"}"#);
        assert_eq!(keep.unwrap().huge_pages, None);
        let none = parse(r#"{"snapshot_path":"/s","mem_file_path":"/m","huge_pages":"None"}"#);
        assert_eq!(none.unwrap().huge_pages, Some(HugePages::None));
        let unknown = r#"{"snapshot_path":"/s","mem_file_path":"/m","bogus":1}"#;
        assert!(serde_json::from_str::<RawSnapshotLoad>(unknown).is_err());
    }
}
