//! Test helpers: real anonymous guest memory and a driver-side virtqueue builder.
//!
//! [`VirtQueue`] lays out a split virtqueue in guest memory (virtio 1.2 §2.7: descriptor
//! table, then the available ring with `used_event`, then the 4-aligned used ring) and lets a test write descriptor chains by hand — including broken ones
//! (loops, bad addresses, wrong directions) — publish them, and read back the used ring.
//! Compiled for unit tests and behind the `test-utils` feature, never in production builds.

use virtio_queue::{Queue, QueueT};
use vm_memory::mmap::MmapRegion;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

use super::GuestMemoryMmap;

/// Descriptor flag: the chain continues at `next`.
pub const F_NEXT: u16 = 1;
/// Descriptor flag: the device writes this buffer.
pub const F_WRITE: u16 = 2;
/// Descriptor flag: the buffer is a table of descriptors.
pub const F_INDIRECT: u16 = 4;

/// `size` bytes of guest RAM at guest address 0.
///
/// # Panics
/// When the mapping fails (tests only).
#[must_use]
pub fn single_region_mem(size: usize) -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size)]).expect("cannot map guest memory")
}

/// The guest addresses of the 4 KiB pages of `mem` whose dirty bit is set, in order: the
/// pages a Diff snapshot would write for the VMM's own writes.
#[must_use]
pub fn dirty_pages(mem: &GuestMemoryMmap) -> Vec<u64> {
    const PAGE: u64 = 4096;
    let mut pages = Vec::new();
    for region in mem.iter() {
        let bitmap = MmapRegion::bitmap(region);
        for page in 0..region.len() / PAGE {
            if bitmap.is_bit_set(page as usize) {
                pages.push(region.start_addr().raw_value() + page * PAGE);
            }
        }
    }
    pages
}

/// Clears every dirty bit of `mem`, as a snapshot does once it has written the pages.
pub fn clear_dirty(mem: &GuestMemoryMmap) {
    for region in mem.iter() {
        MmapRegion::bitmap(region).reset();
    }
}

/// A driver's view of one split virtqueue in guest memory.
pub struct VirtQueue<'a> {
    mem: &'a GuestMemoryMmap,
    desc: u64,
    avail: u64,
    used: u64,
    size: u16,
    next_desc: u16,
}

impl<'a> VirtQueue<'a> {
    /// A queue of `size` entries whose descriptor table starts at `start`.
    #[must_use]
    pub fn new(mem: &'a GuestMemoryMmap, start: GuestAddress, size: u16) -> Self {
        let desc = start.0;
        let avail = desc + 16 * u64::from(size);
        let used = (avail + 6 + 2 * u64::from(size)).next_multiple_of(4);
        Self {
            mem,
            desc,
            avail,
            used,
            size,
            next_desc: 0,
        }
    }

    /// Write descriptor `index` verbatim.
    ///
    /// # Panics
    /// When `index` is outside the table or memory (tests only).
    pub fn set_desc(&self, index: u16, addr: u64, len: u32, flags: u16, next: u16) {
        assert!(index < self.size, "descriptor index {index}");
        let at = self.desc + 16 * u64::from(index);
        self.write(at, addr);
        self.write(at + 8, len);
        self.write(at + 12, flags);
        self.write(at + 14, next);
    }

    /// Write a linked chain of `(addr, len, flags)` into fresh descriptors (NEXT and `next`
    /// are filled in) and publish it; returns the head index.
    pub fn add_chain(&mut self, descs: &[(u64, u32, u16)]) -> u16 {
        let head = self.next_desc;
        for (i, &(addr, len, flags)) in descs.iter().enumerate() {
            let index = (head + i as u16) % self.size;
            let last = i + 1 == descs.len();
            let flags = if last {
                flags & !F_NEXT
            } else {
                flags | F_NEXT
            };
            self.set_desc(index, addr, len, flags, (index + 1) % self.size);
        }
        self.next_desc = (head + descs.len() as u16) % self.size;
        self.publish(head);
        head
    }

    /// Put `head` in the next available-ring slot and bump `avail.idx`.
    ///
    /// # Panics
    /// When the ring is outside guest memory (tests only).
    pub fn publish(&self, head: u16) {
        let idx: u16 = self.read(self.avail + 2);
        self.write(self.avail + 4 + 2 * u64::from(idx % self.size), head);
        self.write(self.avail + 2, idx.wrapping_add(1));
    }

    /// Overwrite `avail.idx` (a driver bug or attack).
    ///
    /// # Panics
    /// When the ring is outside guest memory (tests only).
    pub fn set_avail_idx(&self, idx: u16) {
        self.write(self.avail + 2, idx);
    }

