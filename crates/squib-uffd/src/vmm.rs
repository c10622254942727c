//! The VMM side: register restored guest memory with a new userfaultfd and hand both the
//! userfaultfd and a description of the memory to the page-fault handler listening on a
//! Unix socket.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;

use vm_memory::bitmap::Bitmap;
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion, GuestRegionMmap};
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

use crate::error::UffdError;
use crate::mapping::GuestRegionUffdMapping;
use crate::sys::{host_page_size, _UFFDIO_COPY, UFFD_FEATURE_EVENT_REMOVE};
use crate::uffd::Uffd;

/// What a successful [`hand_off`] leaves the VMM: keep it for the VM's whole life. The
/// handler needs nothing back, but closing the connection tells it the VMM has gone, and the
/// registration lasts as long as a userfaultfd descriptor is open.
#[derive(Debug)]
pub struct UffdHandoff {
    uffd: Uffd,
    socket: UnixStream,
    mappings: Vec<GuestRegionUffdMapping>,
}

impl UffdHandoff {
    /// The userfaultfd the memory is registered with.
    pub fn uffd(&self) -> &Uffd {
        &self.uffd
    }

    /// The connection to the handler.
    pub fn socket(&self) -> &UnixStream {
        &self.socket
    }

    /// The regions as described to the handler.
    pub fn mappings(&self) -> &[GuestRegionUffdMapping] {
        &self.mappings
    }
}

/// Registers every region of `mem` (anonymous private memory, as
/// `create_guest_memory_for_uffd` makes) with a new userfaultfd for missing-page faults and
/// discard events, connects to the handler at `socket_path` and sends it, in one `sendmsg`,
/// the JSON array of [`GuestRegionUffdMapping`]s with the userfaultfd attached
/// (`SCM_RIGHTS`). Each region's `offset` is where its contents lie in the snapshot memory
/// file: the regions back to back in guest-address order.
///
/// From the moment this returns, touching guest memory waits for the handler. Any dirty-page
/// bitmap `B` the regions carry is left alone: pages the handler fills hold what the memory
/// file holds, so they are not changes.
pub fn hand_off<B: Bitmap>(
    mem: &GuestMemoryMmap<B>,
    socket_path: &Path,
) -> Result<UffdHandoff, UffdError> {
    let uffd = Uffd::new().map_err(UffdError::Create)?;
    uffd.api(UFFD_FEATURE_EVENT_REMOVE)
        .map_err(UffdError::Create)?;
    let mut mappings = Vec::with_capacity(mem.num_regions());
    let mut offset = 0u64;
    for region in mem.iter() {
        let mapping = describe_region(region, offset)?;
        register(&uffd, &mapping)?;
        // Cannot overflow: the sizes are of mappings that exist in this address space.
        offset += mapping.size;
        mappings.push(mapping);
    }
    let socket = UnixStream::connect(socket_path).map_err(UffdError::Connect)?;
    let message = serde_json::to_vec(&mappings).map_err(|err| UffdError::Send(err.into()))?;
    let sent = socket
        .send_with_fd(&message[..], uffd.as_raw_fd())
        .map_err(|err| UffdError::Send(err.into()))?;
    if sent != message.len() {
        return Err(UffdError::Send(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("sent {sent} of the {} bytes", message.len()),
        )));
    }
    Ok(UffdHandoff {
        uffd,
        socket,
        mappings,
    })
}

/// The description of `region`, whose contents are at `offset` in the memory file.
fn describe_region<B: Bitmap>(
    region: &GuestRegionMmap<B>,
    offset: u64,
) -> Result<GuestRegionUffdMapping, UffdError> {
    let page_size = region_page_size(region).map_err(UffdError::Register)?;
    Ok(GuestRegionUffdMapping {
        base_host_virt_addr: region.as_ptr() as u64,
        size: region.len(),
        offset,
        page_size,
        page_size_kib: page_size,
    })
}

