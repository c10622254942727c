//! The resource store: what the API (or `--config-file`) configured before boot, and what
//! `InstanceStart` builds from. Every PUT/PATCH lands here; `GET /vm/config` reads it back.
//!
//! Inputs are already validated by `squib-api`; this store adds the checks that need I/O
//! (opening the kernel, initrd and drive files and the network interfaces' TAPs, as
//! Firecracker does at PUT time) or other resources (one root device, unique guest MACs). It also holds the MMDS document the net devices' endpoints read.
//!
//! Files are opened through [`open_host_file`]: never blocking the VMM thread, and kept only
//! when they are of a type that makes sense (a kernel is a regular file, a drive a regular
//! file or a block device). The opened files are kept until boot.

use std::fs::File;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use squib_api::schemas::{
    BalloonConfig, BootSourceConfig, CacheType, CpuConfig, DriveConfig, EntropyConfig, IoEngine,
    MachineConfig, MmdsConfig, NetworkInterfaceConfig, SerialConfig, VsockConfig,
};
use squib_devices::virtio::block::disk::DiskFile;
use squib_devices::virtio::block::{Block, BlockConfig, BlockError, CacheMode};
use squib_devices::virtio::net::NetError;
use squib_devices::virtio::vsock::{Vsock, VsockError};

use crate::host_file::{open_host_file, HostFileError, OpenSpec};
use crate::limiter_config::build_rate_limiter;
use crate::mmds_interceptor::SharedMmdsStore;
use crate::net::NetInterface;

/// Firecracker's default kernel command line when `boot_args` is absent.
pub const DEFAULT_KERNEL_CMDLINE: &str =
    "reboot=k panic=1 nomodule 8250.nr_uarts=0 i8042.noaux i8042.nomux i8042.dumbkbd swiotlb=noforce";

