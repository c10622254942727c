//! The jail's file system (Firecracker `src/jailer/src/chroot.rs` and the copy in `env.rs`).
//!
//! Layout on the host: `<chroot-base-dir>/<exec-file name>/<id>/root`, holding a private copy
//! of the exec file (a copy, not a hard link, so no two VMMs share pages of one binary) and,
//! once inside, `/dev`, `/dev/net`, `/run` and the device nodes.
//!
//! The copy is opened with `O_NOFOLLOW` and refused if its link count is above 1: the jailer is
//! still root, and a symlink or hard link planted at the destination would otherwise make it
//! overwrite a host file. The checks are made on the open descriptor, not the path.
//!
//! Entering the jail: a private mount namespace whose `/` is a recursive slave (nothing
//! mounted in the jail leaks to the host, host mounts still propagate in), the root
//! bind-mounted onto itself (`pivot_root` needs a mount point), `pivot_root(".", "old_root")`,
//! then the old root detached and its directory removed.

use std::ffi::CString;
use std::fs::{self, File, OpenOptions, Permissions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{fchown, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::JailerError;
use crate::undo::Undo;

/// Directories the jailed VMM needs, created 0700 and owned by uid:gid inside the jail.
pub const JAIL_FOLDERS: [&str; 4] = ["/", "/dev", "/dev/net", "/run"];
/// Mode of [`JAIL_FOLDERS`].
const JAIL_FOLDER_MODE: u32 = 0o700;
/// Where the old root is parked during `pivot_root`, relative to the new root.
const OLD_ROOT: &str = "old_root";

/// `<base>/<exec_name>/<id>/root`.
pub fn chroot_dir(base: &Path, exec_name: &str, id: &str) -> PathBuf {
    base.join(exec_name).join(id).join("root")
}

/// Copies `exec_file` to `<root>/<its name>`, owned by uid:gid with the source's mode.
///
/// # Errors
/// [`JailerError::HardLink`] if the destination is a hard link, [`JailerError::Open`] if it is
/// a symlink (`ELOOP`) or cannot be created, or the failed `fchown`/copy.
pub fn copy_exec_file(
    exec_file: &Path,
    root: &Path,
    uid: u32,
    gid: u32,
    undo: &mut Undo,
) -> Result<PathBuf, JailerError> {
    let name = exec_file
        .file_name()
        .ok_or_else(|| JailerError::NotAFile(exec_file.to_path_buf()))?;
    let dest = root.join(name);
    let mut src =
        File::open(exec_file).map_err(|err| JailerError::Open(exec_file.to_path_buf(), err))?;
    let mode = src
        .metadata()
        .map_err(|err| JailerError::Metadata(exec_file.to_path_buf(), err))?
        .mode();
    let existed = dest.symlink_metadata().is_ok();
    let mut dst = OpenOptions::new()
        .write(true)
        .create(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(mode)
        .open(&dest)
        .map_err(|err| JailerError::Open(dest.clone(), err))?;
    if !existed {
        undo.file(&dest);
    }
    let links = dst
        .metadata()
        .map_err(|err| JailerError::Metadata(dest.clone(), err))?
        .nlink();
    if links > 1 {
        return Err(JailerError::HardLink(dest));
    }
    fchown(&dst, Some(uid), Some(gid))
        .map_err(|err| JailerError::ChangeFileOwner(dest.clone(), err))?;
    // Only now, with the link count checked, may an old copy be cut short.
    dst.set_len(0)
        .and_then(|()| io::copy(&mut src, &mut dst))
        .map_err(|err| JailerError::Copy(exec_file.to_path_buf(), dest.clone(), err))?;
    Ok(dest)
}

/// Enters a new mount namespace and makes `root` the file system root.
///
/// # Errors
/// The step that failed: unshare, mount propagation, bind mount, chdir, pivot or unmount.
pub fn pivot_into(root: &Path) -> Result<(), JailerError> {
    // SAFETY: unshare takes a flag word only.
    check(unsafe { libc::unshare(libc::CLONE_NEWNS) }).map_err(JailerError::UnshareNewNs)?;
    mount(None, Path::new("/"), libc::MS_SLAVE | libc::MS_REC)
        .map_err(JailerError::MountPropagationSlave)?;
    mount(Some(root), root, libc::MS_BIND | libc::MS_REC).map_err(JailerError::MountBind)?;
    std::env::set_current_dir(root).map_err(JailerError::ChdirNewRoot)?;
    match fs::create_dir(OLD_ROOT) {
        Err(err) if err.kind() != io::ErrorKind::AlreadyExists => {
            return Err(JailerError::MkdirOldRoot(err))
        }
        _ => {}
    }
    // SAFETY: both paths are static NUL-terminated strings; pivot_root has no libc wrapper.
    let ret = unsafe { libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c"old_root".as_ptr()) };
    if ret != 0 {
        return Err(JailerError::PivotRoot(io::Error::last_os_error()));
    }
    std::env::set_current_dir("/").map_err(JailerError::ChdirNewRoot)?;
    // SAFETY: the path is a static NUL-terminated string.
    check(unsafe { libc::umount2(c"/old_root".as_ptr(), libc::MNT_DETACH) })
        .map_err(JailerError::UmountOldRoot)?;
    fs::remove_dir("/old_root").map_err(JailerError::RmOldRootDir)
}

/// Creates [`JAIL_FOLDERS`] under `root` (`/` once inside the jail): mode 0700, uid:gid.
///
/// # Errors
/// The directory that could not be created, chmod-ed or chown-ed.
pub fn create_jail_folders(root: &Path, uid: u32, gid: u32) -> Result<(), JailerError> {
    for folder in JAIL_FOLDERS {
        let path = root.join(folder.trim_start_matches('/'));
        let shown = PathBuf::from(folder);
        fs::create_dir_all(&path).map_err(|err| JailerError::CreateDir(shown.clone(), err))?;
        fs::set_permissions(&path, Permissions::from_mode(JAIL_FOLDER_MODE))
            .map_err(|err| JailerError::Chmod(shown.clone(), err))?;
        std::os::unix::fs::chown(&path, Some(uid), Some(gid))
            .map_err(|err| JailerError::ChangeFileOwner(shown, err))?;
    }
    Ok(())
}

/// `mount(source, target, NULL, flags, NULL)`.
fn mount(source: Option<&Path>, target: &Path, flags: libc::c_ulong) -> io::Result<()> {
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
    };
    let target = c(target)?;
    let source = source.map(c).transpose()?;
    let source_ptr = source.as_ref().map_or(std::ptr::null(), |s| s.as_ptr());
    // SAFETY: `source` (or NULL) and `target` are NUL-terminated strings that outlive the
    // call; a NULL fstype and data are allowed for propagation changes and bind mounts.
    check(unsafe {
        libc::mount(
            source_ptr,
            target.as_ptr(),
            std::ptr::null(),
            flags,
            std::ptr::null(),
        )
    })
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chroot_dir_is_base_exec_name_id_root() {
        assert_eq!(
            chroot_dir(Path::new("/srv/jailer"), "firecracker", "vm-1"),
            PathBuf::from("/srv/jailer/firecracker/vm-1/root")
        );
    }

    #[test]
    fn copy_exec_file_copies_content_mode_and_owner() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("vmm");
        fs::write(&src, b"#!binary").unwrap();
        fs::set_permissions(&src, Permissions::from_mode(0o751)).unwrap();
        let root = tmp.path().join("root");
        fs::create_dir(&root).unwrap();
        // SAFETY: getuid/getgid have no preconditions.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let mut undo = Undo::default();
        let dest = copy_exec_file(&src, &root, uid, gid, &mut undo).unwrap();
        assert_eq!(dest, root.join("vmm"));
        assert_eq!(fs::read(&dest).unwrap(), b"#!binary");
        assert_eq!(fs::metadata(&dest).unwrap().mode() & 0o777, 0o751);

        // A second run over a longer stale copy leaves exactly the source's bytes.
        fs::write(&dest, b"#!binary plus stale tail").unwrap();
        copy_exec_file(&src, &root, uid, gid, &mut Undo::default()).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"#!binary");

        undo.roll_back();
        assert!(!dest.exists());
    }

    #[test]
    fn copy_exec_file_refuses_planted_hard_links_and_symlinks() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("vmm");
        fs::write(&src, b"new").unwrap();
        let victim = tmp.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        let root = tmp.path().join("root");
        fs::create_dir(&root).unwrap();

        fs::hard_link(&victim, root.join("vmm")).unwrap();
        let err = copy_exec_file(&src, &root, 0, 0, &mut Undo::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("Detected hard link at: {}", root.join("vmm").display())
        );

        fs::remove_file(root.join("vmm")).unwrap();
        std::os::unix::fs::symlink(&victim, root.join("vmm")).unwrap();
        let err = copy_exec_file(&src, &root, 0, 0, &mut Undo::default()).unwrap_err();
        assert!(
            matches!(err, JailerError::Open(_, ref e) if e.raw_os_error() == Some(libc::ELOOP)),
            "{err}"
        );
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
    }

    #[test]
    fn create_jail_folders_sets_mode_and_owner() {
        let tmp = tempfile::tempdir().unwrap();
        // SAFETY: getuid/getgid have no preconditions.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        create_jail_folders(tmp.path(), uid, gid).unwrap();
        for folder in JAIL_FOLDERS {
            let meta = fs::metadata(tmp.path().join(folder.trim_start_matches('/'))).unwrap();
            assert!(meta.is_dir());
            assert_eq!(meta.mode() & 0o7777, 0o700, "{folder}");
            assert_eq!((meta.uid(), meta.gid()), (uid, gid));
        }
    }
}