/// Registers the region, and checks the kernel allows filling it with `UFFDIO_COPY` (it
/// would not on a file mapping, for instance).
fn register(uffd: &Uffd, mapping: &GuestRegionUffdMapping) -> Result<(), UffdError> {
    let ioctls = uffd
        .register_missing(mapping.base_host_virt_addr, mapping.size)
        .map_err(UffdError::Register)?;
    if ioctls & (1 << _UFFDIO_COPY) == 0 {
        return Err(UffdError::Register(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "the kernel does not allow UFFDIO_COPY into the region at {:#x}",
                mapping.base_host_virt_addr
            ),
        )));
    }
    Ok(())
}

/// The page size backing `region`: the host's base page, or for hugetlbfs memory the size its
/// mmap flags asked for. hugetlbfs memory mapped without an explicit size has the host's
/// default huge page size, which this does not guess.
fn region_page_size<B: Bitmap>(region: &GuestRegionMmap<B>) -> io::Result<u64> {
    let flags = region.flags();
    if flags & libc::MAP_HUGETLB == 0 {
        return Ok(host_page_size());
    }
    match (flags >> libc::MAP_HUGE_SHIFT) & libc::MAP_HUGE_MASK {
        0 => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "the hugetlbfs region at {:#x} does not say its page size (MAP_HUGE_*)",
                region.as_ptr() as u64
            ),
        )),
        shift => Ok(1 << shift),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixListener;

    use squib_arch::memory::GuestMemoryMmap;
    use vm_memory::GuestAddress;

    use super::*;

    fn uffd_memory(regions: &[(GuestAddress, usize)]) -> GuestMemoryMmap {
        squib_arch::memory::create_guest_memory_for_uffd(
            regions,
            squib_arch::memory::HugePageMode::None,
        )
        .unwrap()
    }

    #[test]
    fn nobody_listening_is_the_connect_error() {
        let dir = tempfile::tempdir().unwrap();
        let mem = uffd_memory(&[(GuestAddress(0), 1 << 20)]);
        let missing = dir.path().join("missing.sock");
        let err = hand_off(&mem, &missing).unwrap_err();
        assert!(matches!(err, UffdError::Connect(_)));
        assert!(
            err.to_string()
                .starts_with("Failed to connect to UDS Unix stream: "),
            "{err}"
        );
        // A socket whose listener has gone refuses the connection.
        let stale = dir.path().join("stale.sock");
        drop(UnixListener::bind(&stale).unwrap());
        let err = hand_off(&mem, &stale).unwrap_err().to_string();
        assert!(
            err.starts_with("Failed to connect to UDS Unix stream: Connection refused"),
            "{err}"
        );
    }

    #[test]
    fn file_mapped_memory_cannot_be_registered() {
        let file = tempfile::tempfile().unwrap();
        file.set_len(1 << 20).unwrap();
        let mem = squib_arch::memory::create_guest_memory_from_file(
            &[(GuestAddress(0), 1 << 20)],
            &file,
            squib_arch::memory::HugePageMode::None,
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let err = hand_off(&mem, &dir.path().join("h.sock")).unwrap_err();
        assert!(
            err.to_string().starts_with(
                "Failed to register memory address range with the userfaultfd object: "
            ),
            "{err}"
        );
    }

    #[test]
    fn hugetlbfs_regions_report_their_page_size() {
        let mem = squib_arch::memory::create_guest_memory_for_uffd(
            &[(GuestAddress(0), 2 << 20)],
            squib_arch::memory::HugePageMode::Hugetlbfs2M,
        )
        .unwrap();
        let region = mem.iter().next().unwrap();
        assert_eq!(region_page_size(region).unwrap(), 2 << 20);
        let base = uffd_memory(&[(GuestAddress(0), 4096)]);
        assert_eq!(region_page_size(base.iter().next().unwrap()).unwrap(), 4096);
    }
}
