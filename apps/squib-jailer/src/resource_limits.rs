//! `--resource-limit fsize=N|no-file=N` (Firecracker `src/jailer/src/resource_limits.rs`).
//!
//! Limits are set with soft = hard before the jail is entered, so the jailed VMM can neither
//! raise them nor exceed them. `no-file` defaults to 2048 as in Firecracker; `fsize` is left
//! alone unless given. A repeated resource keeps the last value.

use std::io;

use crate::error::JailerError;

/// `--resource-limit` name of `RLIMIT_FSIZE`.
pub const FSIZE_ARG: &str = "fsize";
/// `--resource-limit` name of `RLIMIT_NOFILE`.
pub const NO_FILE_ARG: &str = "no-file";
/// Firecracker's default `RLIMIT_NOFILE`.
pub const DEFAULT_NO_FILE: u64 = 2048;

/// The limits to install.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceLimits {
    /// `RLIMIT_FSIZE` in bytes, if given.
    pub file_size: Option<u64>,
    /// `RLIMIT_NOFILE`.
    pub no_file: u64,
}

impl Default for ResourceLimits {
    fn default() -> Self {
        Self {
            file_size: None,
            no_file: DEFAULT_NO_FILE,
        }
    }
}

impl ResourceLimits {
    /// Parses every `--resource-limit` argument over the defaults.
    ///
    /// # Errors
    /// [`JailerError::ResLimitFormat`] without `=`, [`JailerError::ResLimitValue`] for a value
    /// that is not a u64, [`JailerError::ResLimitArgument`] for an unknown resource.
    pub fn parse(args: &[String]) -> Result<Self, JailerError> {
        let mut limits = Self::default();
        for arg in args {
            let (name, value) = arg
                .split_once('=')
                .ok_or_else(|| JailerError::ResLimitFormat(arg.clone()))?;
            let value = value
                .parse::<u64>()
                .map_err(|err| JailerError::ResLimitValue(value.to_string(), err.to_string()))?;
            match name {
                FSIZE_ARG => limits.file_size = Some(value),
                NO_FILE_ARG => limits.no_file = value,
                _ => return Err(JailerError::ResLimitArgument(name.to_string())),
            }
        }
        Ok(limits)
    }

    /// Installs the limits on this process (inherited across `exec`).
    ///
    /// # Errors
    /// [`JailerError::Setrlimit`] naming the resource.
    pub fn install(&self) -> Result<(), JailerError> {
        if let Some(size) = self.file_size {
            set_limit(libc::RLIMIT_FSIZE, FSIZE_ARG, size)?;
        }
        set_limit(libc::RLIMIT_NOFILE, NO_FILE_ARG, self.no_file)
    }
}

fn set_limit(
    resource: libc::__rlimit_resource_t,
    name: &str,
    value: u64,
) -> Result<(), JailerError> {
    let limit = libc::rlimit {
        rlim_cur: value,
        rlim_max: value,
    };
    // SAFETY: `limit` is a valid, initialised rlimit that outlives the call; the kernel only
    // reads it.
    let ret = unsafe { libc::setrlimit(resource, &limit) };
    if ret == 0 {
        Ok(())
    } else {
        Err(JailerError::Setrlimit(format!(
            "{name}: {}",
            io::Error::last_os_error()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_string()).collect()
    }

    #[test]
    fn parse_defaults_to_firecrackers_no_file() {
        assert_eq!(
            ResourceLimits::parse(&[]).unwrap(),
            ResourceLimits {
                file_size: None,
                no_file: 2048
            }
        );
    }

    #[test]
    fn parse_reads_both_resources_last_one_wins() {
        let limits =
            ResourceLimits::parse(&args(&["fsize=100", "no-file=10", "no-file=12"])).unwrap();
        assert_eq!(
            limits,
            ResourceLimits {
                file_size: Some(100),
                no_file: 12
            }
        );
    }

    #[test]
    fn parse_rejects_malformed_arguments_with_firecrackers_texts() {
        let err = |a: &str| ResourceLimits::parse(&args(&[a])).unwrap_err().to_string();
        assert_eq!(err("foo"), "Invalid format for resources limits: foo");
        assert_eq!(err("foo=1"), "Invalid resource argument: foo");
        assert_eq!(
            err("fsize=x"),
            "Invalid limit value for resource: x: invalid digit found in string"
        );
        assert_eq!(
            err("fsize=-1"),
            "Invalid limit value for resource: -1: invalid digit found in string"
        );
        assert_eq!(
            err("fsize=1=2"),
            "Invalid limit value for resource: 1=2: invalid digit found in string"
        );
        assert_eq!(
            err("no-file="),
            "Invalid limit value for resource: : cannot parse integer from empty string"
        );
    }

    #[test]
    fn install_sets_soft_and_hard_in_a_child() {
        // A forked child installs the limits, so the test process keeps its own.
        // SAFETY: the child only calls async-signal-safe functions (setrlimit, getrlimit,
        // _exit) before exiting.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let ok = ResourceLimits {
                file_size: Some(1 << 20),
                no_file: 64,
            }
            .install()
            .is_ok();
            let mut got = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: `got` is a valid rlimit the kernel writes into.
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut got) };
            let code = i32::from(!(ok && got.rlim_cur == 64 && got.rlim_max == 64));
            // SAFETY: ends the forked child without running the parent's destructors.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: `pid` is our child and `status` a valid out pointer.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    }
}