/// Why a resource was refused. `Display` is the text after Firecracker's variant prefix.
#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    /// The kernel image cannot be opened.
    #[error("The kernel file cannot be opened: {0}")]
    KernelFile(#[source] HostFileError),
    /// The initrd cannot be opened.
    #[error("The initrd file cannot be opened: {0}")]
    InitrdFile(#[source] HostFileError),
    /// A drive's backing file cannot be opened.
    #[error("Unable to open the block device backing file {}: {}", .0.display(), .1)]
    DriveFile(PathBuf, #[source] std::io::Error),
    /// A drive's backing file is of the wrong type (a directory, a FIFO, ...).
    #[error("Invalid block device backing file: {0}")]
    DriveFileType(#[source] HostFileError),
    /// `io_engine: Async` on a host without a usable io_uring.
    #[error("Unable to create the virtio block device: {0}")]
    AsyncEngine(#[source] squib_devices::virtio::block::uring::UringError),
    /// A second root device.
    #[error("A root block device already exists!")]
    RootBlockDeviceAlreadyAdded,
    /// A configured device that squib cannot build yet.
    #[error("{0} is not supported by squib yet")]
    NotSupported(&'static str),
    /// A drive without a backing file (vhost-user).
    #[error(
        "Drive {0} has no path_on_host: vhost-user block devices are not supported by squib yet"
    )]
    NoBackingFile(String),
    /// Another interface already offers this guest MAC.
    #[error("The MAC address is already in use: {0}")]
    GuestMacInUse(String),
    /// The TAP cannot be opened, or the device built on it.
    #[error("Could not create the network device: {0}")]
    Net(#[from] NetError),
    /// The vsock device's Unix socket cannot be bound.
    #[error(transparent)]
    Vsock(#[from] VsockError),
}

/// The boot source and its opened files.
#[derive(Debug)]
pub struct BootSource {
    /// As configured.
    pub config: BootSourceConfig,
    kernel: File,
    initrd: Option<File>,
}

impl BootSource {
    /// A fresh handle on the kernel image (the builder reads it from the start).
    ///
    /// # Errors
    /// [`ResourceError::KernelFile`] when the descriptor cannot be duplicated.
    pub fn kernel_file(&self) -> Result<File, ResourceError> {
        self.kernel
            .try_clone()
            .map_err(|e| ResourceError::KernelFile(HostFileError::Open(e)))
    }

    /// A fresh handle on the initrd, if one is configured.
    ///
    /// # Errors
    /// [`ResourceError::InitrdFile`] when the descriptor cannot be duplicated.
    pub fn initrd_file(&self) -> Result<Option<File>, ResourceError> {
        self.initrd
            .as_ref()
            .map(|f| {
                f.try_clone()
                    .map_err(|e| ResourceError::InitrdFile(HostFileError::Open(e)))
            })
            .transpose()
    }
}

/// A configured drive and the backing file opened at PUT time.
#[derive(Debug, Clone)]
pub struct Drive {
    /// As configured.
    pub config: DriveConfig,
    file: Arc<File>,
}

/// Why a drive's block device could not be built.
#[derive(Debug, thiserror::Error)]
pub enum DriveBuildError {
    /// The backing file checks failed (wrong type, replaced since PUT).
    #[error(transparent)]
    Resource(#[from] ResourceError),
    /// The device could not be created.
    #[error(transparent)]
    Block(#[from] BlockError),
}

/// Open a drive's backing file as a disk: without blocking, regular file or block device.
///
/// # Errors
/// [`ResourceError::DriveFile`] with the OS error, [`ResourceError::DriveFileType`] naming
/// what the path is.
pub fn open_drive_file(path: &std::path::Path, read_only: bool) -> Result<File, ResourceError> {
    open_host_file(path, OpenSpec::disk(read_only)).map_err(|e| match e {
        HostFileError::Open(e) => ResourceError::DriveFile(path.to_owned(), e),
        other => ResourceError::DriveFileType(other),
    })
}

impl Drive {
    /// The virtio-block device for this drive, over the file opened (and checked) at PUT
    /// time: the path is not opened again, so a file swapped in since cannot reach the guest.
    ///
    /// # Errors
    /// [`DriveBuildError`] when the device cannot be built.
    pub fn build_block(&self) -> Result<Block, DriveBuildError> {
        let path = self.config.path_on_host.clone().unwrap_or_default();
        let file = self.file.try_clone().map_err(|source| BlockError::Open {
            path: path.clone(),
            source,
        })?;
        let disk = DiskFile::from_file(file, &path, self.config.is_read_only)?;
        Ok(Block::with_disk(
            BlockConfig {
                drive_id: self.config.drive_id.as_str().to_owned(),
                path,
                read_only: self.config.is_read_only,
                cache: match self.config.cache_type {
                    CacheType::Unsafe => CacheMode::Unsafe,
                    CacheType::Writeback => CacheMode::Writeback,
                },
                rate_limiter: self
                    .config
                    .rate_limiter
                    .as_ref()
                    .map(build_rate_limiter)
                    .transpose()
                    .map_err(BlockError::EventFd)?,
                engine: match self.config.io_engine {
                    IoEngine::Sync => squib_devices::virtio::block::IoEngine::Sync,
                    IoEngine::Async => squib_devices::virtio::block::IoEngine::Async,
                },
            },
            disk,
        )?)
    }
}

/// Everything configured before boot.
#[derive(Debug, Default)]
pub struct VmResources {
    machine_config: MachineConfig,
    boot_source: Option<BootSource>,
    /// A restored VM's boot source, as its snapshot named it: the guest no longer needs the
    /// files (they may be gone), but the VM's own snapshots must name them again.
    restored_boot_source: Option<BootSourceConfig>,
    drives: Vec<Drive>,
    serial: Option<SerialConfig>,
    /// Network interfaces with their open TAPs, in the order they were added.
    net: Vec<NetInterface>,
    /// The MMDS document (shared with the API handlers and the net devices).
    mmds_store: SharedMmdsStore,
    /// `PUT /vsock`: the device exists from PUT on (its Unix socket is bound then).
    vsock: Option<VsockResource>,
    /// `PUT /balloon` (the device is built at `InstanceStart`).
    pub balloon: Option<BalloonConfig>,
    /// `PUT /entropy` (the device is built at `InstanceStart`).
    pub entropy: Option<EntropyConfig>,
    /// MMDS configuration.
    pub mmds_config: Option<MmdsConfig>,
    /// `PUT /cpu-config`: the custom CPU template, until a static `cpu_template` replaces it.
    pub cpu_config: Option<CpuConfig>,
}

/// The vsock device `PUT /vsock` built, with the configuration it came from.
#[derive(Debug)]
pub struct VsockResource {
    /// As configured.
    pub config: VsockConfig,
    /// The device, shared with its transport and the event loop once attached.
    pub device: Arc<Mutex<Vsock>>,
}

impl VmResources {
    /// The machine configuration (defaults until a PUT/PATCH).
    #[must_use]
    pub fn machine_config(&self) -> &MachineConfig {
        &self.machine_config
    }

    /// Replace the machine configuration.
    pub fn set_machine_config(&mut self, config: MachineConfig) {
        self.machine_config = config;
    }

    /// The boot source, once configured.
    #[must_use]
    pub fn boot_source(&self) -> Option<&BootSource> {
        self.boot_source.as_ref()
    }

    /// The boot source's configuration: as configured, or as a snapshot load restored it.
    #[must_use]
    pub fn boot_source_config(&self) -> Option<&BootSourceConfig> {
        self.boot_source
            .as_ref()
            .map(|b| &b.config)
            .or(self.restored_boot_source.as_ref())
    }

    /// Keep the boot source a snapshot names, without opening its files.
    pub fn set_restored_boot_source(&mut self, config: BootSourceConfig) {
        self.restored_boot_source = Some(config);
    }

    /// Configure the kernel (and initrd), opening them now as Firecracker does.
    ///
    /// # Errors
    /// [`ResourceError::KernelFile`] / [`ResourceError::InitrdFile`] with the OS error.
    pub fn set_boot_source(&mut self, config: BootSourceConfig) -> Result<(), ResourceError> {
        let kernel = open_host_file(&config.kernel_image_path, OpenSpec::read_regular())
            .map_err(ResourceError::KernelFile)?;
        let initrd = config
            .initrd_path
            .as_deref()
            .map(|p| open_host_file(p, OpenSpec::read_regular()).map_err(ResourceError::InitrdFile))
            .transpose()?;
        self.boot_source = Some(BootSource {
            config,
            kernel,
            initrd,
        });
        Ok(())
    }

    /// The kernel command line the user asked for, or Firecracker's default.
    #[must_use]
    pub fn boot_args(&self) -> String {
        self.boot_source
            .as_ref()
            .and_then(|b| b.config.boot_args.clone())
            .unwrap_or_else(|| DEFAULT_KERNEL_CMDLINE.to_owned())
    }

    /// Add or replace a drive. A root drive goes first, so it becomes `/dev/vda`.
    ///
    /// # Errors
    /// A second root device, or a backing file that cannot be opened with the access asked for.
    pub fn put_drive(&mut self, config: DriveConfig) -> Result<(), ResourceError> {
        if config.socket.is_some() {
            return Err(ResourceError::NotSupported("vhost-user block devices"));
        }
        if config.io_engine == IoEngine::Async {
            // Refused now, naming io_uring, rather than at InstanceStart.
            squib_devices::virtio::block::uring::probe().map_err(ResourceError::AsyncEngine)?;
        }
        let existing = self
            .drives
            .iter()
            .position(|d| d.config.drive_id == config.drive_id);
        let other_root = self
            .drives
            .iter()
            .enumerate()
            .any(|(i, d)| d.config.is_root_device && Some(i) != existing);
        if config.is_root_device && other_root {
            return Err(ResourceError::RootBlockDeviceAlreadyAdded);
        }
        let Some(path) = &config.path_on_host else {
            return Err(ResourceError::NoBackingFile(
                config.drive_id.as_str().to_owned(),
            ));
        };
        let file = Arc::new(open_drive_file(path, config.is_read_only)?);
        if let Some(i) = existing {
            self.drives.remove(i);
        }
        let drive = Drive { config, file };
        if drive.config.is_root_device {
            self.drives.insert(0, drive);
        } else {
            self.drives.push(drive);
        }
        Ok(())
    }

    /// Drives, root first, then in the order they were added.
    pub fn drives_in_attach_order(&self) -> impl Iterator<Item = &Drive> {
        self.drives.iter()
    }

    /// The drive with `drive_id`.
    #[must_use]
    pub fn drive(&self, drive_id: &str) -> Option<&Drive> {
        self.drives
            .iter()
            .find(|d| d.config.drive_id.as_str() == drive_id)
    }

    /// `root=... rw|ro` for the root drive, if there is one.
    #[must_use]
    pub fn root_device_cmdline(&self) -> Option<String> {
        let root = self.drives.iter().find(|d| d.config.is_root_device)?;
        let mode = if root.config.is_read_only { "ro" } else { "rw" };
        Some(match &root.config.partuuid {
            Some(uuid) => format!("root=PARTUUID={uuid} {mode}"),
            None => format!("root=/dev/vda {mode}"),
        })
    }

    /// The serial configuration from `PUT /serial`.
    #[must_use]
    pub fn serial(&self) -> Option<&SerialConfig> {
        self.serial.as_ref()
    }

    /// Replace the serial configuration.
    pub fn set_serial(&mut self, config: SerialConfig) {
        self.serial = Some(config);
    }

    /// Add or replace a network interface, opening its TAP now as Firecracker does. A
    /// re-PUT naming the TAP the interface already holds reuses it (a TAP opens only once).
    ///
    /// # Errors
    /// [`ResourceError::GuestMacInUse`], or [`ResourceError::Net`] naming the TAP and the
    /// OS error; the store is unchanged on error.
    pub fn put_network(&mut self, config: NetworkInterfaceConfig) -> Result<(), ResourceError> {
        if let Some(mac) = &config.guest_mac {
            let taken = self.net.iter().any(|n| {
                n.config.iface_id != config.iface_id && n.config.guest_mac.as_ref() == Some(mac)
            });
            if taken {
                return Err(ResourceError::GuestMacInUse(mac.to_string()));
            }
        }
        let existing = self
            .net
            .iter()
            .position(|n| n.config.iface_id == config.iface_id);
        let same_tap = existing
            .filter(|&i| self.net[i].config.host_dev_name == config.host_dev_name)
            .and_then(|i| self.net[i].take_tap());
        let iface = match same_tap {
            Some(tap) => NetInterface::with_tap(config, tap),
            None => NetInterface::open(config)?,
        };
        match existing {
            Some(i) => self.net[i] = iface,
            None => self.net.push(iface),
        }
        Ok(())
    }

    /// Network interfaces in the order they were added (the guest's eth0, eth1, ...).
    pub fn net_interfaces(&self) -> impl Iterator<Item = &NetInterface> {
        self.net.iter()
    }

    /// The configurations of every network interface (`GET /vm/config`).
    #[must_use]
    pub fn net_configs(&self) -> Vec<NetworkInterfaceConfig> {
        self.net.iter().map(|n| n.config.clone()).collect()
    }

    /// The MMDS document every interface's endpoint reads.
    #[must_use]
    pub fn mmds_store(&self) -> &SharedMmdsStore {
        &self.mmds_store
    }

    /// Use `store` (the VMM's, sized by `--mmds-size-limit`) as the MMDS document.
    pub fn set_mmds_store(&mut self, store: SharedMmdsStore) {
        self.mmds_store = store;
    }

    /// `PUT /vsock`: drop the previous device (which unlinks its socket), then build the new
    /// one, binding `uds_path` now as Firecracker does.
    ///
    /// # Errors
    /// [`ResourceError::Vsock`] when the socket cannot be bound.
    pub fn set_vsock(&mut self, config: VsockConfig) -> Result<(), ResourceError> {
        self.vsock = None;
        let device = Vsock::new(u64::from(config.guest_cid), config.uds_path.clone())?;
        self.vsock = Some(VsockResource {
            config,
            device: Arc::new(Mutex::new(device)),
        });
        Ok(())
    }

    /// The vsock device, when configured.
    #[must_use]
    pub fn vsock(&self) -> Option<&VsockResource> {
        self.vsock.as_ref()
    }
}

#[cfg(test)]
#[path = "resources_tests.rs"]
mod tests;
