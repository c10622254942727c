//! `PUT`/`PATCH /drives/{id}`: virtio-block (file-backed) or vhost-user-block drives.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::error::SchemaError;
use super::ids::DriveId;
use super::paths::{opt_host_path, socket_path};
use super::rate_limiter::{check_limiter, RateLimiterConfig};
use crate::routes::parse::BodyId;

/// Host page cache policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
pub enum CacheType {
    /// No flush support advertised.
    #[default]
    Unsafe,
    /// `VIRTIO_BLK_F_FLUSH`, fsync on flush.
    Writeback,
}

/// Block I/O engine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
pub enum IoEngine {
    /// Synchronous reads and writes.
    #[default]
    Sync,
    /// io_uring.
    Async,
}

/// `PUT /drives/{id}` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDrive {
    pub(crate) drive_id: String,
    #[serde(default)]
    path_on_host: Option<String>,
    is_root_device: bool,
    #[serde(default)]
    partuuid: Option<String>,
    #[serde(default)]
    cache_type: CacheType,
    #[serde(default)]
    is_read_only: Option<bool>,
    #[serde(default)]
    rate_limiter: Option<RateLimiterConfig>,
    #[serde(default)]
    io_engine: Option<IoEngine>,
    #[serde(default)]
    socket: Option<String>,
}

/// A validated drive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DriveConfig {
    /// Drive ID.
    pub drive_id: DriveId,
    /// Partition UUID for `root=PARTUUID=`.
    pub partuuid: Option<String>,
    /// Root device.
    pub is_root_device: bool,
    /// Cache policy.
    pub cache_type: CacheType,
    /// Read-only.
    pub is_read_only: bool,
    /// Backing file (virtio-block).
    pub path_on_host: Option<PathBuf>,
    /// Rate limiter.
    pub rate_limiter: Option<RateLimiterConfig>,
    /// I/O engine.
    pub io_engine: IoEngine,
    /// vhost-user socket.
    pub socket: Option<PathBuf>,
}

impl TryFrom<RawDrive> for DriveConfig {
    type Error = SchemaError;

    fn try_from(raw: RawDrive) -> Result<Self, SchemaError> {
        let drive_id = DriveId::try_from(raw.drive_id)?;
        let virtio_fields = raw.path_on_host.is_some()
            || raw.is_read_only.is_some()
            || raw.rate_limiter.is_some()
            || raw.io_engine.is_some();
        if raw.socket.is_some() == virtio_fields
            || (raw.socket.is_none() && raw.path_on_host.is_none())
        {
            return Err(SchemaError::InvalidBlockConfig);
        }
        if let Some(uuid) = raw.partuuid.as_deref().filter(|u| !is_partuuid(u)) {
            return Err(SchemaError::InvalidPartuuid(uuid.to_owned()));
        }
        Ok(Self {
            drive_id,
            partuuid: raw.partuuid,
            is_root_device: raw.is_root_device,
            cache_type: raw.cache_type,
            is_read_only: raw.is_read_only.unwrap_or(false),
            path_on_host: opt_host_path("path_on_host", raw.path_on_host)?,
            rate_limiter: check_limiter("rate_limiter", raw.rate_limiter)?,
            io_engine: raw.io_engine.unwrap_or_default(),
            socket: raw.socket.map(|s| socket_path("socket", s)).transpose()?,
        })
    }
}

/// Whether `s` is what Linux takes after `root=PARTUUID=`: a GPT partition UUID
/// (`00112233-4455-6677-8899-aabbccddeeff`) or an MBR disk signature and partition number
/// (`SSSSSSSS-PP`), optionally followed by `/PARTNROFF=<n>`. Nothing else may reach the
/// kernel command line (a space or a quote would add kernel or init arguments).
fn is_partuuid(s: &str) -> bool {
    let (id, offset) = match s.split_once("/PARTNROFF=") {
        Some((id, n)) => (id, Some(n)),
        None => (s, None),
    };
    let groups: Vec<&str> = id.split('-').collect();
    let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    let shape_ok = lens == [8, 4, 4, 4, 12] || lens == [8, 2];
    let hex_ok = groups
        .iter()
        .all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()));
    let offset_ok = offset
        .is_none_or(|n| !n.is_empty() && n.len() <= 9 && n.bytes().all(|b| b.is_ascii_digit()));
    shape_ok && hex_ok && offset_ok
}

