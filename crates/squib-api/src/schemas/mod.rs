//! Request and configuration types, one file per API resource.
//!
//! Each body deserialises into a `Raw*` type (`deny_unknown_fields` where Firecracker denies
//! them) and converts with `TryFrom` into the validated type the VMM consumes; the VMM never
//! re-validates. Validated types serialise in the shape of `GET /vm/config`.

pub mod balloon;
pub mod boot_source;
pub mod cpu_config;
pub mod drive;
pub mod entropy;
pub mod error;
pub mod hotplug_memory;
pub mod ids;
pub mod instance;
pub mod logger;
pub mod machine_config;
pub mod metrics;
pub mod mmds;
pub mod net;
pub mod paths;
pub mod pmem;
pub mod rate_limiter;
pub mod serial;
pub mod snapshot;
pub mod vm_config;
pub mod vsock;

pub use balloon::{BalloonConfig, BalloonStartCmd, BalloonStatsUpdate, BalloonUpdate};
pub use boot_source::BootSourceConfig;
pub use cpu_config::CpuConfig;
pub use drive::{CacheType, DriveConfig, DrivePatch, IoEngine};
pub use entropy::EntropyConfig;
pub use error::SchemaError;
pub use hotplug_memory::{HotplugMemoryConfig, HotplugMemoryUpdate};
pub use ids::{DriveId, IfaceId, MacAddr};
pub use instance::{InstanceAction, VmStateChange};
pub use logger::{LogLevel, LoggerConfig};
pub use machine_config::{CpuTemplate, HugePages, MachineConfig, MachineConfigPatch};
pub use metrics::MetricsConfig;
pub use mmds::{MmdsConfig, MmdsContents, MmdsVersion};
pub use net::{NetworkInterfaceConfig, NetworkPatch};
pub use pmem::{PmemConfig, PmemPatch};
pub use rate_limiter::{RateLimiterConfig, TokenBucketConfig};
pub use serial::SerialConfig;
pub use snapshot::{
    MemBackend, MemBackendType, SnapshotCreateConfig, SnapshotLoadConfig, SnapshotType,
};
pub use vm_config::VmConfig;
pub use vsock::VsockConfig;
