//! Why handing guest memory to a page-fault handler, or serving its faults, failed.

use std::io;

use vm_memory::mmap::MmapRegionError;

/// Errors of the VMM side, [`crate::hand_off`]. The texts are Firecracker's
/// (`GuestMemoryFromUffdError`), so API clients see the same messages.
#[derive(Debug, thiserror::Error)]
pub enum UffdError {
    /// The userfaultfd could not be created, or its API handshake failed.
    #[error("Failed to UFFD object: {0}")]
    Create(#[source] io::Error),
    /// A guest memory region could not be registered.
    #[error("Failed to register memory address range with the userfaultfd object: {0}")]
    Register(#[source] io::Error),
    /// Nobody accepts connections on the handler's socket.
    #[error("Failed to connect to UDS Unix stream: {0}")]
    Connect(#[source] io::Error),
    /// The region description and userfaultfd could not be sent.
    #[error("Failed to sends file descriptor: {0}")]
    Send(#[source] io::Error),
}

/// Errors of the handler side: receiving the hand-off, checking it against the memory file,
/// serving faults.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// `recvmsg` on the VMM's connection failed.
    #[error("Cannot receive the guest memory description from the VMM: {0}")]
    Receive(#[source] io::Error),
    /// The VMM closed its connection before a whole message arrived.
    #[error("The VMM closed its connection after {received} bytes, before a whole guest memory description")]
    ClosedEarly {
        /// Bytes received before the end.
        received: usize,
    },
    /// The message is larger than any sensible description.
    #[error("The VMM's guest memory description is longer than {max} bytes")]
    MessageTooLong {
        /// The limit.
        max: usize,
    },
    /// The message is not a JSON array of region descriptions.
    #[error("Cannot parse the VMM's guest memory description: {0}")]
    Parse(#[source] serde_json::Error),
    /// The message came without a file descriptor.
    #[error("The VMM's guest memory description came without a userfaultfd")]
    NoUffd,
    /// The received userfaultfd cannot be set up for polling.
    #[error("Cannot set up the received userfaultfd: {0}")]
    UffdSetup(#[source] io::Error),
    /// The description lists no region.
    #[error("The VMM described no guest memory region")]
    NoRegions,
    /// A region description is unusable.
    #[error("Guest memory region {index} ({mapping}) is invalid: {reason}")]
    InvalidRegion {
        /// Its position in the message.
        index: usize,
        /// The region as received, in JSON.
        mapping: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The memory file is shorter than the regions' contents.
    #[error("The memory file is {file_bytes} bytes, shorter than the {needed_bytes} bytes the guest memory regions need")]
    MemoryFileTooShort {
        /// Length of the file.
        file_bytes: u64,
        /// The end of the furthest region in the file.
        needed_bytes: u64,
    },
    /// The memory file could not be inspected.
    #[error("Cannot read the memory file: {0}")]
    MemoryFile(#[source] io::Error),
    /// The memory file could not be mapped.
    #[error("Cannot map the memory file: {0}")]
    MapMemoryFile(#[source] MmapRegionError),
    /// Waiting for events failed.
    #[error("Cannot poll the userfaultfd and the VMM's connection: {0}")]
    Poll(#[source] io::Error),
    /// The userfaultfd reported an error condition instead of events.
    #[error("The userfaultfd is in an error state (poll events {revents:#x})")]
    UffdBroken {
        /// What poll reported.
        revents: i16,
    },
    /// Reading the queued events failed.
    #[error("Cannot read userfaultfd events: {0}")]
    ReadEvents(#[source] io::Error),
    /// A fault outside every region: the VMM and the description disagree.
    #[error("Page fault at {address:#x}, outside every guest memory region")]
    FaultOutsideRegions {
        /// The faulting address.
        address: u64,
    },
    /// A userfaultfd ioctl failed.
    #[error("{op} of [{start:#x}, +{len:#x}) failed: {source}")]
    Ioctl {
        /// Which ioctl.
        op: &'static str,
        /// Start of the range.
        start: u64,
        /// Length of the range.
        len: u64,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
    /// Reading the VMM's connection failed.
    #[error("Cannot read the VMM's connection: {0}")]
    Connection(#[source] io::Error),
}
