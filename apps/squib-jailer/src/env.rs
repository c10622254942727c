//! The jailer's own process hygiene and the validated jail description (Firecracker
//! `src/jailer/src/env.rs`, `Env::new`, and `sanitize_process` in `main.rs`).
//!
//! [`sanitize_process`] runs first of all: inherited descriptors above stderr are closed and
//! the environment is emptied, so nothing of the launcher leaks into the jail.
//!
//! [`JailEnv::new`] checks every argument in Firecracker's order (id, exec file, chroot base,
//! uid, gid, parent cgroup, cgroup version, cgroups, resource limits) and reads what it needs
//! from `/proc` (mounts for the cgroups, misc for `userfaultfd`). It creates nothing, so a
//! refused command line leaves the host untouched.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::args::Arguments;
use crate::cgroup::{self, Cgroup, CgroupSetting};
use crate::chroot;
use crate::devices;
use crate::error::{InstanceIdError, JailerError};
use crate::resource_limits::ResourceLimits;

/// Longest `--id`, in bytes.
pub const MAX_ID_LEN: usize = 64;

/// Closes every descriptor above 2 and clears the environment.
///
/// # Errors
/// [`JailerError::CloseRange`] if the kernel refuses `close_range`.
pub fn sanitize_process() -> Result<(), JailerError> {
    // SAFETY: close_range takes plain integers; closing descriptors this process inherited is
    // sound because nothing in this process has opened or borrowed any of them yet.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_UNSHARE,
        )
    };
    if ret != 0 {
        return Err(JailerError::CloseRange(io::Error::last_os_error()));
    }
    for (key, _) in std::env::vars_os() {
        std::env::remove_var(key);
    }
    Ok(())
}

/// Firecracker's `validate_instance_id`: 1 to 64 bytes, each character alphanumeric or `-`.
///
/// # Errors
/// [`InstanceIdError`] with the length or the first bad character.
pub fn validate_id(id: &str) -> Result<(), InstanceIdError> {
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(InstanceIdError::InvalidLen(id.len(), 1, MAX_ID_LEN));
    }
    match id
        .chars()
        .enumerate()
        .find(|(_, c)| !(c.is_alphanumeric() || *c == '-'))
    {
        Some((at, c)) => Err(InstanceIdError::InvalidChar(c, at)),
        None => Ok(()),
    }
}

/// The host files [`JailEnv::new`] reads (fakes in tests).
#[derive(Debug, Clone)]
pub struct HostFiles {
    /// `/proc/mounts`.
    pub proc_mounts: PathBuf,
    /// `/proc/misc`.
    pub proc_misc: PathBuf,
}

impl Default for HostFiles {
    fn default() -> Self {
        Self {
            proc_mounts: PathBuf::from(cgroup::PROC_MOUNTS),
            proc_misc: PathBuf::from(devices::PROC_MISC),
        }
    }
}

/// A jail ready to be built: every argument checked.
#[derive(Debug, Clone)]
pub struct JailEnv {
    /// `--id`.
    pub id: String,
    /// `--exec-file`, canonical.
    pub exec_file: PathBuf,
    /// Its file name, the first component under the chroot base.
    pub exec_name: String,
    /// `<base>/<exec_name>/<id>/root`.
    pub chroot_dir: PathBuf,
    /// `--uid`.
    pub uid: u32,
    /// `--gid`.
    pub gid: u32,
    /// `--netns`.
    pub netns: Option<PathBuf>,
    /// `--daemonize`.
    pub daemonize: bool,
    /// `--new-pid-ns`.
    pub new_pid_ns: bool,
    /// The `--cgroup` values to write.
    pub cgroups: Vec<Cgroup>,
    /// cgroup v2 without `--cgroup`: the existing parent cgroup to join.
    pub join_cgroup: Option<PathBuf>,
    /// `--resource-limit`s over the defaults.
    pub limits: ResourceLimits,
    /// Minor of `/dev/userfaultfd`, when the host has one.
    pub uffd_minor: Option<u32>,
    /// Arguments after `--`.
    pub extra_args: Vec<String>,
}

