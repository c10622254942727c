//! Validation failures of request bodies. `Display` is the text Firecracker puts after its
//! resource prefix (`Machine config error: ...`); the router adds the prefix.

/// Why a parsed body is not a valid configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    /// An empty resource ID.
    #[error("The ID cannot be empty.")]
    EmptyId,
    /// A resource ID with characters other than `[A-Za-z0-9_]`.
    #[error("API Resource IDs can only contain alphanumeric characters and underscores.")]
    InvalidIdChars,
    /// A resource ID longer than 64 bytes.
    #[error("API Resource IDs can be at most 64 characters long.")]
    IdTooLong,
    /// vCPU count out of range or odd with SMT.
    #[error("The number of vCPUs must be greater than 0, less than 32 and must be 1 or an even number if SMT is enabled.")]
    InvalidVcpuCount,
    /// Memory size zero or not a multiple of the page size.
    #[error("The memory size (MiB) is either 0, or not a multiple of the configured page size.")]
    InvalidMemorySize,
    /// A malformed MAC address.
    #[error("Invalid MAC address: {0}. Expected six hexadecimal octets separated by ':'.")]
    InvalidMac(String),
    /// An MTU outside what virtio-net allows.
    #[error("The MTU {0} is invalid: it must be between 68 and 65535.")]
    InvalidMtu(u16),
    /// A path that is empty, too long or holds a NUL byte.
    #[error("The {field} is invalid: a path must be non-empty, at most 4096 bytes long and contain no NUL byte.")]
    InvalidPath {
        /// The JSON field.
        field: &'static str,
    },
    /// A Unix socket path longer than `sun_path` allows.
    #[error("The {field} is too long: a Unix socket path must be at most 107 bytes.")]
    SocketPathTooLong {
        /// The JSON field.
        field: &'static str,
    },
    /// A kernel command line longer than the boot protocol allows.
    #[error("The kernel command line is {0} bytes long; the maximum is 2047 bytes.")]
    CmdlineTooLong(usize),
    /// vhost-user fields mixed with virtio-block fields, or neither backend given.
    #[error("Invalid block config.")]
    InvalidBlockConfig,
    /// A TAP device name that cannot exist.
    #[error("The host_dev_name {0:?} is invalid: a TAP name must be 1 to 15 bytes long.")]
    InvalidTapName(String),
    /// `network_interfaces` empty in `PUT /mmds/config`.
    #[error("The list of network interface IDs that allow forwarding MMDS requests is empty.")]
    EmptyMmdsInterfaces,
    /// An MMDS address outside 169.254.1.0 - 169.254.254.255.
    #[error("The MMDS IPv4 address is not link local.")]
    InvalidMmdsIpv4,
    /// A log level that is not one of Firecracker's.
    #[error(
        "Invalid log level: {0}. Expected one of Off, Trace, Debug, Info, Warn, Warning, Error."
    )]
    InvalidLogLevel(String),
    /// A virtio-mem block size that is not a power of two of at least 2 MiB.
    #[error("The block size (MiB) must be a power of 2 and at least 2.")]
    InvalidHotplugBlockSize,
    /// A virtio-mem slot size that is too small or not a multiple of the block size.
    #[error("The slot size (MiB) must be at least 128 and a multiple of the block size.")]
    InvalidHotplugSlotSize,
    /// A virtio-mem total size that is not a positive multiple of the slot size.
    #[error("The total size (MiB) must be a non-zero multiple of the slot size.")]
    InvalidHotplugTotalSize,
    /// Snapshot load with neither memory backend.
    #[error("missing field: either `mem_backend` or `mem_file_path` is required")]
    SnapshotMemBackendMissing,
    /// Snapshot load with both memory backends.
    #[error("too many fields: either `mem_backend` or `mem_file_path` exclusively is required.")]
    SnapshotMemBackendTooMany,
    /// squib's working-set prefetch asked for with a userfaultfd backend.
    #[error("The working_set option needs the File memory backend: a Uffd page-fault handler serves every page itself.")]
    WorkingSetNeedsFileBackend,
    /// A working-set record window outside its range.
    #[error("The working_set record_ms of {0} is invalid: it must be between 1 and {max} ms.", max = super::snapshot::MAX_WORKING_SET_RECORD_MS)]
    InvalidWorkingSetRecordMs(u64),
    /// A token bucket's refill time whose nanoseconds overflow a u64 (Firecracker then
    /// silently builds no bucket).
    #[error("The {field} of {value} ms is too large: the refill time in nanoseconds must fit in 64 bits (at most {max} ms).", max = super::rate_limiter::MAX_REFILL_TIME_MS)]
    RefillTimeTooLarge {
        /// The JSON path (`rate_limiter.bandwidth.refill_time`).
        field: String,
        /// What was given.
        value: u64,
    },
    /// A PATCH body that changes nothing.
    #[error("Empty PATCH request.")]
    EmptyPatch,
    /// A `partuuid` that is not a partition UUID (it goes into the kernel command line).
    #[error("The partuuid {0:?} is invalid: expected a GPT UUID (8-4-4-4-12 hexadecimal digits) or an MBR partition id (8-2 hexadecimal digits), optionally followed by /PARTNROFF=<number>.")]
    InvalidPartuuid(String),
}
