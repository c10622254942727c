//! `PUT /boot-source`: kernel, initrd and command line. The files are opened by the VMM.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::error::SchemaError;
use super::paths::{host_path, opt_host_path};

/// Longest command line, without the NUL (x86 boot protocol: 2048 bytes with it).
pub const MAX_CMDLINE_LEN: usize = 2047;

/// `PUT /boot-source` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBootSource {
    kernel_image_path: String,
    #[serde(default)]
    initrd_path: Option<String>,
    #[serde(default)]
    boot_args: Option<String>,
}

/// A validated boot source.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BootSourceConfig {
    /// Guest kernel (ELF vmlinux or bzImage).
    pub kernel_image_path: PathBuf,
    /// Optional initrd.
    pub initrd_path: Option<PathBuf>,
    /// Command line; `None` = Firecracker's default.
    pub boot_args: Option<String>,
}

impl TryFrom<RawBootSource> for BootSourceConfig {
    type Error = SchemaError;

    fn try_from(raw: RawBootSource) -> Result<Self, SchemaError> {
        if let Some(args) = &raw.boot_args {
            if args.len() > MAX_CMDLINE_LEN {
                return Err(SchemaError::CmdlineTooLong(args.len()));
            }
        }
        Ok(Self {
            kernel_image_path: host_path("kernel_image_path", raw.kernel_image_path)?,
            initrd_path: opt_host_path("initrd_path", raw.initrd_path)?,
            boot_args: raw.boot_args,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_long_cmdline_and_empty_kernel() {
        let raw =
            |j: &str| BootSourceConfig::try_from(serde_json::from_str::<RawBootSource>(j).unwrap());
        assert!(raw(r#"{"kernel_image_path":"/k","boot_args":"console=ttyS0"}"#).is_ok());
        let long = format!(
            r#"{{"kernel_image_path":"/k","boot_args":"{}"}}"#,
            "a".repeat(2048)
        );
        assert_eq!(raw(&long), Err(SchemaError::CmdlineTooLong(2048)));
        assert!(raw(r#"{"kernel_image_path":""}"#).is_err());
    }
}
