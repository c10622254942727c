//! Host path checks that need no I/O: non-empty, bounded, no NUL byte.

use std::path::PathBuf;

use super::error::SchemaError;

/// The longest host path accepted (Linux `PATH_MAX`).
pub const MAX_PATH_LEN: usize = 4096;
/// The longest Unix socket path (`sun_path` minus the NUL).
pub const MAX_SOCKET_PATH_LEN: usize = 107;

/// Validate a host file path given in `field`.
///
/// # Errors
/// [`SchemaError::InvalidPath`] naming `field`.
pub fn host_path(field: &'static str, path: String) -> Result<PathBuf, SchemaError> {
    if path.is_empty() || path.len() > MAX_PATH_LEN || path.contains('\0') {
        return Err(SchemaError::InvalidPath { field });
    }
    Ok(PathBuf::from(path))
}

/// Validate an optional host file path.
///
/// # Errors
/// [`SchemaError::InvalidPath`] naming `field`.
pub fn opt_host_path(
    field: &'static str,
    path: Option<String>,
) -> Result<Option<PathBuf>, SchemaError> {
    path.map(|p| host_path(field, p)).transpose()
}

/// Validate a Unix socket path given in `field`.
///
/// # Errors
/// [`SchemaError::InvalidPath`] or [`SchemaError::SocketPathTooLong`] naming `field`.
pub fn socket_path(field: &'static str, path: String) -> Result<PathBuf, SchemaError> {
    if path.len() > MAX_SOCKET_PATH_LEN {
        return Err(SchemaError::SocketPathTooLong { field });
    }
    host_path(field, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_empty_nul_and_long_paths() {
        assert!(host_path("kernel_image_path", "/k".into()).is_ok());
        assert_eq!(
            host_path("f", String::new()),
            Err(SchemaError::InvalidPath { field: "f" })
        );
        assert!(host_path("f", "a\0b".into()).is_err());
        assert!(host_path("f", "a".repeat(4097)).is_err());
        assert_eq!(
            socket_path("uds_path", "a".repeat(108)),
            Err(SchemaError::SocketPathTooLong { field: "uds_path" })
        );
    }
}