impl JailEnv {
    /// Checks the command line against the host.
    ///
    /// # Errors
    /// The first argument that is refused, with Firecracker's text.
    pub fn new(args: &Arguments, host: &HostFiles) -> Result<Self, JailerError> {
        let id = args.value("id").unwrap_or_default();
        validate_id(id).map_err(JailerError::InvalidInstanceId)?;
        let (exec_file, exec_name) = exec_file(args.value("exec-file").unwrap_or_default())?;
        let base = args.value("chroot-base-dir").unwrap_or_default();
        let base_dir =
            fs::canonicalize(base).map_err(|err| JailerError::Canonicalize(base.into(), err))?;
        if !base_dir.is_dir() {
            return Err(JailerError::NotADirectory(base_dir));
        }
        let uid_text = args.value("uid").unwrap_or_default();
        let uid = uid_text
            .parse()
            .map_err(|_| JailerError::Uid(uid_text.to_string()))?;
        let gid_text = args.value("gid").unwrap_or_default();
        let gid = gid_text
            .parse()
            .map_err(|_| JailerError::Gid(gid_text.to_string()))?;

        let parent = Path::new(args.value("parent-cgroup").unwrap_or(&exec_name)).to_path_buf();
        if !cgroup::valid_parent(&parent) {
            return Err(JailerError::CgroupInvalidParentPath);
        }
        let version_text = args.value("cgroup-version").unwrap_or("1");
        let version: u8 = version_text
            .parse()
            .map_err(|_| JailerError::CgroupInvalidVersion(version_text.to_string()))?;
        let settings = args
            .values("cgroup")
            .iter()
            .map(|arg| CgroupSetting::parse(arg))
            .collect::<Result<Vec<_>, _>>()?;
        let (cgroups, join_cgroup) = if settings.is_empty() && version != 2 {
            (Vec::new(), None)
        } else {
            let mounts = cgroup::parse_mounts(&read(&host.proc_mounts)?);
            if settings.is_empty() {
                let parent_dir = cgroup::v2_hierarchy(&mounts)?.join(&parent);
                (Vec::new(), parent_dir.is_dir().then_some(parent_dir))
            } else {
                (
                    cgroup::plan(version, &settings, &mounts, &parent, id)?,
                    None,
                )
            }
        };
        let limits = ResourceLimits::parse(args.values("resource-limit"))?;
        let uffd_minor = fs::read_to_string(&host.proc_misc)
            .ok()
            .and_then(|text| devices::misc_minor(&text, "userfaultfd"));

        Ok(Self {
            id: id.to_string(),
            chroot_dir: chroot::chroot_dir(&base_dir, &exec_name, id),
            exec_file,
            exec_name,
            uid,
            gid,
            netns: args.value("netns").map(PathBuf::from),
            daemonize: args.has("daemonize"),
            new_pid_ns: args.has("new-pid-ns"),
            cgroups,
            join_cgroup,
            limits,
            uffd_minor,
            extra_args: args.extra().to_vec(),
        })
    }
}

/// The canonical exec file, which must be a regular file, and its name.
fn exec_file(given: &str) -> Result<(PathBuf, String), JailerError> {
    let path =
        fs::canonicalize(given).map_err(|err| JailerError::Canonicalize(given.into(), err))?;
    if !path.is_file() {
        return Err(JailerError::NotAFile(path));
    }
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| JailerError::NotAFile(path.clone()))?
        .to_string();
    Ok((path, name))
}

fn read(path: &Path) -> Result<String, JailerError> {
    fs::read_to_string(path).map_err(|err| JailerError::FileOpen(path.to_path_buf(), err))
}

#[cfg(test)]
mod tests;