    /// Point `queue` at this layout and mark it ready, as a driver would.
    pub fn configure(&self, queue: &mut Queue) {
        let split = |a: GuestAddress| (Some(a.0 as u32), Some((a.0 >> 32) as u32));
        queue.set_size(self.size);
        let (lo, hi) = split(GuestAddress(self.desc));
        queue.set_desc_table_address(lo, hi);
        let (lo, hi) = split(GuestAddress(self.avail));
        queue.set_avail_ring_address(lo, hi);
        let (lo, hi) = split(GuestAddress(self.used));
        queue.set_used_ring_address(lo, hi);
        queue.set_ready(true);
    }

    /// `used.idx`.
    #[must_use]
    pub fn used_idx(&self) -> u16 {
        self.read(self.used + 2)
    }

    /// Used-ring entry `i` as `(id, len)`.
    ///
    /// # Panics
    /// When the ring is outside guest memory (tests only).
    #[must_use]
    pub fn used(&self, i: u16) -> (u32, u32) {
        let at = self.used + 4 + 8 * u64::from(i % self.size);
        (self.read(at), self.read(at + 4))
    }

    /// Guest addresses of the descriptor table, available ring and used ring.
    #[must_use]
    pub fn addresses(&self) -> (u64, u64, u64) {
        (self.desc, self.avail, self.used)
    }

    /// Write `descs` as an indirect table at `table` and publish one descriptor pointing at it.
    pub fn add_indirect_chain(&mut self, table: u64, descs: &[(u64, u32, u16)]) -> u16 {
        for (i, &(addr, len, flags)) in descs.iter().enumerate() {
            let at = table + 16 * i as u64;
            let last = i + 1 == descs.len();
            self.write(at, addr);
            self.write(at + 8, len);
            self.write(
                at + 12,
                if last {
                    flags & !F_NEXT
                } else {
                    flags | F_NEXT
                },
            );
            self.write(at + 14, (i + 1) as u16);
        }
        self.add_chain(&[(table, 16 * descs.len() as u32, F_INDIRECT)])
    }

    /// Set `avail.used_event` (EVENT_IDX: interrupt me once `used.idx` passes it).
    ///
    /// # Panics
    /// When the ring is outside guest memory (tests only).
    pub fn set_used_event(&self, value: u16) {
        self.write(self.avail + 4 + 2 * u64::from(self.size), value);
    }

    fn write<T: vm_memory::ByteValued>(&self, addr: u64, value: T) {
        self.mem
            .write_obj(value, GuestAddress(addr))
            .expect("queue memory");
    }

    fn read<T: vm_memory::ByteValued>(&self, addr: u64) -> T {
        self.mem.read_obj(GuestAddress(addr)).expect("queue memory")
    }
}

/// The endpoints of a hand-built UDP frame: MAC, IPv4 address and port on each side.
#[derive(Clone, Copy, Debug)]
pub struct UdpEnds {
    /// Ethernet source (the guest's MAC for a frame the guest sends).
    pub src_mac: [u8; 6],
    /// Ethernet destination.
    pub dst_mac: [u8; 6],
    /// IPv4 source address and UDP source port.
    pub src: std::net::SocketAddrV4,
    /// IPv4 destination address and UDP destination port.
    pub dst: std::net::SocketAddrV4,
}

/// A guest frame as a virtio-net driver queues it: a zeroed virtio-net header (no offloads),
/// then Ethernet, IPv4 (don't fragment, TTL 64, valid header checksum) and UDP (checksum 0,
/// "none") carrying `payload`.
///
/// # Panics
/// When `payload` does not fit in one IPv4 packet.
#[must_use]
pub fn udp_frame(ends: UdpEnds, payload: &[u8]) -> Vec<u8> {
    let udp_len = u16::try_from(8 + payload.len()).expect("payload fits in a UDP datagram");
    let total = udp_len
        .checked_add(20)
        .expect("datagram fits in an IPv4 packet");
    let mut frame = vec![0u8; super::net::VNET_HDR_LEN];
    frame.extend_from_slice(&ends.dst_mac);
    frame.extend_from_slice(&ends.src_mac);
    frame.extend_from_slice(&0x0800u16.to_be_bytes());
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
    ip.extend_from_slice(&ends.src.ip().octets());
    ip.extend_from_slice(&ends.dst.ip().octets());
    let sum = internet_checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    frame.extend_from_slice(&ip);
    frame.extend_from_slice(&ends.src.port().to_be_bytes());
    frame.extend_from_slice(&ends.dst.port().to_be_bytes());
    frame.extend_from_slice(&udp_len.to_be_bytes());
    frame.extend_from_slice(&[0, 0]);
    frame.extend_from_slice(payload);
    frame
}

/// The Internet checksum (RFC 1071) of `data`: IPv4 headers, ICMP messages. An odd last
/// byte counts as the high byte of a zero-padded word.
#[must_use]
pub fn internet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !u16::try_from(sum).unwrap_or(0)
}
