//! `--cgroup <controller>.<property>=<value>` for cgroup v1 and v2 (Firecracker
//! `src/jailer/src/cgroup.rs`).
//!
//! The jail's cgroup is `<hierarchy>/<parent>/<id>`, where `<parent>` is `--parent-cgroup`
//! (default: the exec file's name) and `<hierarchy>` comes from `/proc/mounts`:
//!
//! - **v1**: the `cgroup` mount whose options name the controller. A new cgroup's files start
//!   empty for some controllers (`cpuset.cpus`), so before writing a value the jailer copies the
//!   file's value down from the nearest ancestor that has one. The pid goes into `tasks`.
//! - **v2**: the first `cgroup2` mount; the controller must be listed in its
//!   `cgroup.controllers`. `+<controller>` is written into `cgroup.subtree_control` of every
//!   ancestor from the root down to the jail's parent, so the controller's files exist in the
//!   jail's cgroup. The pid goes into `cgroup.procs`.
//!
//! Everything that can be refused (format, controller, hierarchy) is checked by [`plan`] before
//! anything is created. All values are written before any pid is attached, because a cgroup
//! may refuse tasks until its values are set (`cpuset.mems`).

use std::collections::HashSet;
use std::fs;
use std::path::{Component, Path, PathBuf};

use crate::error::JailerError;
use crate::undo::Undo;

/// Where the kernel lists mounts.
pub const PROC_MOUNTS: &str = "/proc/mounts";

/// Firecracker's text when no hierarchy of the requested version is mounted.
const NO_HIERARCHY: &str = "No hierarchy found for this cgroup version.";

/// One line of `/proc/mounts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Mount point, with the kernel's octal escapes (`\040`) decoded.
    pub dir: PathBuf,
    /// File system type (`cgroup`, `cgroup2`, ...).
    pub fstype: String,
    /// Mount options; a v1 hierarchy lists its controllers here.
    pub options: Vec<String>,
}

/// Parses `/proc/mounts`; malformed lines are skipped.
pub fn parse_mounts(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let _device = fields.next()?;
            let dir = unescape_mount_path(fields.next()?);
            let fstype = fields.next()?.to_string();
            let options = fields.next()?.split(',').map(str::to_string).collect();
            Some(Mount {
                dir: PathBuf::from(dir),
                fstype,
                options,
            })
        })
        .collect()
}

/// Decodes the `\ooo` escapes the kernel writes for spaces, tabs, newlines and backslashes.
fn unescape_mount_path(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            let text = std::str::from_utf8(d).ok()?;
            u8::from_str_radix(text, 8).ok()
        });
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One `--cgroup <file>=<value>` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupSetting {
    /// The cgroup file, `<controller>.<property>` (`pids.max`, `hugetlb.2MB.max`).
    pub file: String,
    /// What is written into it.
    pub value: String,
}

impl CgroupSetting {
    /// Parses `<controller>.<property>=<value>`.
    ///
    /// # Errors
    /// [`JailerError::CgroupFormat`] without exactly one `=` or with an empty value;
    /// [`JailerError::CgroupInvalidFile`] when the file is a path or has no controller prefix.
    pub fn parse(arg: &str) -> Result<Self, JailerError> {
        let parts: Vec<&str> = arg.split('=').collect();
        let [file, value] = parts[..] else {
            return Err(JailerError::CgroupFormat(arg.to_string()));
        };
        if value.is_empty() {
            return Err(JailerError::CgroupFormat(arg.to_string()));
        }
        let climbs = Path::new(file).components().any(|c| {
            matches!(
                c,
                Component::CurDir | Component::ParentDir | Component::RootDir
            )
        });
        if climbs || file.contains('/') {
            return Err(JailerError::CgroupInvalidFile(arg.to_string()));
        }
        if file.split('.').count() < 2 || file.starts_with('.') {
            return Err(JailerError::CgroupInvalidFile(file.to_string()));
        }
        Ok(Self {
            file: file.to_string(),
            value: value.to_string(),
        })
    }

    /// The controller: the file name up to its first `.`.
    pub fn controller(&self) -> &str {
        self.file.split('.').next().unwrap_or_default()
    }
}

/// Whether `--parent-cgroup` stays inside the hierarchy (relative, no `.` or `..`).
pub fn valid_parent(parent: &Path) -> bool {
    !parent.components().any(|c| {
        matches!(
            c,
            Component::CurDir | Component::ParentDir | Component::RootDir
        )
    })
}

/// The mount point of the cgroup v2 hierarchy.
///
/// # Errors
/// [`JailerError::CgroupHierarchyMissing`] when no `cgroup2` file system is mounted.
pub fn v2_hierarchy(mounts: &[Mount]) -> Result<PathBuf, JailerError> {
    mounts
        .iter()
        .find(|m| m.fstype == "cgroup2")
        .map(|m| m.dir.clone())
        .ok_or_else(|| JailerError::CgroupHierarchyMissing(NO_HIERARCHY.to_string()))
}

/// One value to write into the jail's cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    /// 1 or 2.
    pub version: u8,
    /// The controller (`pids`).
    pub controller: String,
    /// The file inside the jail's cgroup (`pids.max`).
    pub file: String,
    /// The value written into it.
    pub value: String,
    /// Mount point of the hierarchy holding the controller.
    pub hierarchy: PathBuf,
    /// The jail's cgroup: `<hierarchy>/<parent>/<id>`.
    pub location: PathBuf,
}