/// `PATCH /drives/{id}` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDrivePatch {
    pub(crate) drive_id: String,
    #[serde(default)]
    path_on_host: Option<String>,
    #[serde(default)]
    rate_limiter: Option<RateLimiterConfig>,
}

/// A validated drive update (both fields absent = vhost-user config refresh).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrivePatch {
    /// Drive ID.
    pub drive_id: DriveId,
    /// New backing file.
    pub path_on_host: Option<PathBuf>,
    /// New rate limiter (a zero bucket removes that limit).
    pub rate_limiter: Option<RateLimiterConfig>,
}

impl TryFrom<RawDrivePatch> for DrivePatch {
    type Error = SchemaError;

    fn try_from(raw: RawDrivePatch) -> Result<Self, SchemaError> {
        Ok(Self {
            drive_id: DriveId::try_from(raw.drive_id)?,
            path_on_host: opt_host_path("path_on_host", raw.path_on_host)?,
            rate_limiter: check_limiter("rate_limiter", raw.rate_limiter)?,
        })
    }
}

impl BodyId for RawDrive {
    type PathId = DriveId;
    fn body_id(&self) -> &str {
        &self.drive_id
    }
}

impl BodyId for RawDrivePatch {
    type PathId = DriveId;
    fn body_id(&self) -> &str {
        &self.drive_id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<DriveConfig, SchemaError> {
        DriveConfig::try_from(serde_json::from_str::<RawDrive>(json).unwrap())
    }

    #[test]
    fn serialises_all_nine_fields() {
        let d =
            parse(r#"{"drive_id":"rootfs","path_on_host":"/r","is_root_device":true}"#).unwrap();
        assert_eq!(
            serde_json::to_string(&d).unwrap(),
            r#"{"drive_id":"rootfs","partuuid":null,"is_root_device":true,"cache_type":"Unsafe","is_read_only":false,"path_on_host":"/r","rate_limiter":null,"io_engine":"Sync","socket":null}"#
        );
    }

    #[test]
    fn partuuid_accepts_gpt_and_mbr_ids() {
        for uuid in [
            "0eaa91a0-01",
            "0EAA91A0-01",
            "6a1a6e2b-1c55-4c3e-9e0a-2f3c5c1d9e7b",
            "0eaa91a0-01/PARTNROFF=1",
        ] {
            let json = format!(
                r#"{{"drive_id":"r","path_on_host":"/r","is_root_device":true,"partuuid":"{uuid}"}}"#
            );
            assert_eq!(parse(&json).unwrap().partuuid.as_deref(), Some(uuid));
        }
    }

    #[test]
    fn partuuid_refuses_anything_that_would_change_the_command_line() {
        for uuid in [
            "",
            "0eaa91a0-01 init=/bin/sh",
            "0eaa91a0-01\" quiet",
            "0eaa91a0-01 -- x",
            "zzzzzzzz-01",
            "0eaa91a0",
            "6a1a6e2b-1c55-4c3e-9e0a-2f3c5c1d9e7",
            "0eaa91a0-01/PARTNROFF=",
            "0eaa91a0-01/PARTNROFF=1 ro",
        ] {
            let json = serde_json::json!({
                "drive_id": "r", "path_on_host": "/r", "is_root_device": true, "partuuid": uuid
            });
            let err = DriveConfig::try_from(serde_json::from_value::<RawDrive>(json).unwrap())
                .unwrap_err();
            assert_eq!(err, SchemaError::InvalidPartuuid(uuid.to_owned()));
            assert!(err.to_string().starts_with("The partuuid "), "{err}");
        }
    }

    #[test]
    fn vhost_user_fields_are_exclusive() {
        assert!(parse(r#"{"drive_id":"a","socket":"/s","is_root_device":false}"#).is_ok());
        assert_eq!(
            parse(r#"{"drive_id":"a","socket":"/s","path_on_host":"/p","is_root_device":false}"#),
            Err(SchemaError::InvalidBlockConfig)
        );
        assert_eq!(
            parse(r#"{"drive_id":"a","socket":"/s","is_read_only":true,"is_root_device":false}"#),
            Err(SchemaError::InvalidBlockConfig)
        );
        assert_eq!(
            parse(r#"{"drive_id":"a","is_root_device":false}"#),
            Err(SchemaError::InvalidBlockConfig)
        );
    }
}
