//! The device nodes inside the jail (Firecracker `src/jailer/src/env.rs`, `mknod_and_own_dev`).
//!
//! After `pivot_root` the jail is `/`, and the VMM needs exactly these character devices, each
//! created with mode 0600 and owned by `--uid`:`--gid`:
//!
//! | node | major:minor | if it cannot be created |
//! |---|---|---|
//! | `/dev/net/tun` | 10:200 | error |
//! | `/dev/kvm` | 10:232 | error |
//! | `/dev/urandom` | 1:9 | warning on stdout (MMDS version 2 needs it), go on |
//! | `/dev/userfaultfd` | 10:minor from `/proc/misc` | only created when `/proc/misc` lists it |
//!
//! `userfaultfd` is a misc device with a dynamic minor, hence the `/proc/misc` lookup, which is
//! made before the pivot (the jail has no `/proc`).

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::JailerError;

/// Where the kernel lists misc devices and their minors.
pub const PROC_MISC: &str = "/proc/misc";

/// Major number of misc devices.
const MISC_MAJOR: u32 = 10;

/// One device node to create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceNode {
    /// Path inside the jail.
    pub path: &'static str,
    /// Major number.
    pub major: u32,
    /// Minor number.
    pub minor: u32,
}

/// `/dev/net/tun`.
pub const NET_TUN: DeviceNode = DeviceNode {
    path: "/dev/net/tun",
    major: MISC_MAJOR,
    minor: 200,
};
/// `/dev/kvm`.
pub const KVM: DeviceNode = DeviceNode {
    path: "/dev/kvm",
    major: MISC_MAJOR,
    minor: 232,
};
/// `/dev/urandom`.
pub const URANDOM: DeviceNode = DeviceNode {
    path: "/dev/urandom",
    major: 1,
    minor: 9,
};

/// The `/dev/userfaultfd` node for the minor `/proc/misc` gave.
pub fn userfaultfd(minor: u32) -> DeviceNode {
    DeviceNode {
        path: "/dev/userfaultfd",
        major: MISC_MAJOR,
        minor,
    }
}

/// The minor of misc device `name` in `/proc/misc` text (lines `<minor> <name>`).
pub fn misc_minor(proc_misc: &str, name: &str) -> Option<u32> {
    proc_misc.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let minor = fields.next()?;
        (fields.next()? == name)
            .then(|| minor.parse().ok())
            .flatten()
    })
}

/// Creates every node under `root` (`/` once inside the jail), owned by `uid`:`gid`.
///
/// # Errors
/// [`JailerError::MknodDev`] or [`JailerError::ChangeFileOwner`] for `tun`, `kvm` and
/// `userfaultfd`; a failure on `urandom` only prints Firecracker's warning.
pub fn create_all(
    root: &Path,
    uid: u32,
    gid: u32,
    uffd_minor: Option<u32>,
) -> Result<(), JailerError> {
    create(root, NET_TUN, uid, gid)?;
    create(root, KVM, uid, gid)?;
    if let Err(err) = create(root, URANDOM, uid, gid) {
        println!("Warning! Could not create /dev/urandom device inside jailer: {err}.");
        println!("MMDS version 2 will not be available to use.");
    }
    if let Some(minor) = uffd_minor {
        create(root, userfaultfd(minor), uid, gid)?;
    }
    Ok(())
}

/// `mknod(S_IFCHR | 0600)` then `chown`.
fn create(root: &Path, node: DeviceNode, uid: u32, gid: u32) -> Result<(), JailerError> {
    let path = jailed(root, node.path);
    let c_path = CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        JailerError::MknodDev(io::ErrorKind::InvalidInput.into(), node.path.to_string())
    })?;
    // SAFETY: `c_path` is a NUL-terminated string that outlives the call.
    let ret = unsafe {
        libc::mknod(
            c_path.as_ptr(),
            libc::S_IFCHR | libc::S_IRUSR | libc::S_IWUSR,
            libc::makedev(node.major, node.minor),
        )
    };
    if ret != 0 {
        return Err(JailerError::MknodDev(
            io::Error::last_os_error(),
            node.path.to_string(),
        ));
    }
    std::os::unix::fs::chown(&path, Some(uid), Some(gid))
        .map_err(|err| JailerError::ChangeFileOwner(path.clone(), err))
}

/// `path` (absolute inside the jail) under `root`.
fn jailed(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};

    use super::*;

    const PROC_MISC_SAMPLE: &str =
        "234 btrfs-control\n259 cpu_dma_latency\n200 tun\n257 userfaultfd\n232 kvm\n";

    #[test]
    fn misc_minor_finds_listed_devices_only() {
        assert_eq!(misc_minor(PROC_MISC_SAMPLE, "userfaultfd"), Some(257));
        assert_eq!(misc_minor(PROC_MISC_SAMPLE, "kvm"), Some(232));
        assert_eq!(misc_minor(" 57 userfaultfd\n", "userfaultfd"), Some(57));
        assert_eq!(misc_minor(PROC_MISC_SAMPLE, "vsock"), None);
        assert_eq!(misc_minor("x userfaultfd\n", "userfaultfd"), None);
        assert_eq!(misc_minor("", "userfaultfd"), None);
    }

    #[test]
    fn create_all_makes_owned_0600_char_devices() {
        // SAFETY: getuid has no preconditions.
        if unsafe { libc::getuid() } != 0 {
            // Straight to stderr: libtest would hide an eprintln! of a passing test.
            use std::io::Write as _;
            let _ = writeln!(
                io::stderr(),
                "SKIP create_all_makes_owned_0600_char_devices: mknod needs root"
            );
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("dev/net")).unwrap();
        create_all(tmp.path(), 1234, 5678, Some(99)).unwrap();
        for (node, minor) in [
            ("dev/net/tun", 200),
            ("dev/kvm", 232),
            ("dev/urandom", 9),
            ("dev/userfaultfd", 99),
        ] {
            let meta = std::fs::metadata(tmp.path().join(node)).unwrap();
            assert!(meta.file_type().is_char_device(), "{node}");
            assert_eq!(meta.mode() & 0o7777, 0o600, "{node}");
            assert_eq!((meta.uid(), meta.gid()), (1234, 5678), "{node}");
            assert_eq!(libc::minor(meta.rdev()), minor, "{node}");
        }
        let err = create_all(tmp.path(), 1, 1, None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Failed to create /dev/net/tun via mknod inside the jail: File exists (os error 17)"
        );
    }
}