/// Resolves each setting to its cgroup, refusing unknown controllers and versions.
///
/// # Errors
/// [`JailerError::CgroupControllerUnavailable`] or [`JailerError::CgroupHierarchyMissing`].
pub fn plan(
    version: u8,
    settings: &[CgroupSetting],
    mounts: &[Mount],
    parent: &Path,
    id: &str,
) -> Result<Vec<Cgroup>, JailerError> {
    let v2_controllers = match version {
        1 => HashSet::new(),
        2 => available_v2_controllers(&v2_hierarchy(mounts)?),
        _ => {
            return Err(JailerError::CgroupHierarchyMissing(
                NO_HIERARCHY.to_string(),
            ))
        }
    };
    settings
        .iter()
        .map(|setting| {
            let controller = setting.controller();
            let hierarchy = match version {
                1 => mounts
                    .iter()
                    .find(|m| m.fstype == "cgroup" && m.options.iter().any(|o| o == controller))
                    .map(|m| m.dir.clone()),
                _ => v2_hierarchy(mounts)
                    .ok()
                    .filter(|_| v2_controllers.contains(controller)),
            }
            .ok_or_else(|| JailerError::CgroupControllerUnavailable(controller.to_string()))?;
            Ok(Cgroup {
                version,
                controller: controller.to_string(),
                file: setting.file.clone(),
                value: setting.value.clone(),
                location: hierarchy.join(parent).join(id),
                hierarchy,
            })
        })
        .collect()
}

/// The controllers a v2 hierarchy offers (its root's `cgroup.controllers`).
fn available_v2_controllers(hierarchy: &Path) -> HashSet<String> {
    fs::read_to_string(hierarchy.join("cgroup.controllers"))
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

impl Cgroup {
    /// Creates the jail's cgroup and writes the value (v1: after inheriting the parent's).
    ///
    /// # Errors
    /// The directory, file or ancestor that could not be created, read or written.
    pub fn write_value(&self, undo: &mut Undo) -> Result<(), JailerError> {
        undo.create_dir_all(&self.location)
            .map_err(|err| JailerError::CreateDir(self.location.clone(), err))?;
        if self.version == 1 {
            inherit_from_parent(&self.location, &self.file, &self.hierarchy)?;
        } else {
            self.enable_in_ancestors()?;
        }
        write_line(&self.location.join(&self.file), &self.value)
    }

    /// Moves process `pid` into the jail's cgroup.
    ///
    /// # Errors
    /// [`JailerError::Write`] naming `tasks` or `cgroup.procs`.
    pub fn attach(&self, pid: u32) -> Result<(), JailerError> {
        let file = if self.version == 1 {
            "tasks"
        } else {
            "cgroup.procs"
        };
        write_line(&self.location.join(file), &pid.to_string())
    }

    /// Moves process `pid` back to the hierarchy's root, so that a jail cgroup it joined can be
    /// removed when a later step fails. Best effort: the process is about to exit anyway.
    pub fn leave(&self, pid: u32) {
        let file = if self.version == 1 {
            "tasks"
        } else {
            "cgroup.procs"
        };
        let _ = write_line(&self.hierarchy.join(file), &pid.to_string());
    }

    /// v2: `+<controller>` into `cgroup.subtree_control` from the root down to the parent.
    fn enable_in_ancestors(&self) -> Result<(), JailerError> {
        let Some(parent) = self.location.parent() else {
            return Ok(());
        };
        let mut ancestors: Vec<&Path> = parent
            .ancestors()
            .take_while(|p| p.starts_with(&self.hierarchy))
            .collect();
        ancestors.reverse();
        for dir in ancestors {
            let control = dir.join("cgroup.subtree_control");
            if control.exists() {
                write_line(&control, &format!("+{}", self.controller))?;
            }
        }
        Ok(())
    }
}

/// v1: gives `<location>/<file>` the first line of the nearest ancestor's non-empty `<file>`,
/// filling empty ancestors on the way down (never above `hierarchy`).
fn inherit_from_parent(location: &Path, file: &str, hierarchy: &Path) -> Result<(), JailerError> {
    let Some(parent) = location.parent().filter(|p| p.starts_with(hierarchy)) else {
        return Err(JailerError::CgroupInheritFromParent(
            location.to_path_buf(),
            file.to_string(),
        ));
    };
    let mut line = read_line(&parent.join(file))?;
    if line.is_empty() && parent != hierarchy {
        // Another jailer may fill the parent first; only the re-read below matters.
        let _ = inherit_from_parent(parent, file, hierarchy);
        line = read_line(&parent.join(file))?;
    }
    if line.is_empty() {
        return Err(JailerError::CgroupInheritFromParent(
            location.to_path_buf(),
            file.to_string(),
        ));
    }
    write_line(&location.join(file), &line)
}

fn read_line(path: &Path) -> Result<String, JailerError> {
    let text = fs::read_to_string(path)
        .map_err(|err| JailerError::ReadToString(path.to_path_buf(), err))?;
    Ok(text.lines().next().unwrap_or_default().to_string())
}

/// Writes `value` and a newline in one `write`, as cgroup files want.
fn write_line(path: &Path, value: &str) -> Result<(), JailerError> {
    fs::write(path, format!("{value}\n")).map_err(|err| JailerError::Write(path.to_path_buf(), err))
}

#[cfg(test)]
mod tests;
