//! The resource store's file checks: nothing a client names may block the VMM thread or be
//! accepted as something it is not.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use squib_api::action::ApiAction;
use squib_api::schemas::{BootSourceConfig, DriveConfig};

use super::*;

fn mkfifo(path: &Path) {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

/// Run `f` on another thread and fail (instead of hanging) if it blocks.
fn within_seconds<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(5))
        .expect("the open blocked the calling thread")
}

fn drive(id: &str, path: &Path, read_only: bool) -> DriveConfig {
    let body = serde_json::json!({
        "drive_id": id, "path_on_host": path, "is_root_device": false, "is_read_only": read_only
    });
    let body = serde_json::to_vec(&body).unwrap();
    match squib_api::routes::parse_request("PUT", &format!("/drives/{id}"), &body) {
        Ok(squib_api::routes::Parsed::Action {
            action: ApiAction::PutDrive(config),
            ..
        }) => config,
        other => panic!("PUT /drives/{id} did not parse: {other:?}"),
    }
}

fn boot_source(kernel: PathBuf, initrd: Option<PathBuf>) -> BootSourceConfig {
    BootSourceConfig {
        kernel_image_path: kernel,
        initrd_path: initrd,
        boot_args: None,
    }
}

#[test]
fn a_fifo_kernel_is_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("vmlinux");
    mkfifo(&fifo);
    let err = within_seconds(move || {
        VmResources::default()
            .set_boot_source(boot_source(fifo, None))
            .unwrap_err()
            .to_string()
    });
    assert!(
        err.starts_with("The kernel file cannot be opened: ")
            && err.ends_with("vmlinux is a FIFO, not a regular file"),
        "{err}"
    );
}

#[test]
fn a_directory_kernel_or_initrd_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("vmlinux");
    std::fs::write(&kernel, b"x").unwrap();
    let mut resources = VmResources::default();
    let err = resources
        .set_boot_source(boot_source(dir.path().to_owned(), None))
        .unwrap_err();
    assert!(
        err.to_string()
            .ends_with("is a directory, not a regular file"),
        "{err}"
    );
    let err = resources
        .set_boot_source(boot_source(kernel, Some(dir.path().to_owned())))
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("The initrd file cannot be opened: "),
        "{err}"
    );
    assert!(resources.boot_source().is_none());
}

#[test]
fn a_missing_kernel_keeps_firecrackers_message() {
    let err = VmResources::default()
        .set_boot_source(boot_source("/nonexistent/vmlinux".into(), None))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "The kernel file cannot be opened: No such file or directory (os error 2)"
    );
}

#[test]
fn a_fifo_drive_is_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("disk");
    mkfifo(&fifo);
    for read_only in [true, false] {
        let fifo = fifo.clone();
        let err = within_seconds(move || {
            VmResources::default()
                .put_drive(drive("data", &fifo, read_only))
                .unwrap_err()
                .to_string()
        });
        assert!(
            err.contains("disk is a FIFO, not a regular file or a block device")
                || err.contains("No such device or address"),
            "{err}"
        );
    }
}

#[test]
fn a_directory_drive_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut resources = VmResources::default();
    let err = resources
        .put_drive(drive("data", dir.path(), true))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "Invalid block device backing file: {} is a directory, not a regular file or a block device",
            dir.path().display()
        )
    );
    assert!(resources.drive("data").is_none());
}

#[test]
fn a_drive_builds_from_the_file_opened_at_put() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk");
    std::fs::write(&disk, vec![0u8; 4096]).unwrap();
    let mut resources = VmResources::default();
    resources.put_drive(drive("data", &disk, false)).unwrap();
    let block = resources.drive("data").unwrap().build_block().unwrap();
    assert_eq!(block.nsectors(), 8);
}

#[test]
fn a_drive_is_the_file_opened_at_put_whatever_its_path_names_later() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk");
    std::fs::write(&disk, vec![0u8; 4096]).unwrap();
    let mut resources = VmResources::default();
    resources.put_drive(drive("data", &disk, true)).unwrap();
    // A bigger file, then a FIFO, put at the same path after the PUT: the device is built
    // over the file opened then (4096 bytes), without opening the path again (a FIFO with no
    // writer would block the VMM thread).
    std::fs::remove_file(&disk).unwrap();
    std::fs::write(&disk, vec![0u8; 8192]).unwrap();
    std::fs::remove_file(&disk).unwrap();
    mkfifo(&disk);
    let drive = resources.drive("data").unwrap().clone();
    let block = within_seconds(move || drive.build_block().unwrap());
    let mut capacity = [0u8; 8];
    squib_devices::virtio::VirtioDevice::read_config(&block, 0, &mut capacity);
    assert_eq!(u64::from_le_bytes(capacity), 4096 / 512);
}
