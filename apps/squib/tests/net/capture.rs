//! A packet capture on a host interface (`AF_PACKET`), counting the frames that involve
//! one IPv4 address: to prove that what the guest sends to MMDS never reaches the TAP.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// What a [`Capture`] saw.
#[derive(Debug, Default, Clone)]
pub struct CaptureSummary {
    /// Every frame seen on the interface, both directions.
    pub frames: u64,
    /// IPv4 frames from or to the watched address, and ARP frames asking for or naming it.
    pub watched: u64,
    /// The first few watched frames, as hex, for the failure message.
    pub examples: Vec<String>,
}

/// A capture running on its own thread until [`Capture::stop`].
pub struct Capture {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<CaptureSummary>,
}

const ETH_P_ALL: u16 = 0x0003;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_ARP: u16 = 0x0806;

/// Whether an Ethernet frame is IPv4 from/to `addr` or ARP about `addr`.
fn involves(frame: &[u8], addr: Ipv4Addr) -> bool {
    let at = |offset: usize| {
        frame
            .get(offset..offset + 4)
            .map(|b| Ipv4Addr::new(b[0], b[1], b[2], b[3]))
    };
    let Some(ethertype) = frame.get(12..14) else {
        return false;
    };
    match u16::from_be_bytes([ethertype[0], ethertype[1]]) {
        ETHERTYPE_IPV4 => at(26) == Some(addr) || at(30) == Some(addr),
        ETHERTYPE_ARP => at(28) == Some(addr) || at(38) == Some(addr),
        _ => false,
    }
}

fn packet_socket(ifname: &str) -> io::Result<OwnedFd> {
    let name = std::ffi::CString::new(ifname).map_err(io::Error::other)?;
    // SAFETY: `name` is a valid NUL-terminated string for the call.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        return Err(io::Error::last_os_error());
    }
    let protocol = ETH_P_ALL.to_be();
    // SAFETY: plain socket(2) call; the result is checked before it is wrapped.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            i32::from(protocol),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: all-zero is a valid `sockaddr_ll`; the fields that matter are set below.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = protocol;
    addr.sll_ifindex = i32::try_from(ifindex).map_err(io::Error::other)?;
    // SAFETY: `addr` is a valid `sockaddr_ll` of the given size for the call.
    let ret = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            std::ptr::from_ref(&addr).cast(),
            libc::socklen_t::try_from(size_of::<libc::sockaddr_ll>()).unwrap_or(20),
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    super::icmp::set_receive_timeout(&fd, Duration::from_millis(100))?;
    Ok(fd)
}

impl Capture {
    /// Starts capturing every frame on `ifname` (in this thread's network namespace).
    pub fn start(ifname: &str, watched: Ipv4Addr) -> io::Result<Capture> {
        let fd = packet_socket(ifname)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut summary = CaptureSummary::default();
            let mut buf = vec![0u8; 70_000];
            while !stopped.load(Ordering::Relaxed) {
                // SAFETY: `buf` is writable for its whole length during the call.
                let n =
                    unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
                let Ok(n) = usize::try_from(n) else { continue };
                summary.frames += 1;
                if involves(&buf[..n], watched) {
                    summary.watched += 1;
                    if summary.examples.len() < 3 {
                        let hex: String = buf[..n.min(64)]
                            .iter()
                            .map(|b| format!("{b:02x}"))
                            .collect();
                        summary.examples.push(hex);
                    }
                }
            }
            summary
        });
        Ok(Capture { stop, thread })
    }

    /// Stops the capture and returns what it saw.
    pub fn stop(self) -> CaptureSummary {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

#[test]
fn involves_matches_ipv4_and_arp_about_the_address() {
    let mmds = Ipv4Addr::new(169, 254, 169, 254);
    let mut ipv4 = vec![0u8; 34];
    ipv4[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    ipv4[30..34].copy_from_slice(&mmds.octets());
    assert!(involves(&ipv4, mmds));
    let mut arp = vec![0u8; 42];
    arp[12..14].copy_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    assert!(!involves(&arp, mmds));
    arp[38..42].copy_from_slice(&mmds.octets());
    assert!(involves(&arp, mmds));
    assert!(!involves(&arp[..20], mmds));
}
