//! ICMP echo over a raw socket, so the tests need no `ping` binary (they run as root, as
//! TAP creation needs).

use std::collections::HashMap;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use squib_devices::virtio::test_utils::internet_checksum;

static NEXT_ID: AtomicU16 = AtomicU16::new(0);

/// The replies to one [`ping`] run.
#[derive(Debug, Clone)]
pub struct PingResult {
    pub received: usize,
    /// From the first request to the last reply.
    pub elapsed: Duration,
    /// Round-trip time of each answered request, by sequence number.
    pub rtts: Vec<Duration>,
}

fn socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the result is checked before it is wrapped.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::IPPROTO_ICMP,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    set_receive_timeout(&fd, Duration::from_millis(50))?;
    Ok(fd)
}

/// Sets SO_RCVTIMEO on `fd`.
pub fn set_receive_timeout(fd: &OwnedFd, timeout: Duration) -> io::Result<()> {
    let timeout = libc::timeval {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(1),
        tv_usec: libc::suseconds_t::from(timeout.subsec_micros()),
    };
    // SAFETY: SO_RCVTIMEO reads a `timeval` of the given size, valid for the call.
    let ret = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            std::ptr::from_ref(&timeout).cast(),
            libc::socklen_t::try_from(size_of::<libc::timeval>()).unwrap_or(16),
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn send(fd: &OwnedFd, dst: Ipv4Addr, id: u16, seq: u16, size: usize) -> io::Result<()> {
    let mut packet = vec![0u8; 8 + size];
    packet[0] = 8;
    packet[4..6].copy_from_slice(&id.to_be_bytes());
    packet[6..8].copy_from_slice(&seq.to_be_bytes());
    for (i, byte) in packet[8..].iter_mut().enumerate() {
        *byte = (i % 251) as u8;
    }
    let sum = internet_checksum(&packet);
    packet[2..4].copy_from_slice(&sum.to_be_bytes());
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(dst).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: `packet` and `addr` are valid for the lengths given during the call.
    let ret = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            packet.as_ptr().cast(),
            packet.len(),
            0,
            std::ptr::from_ref(&addr).cast(),
            libc::socklen_t::try_from(size_of::<libc::sockaddr_in>()).unwrap_or(16),
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The sequence number of an echo reply from `src` for `id` in an IPv4 packet.
fn reply_seq(packet: &[u8], src: Ipv4Addr, id: u16) -> Option<u16> {
    let ihl = usize::from(packet.first()? & 0x0f) * 4;
    let from = Ipv4Addr::new(
        *packet.get(12)?,
        *packet.get(13)?,
        *packet.get(14)?,
        *packet.get(15)?,
    );
    let icmp = packet.get(ihl..ihl + 8)?;
    let is_reply = icmp[0] == 0 && u16::from_be_bytes([icmp[4], icmp[5]]) == id;
    (is_reply && from == src).then(|| u16::from_be_bytes([icmp[6], icmp[7]]))
}

/// Sends `count` echo requests of `size` payload bytes every `interval`, and waits up to
/// `wait` after the last one for the replies.
pub fn ping(
    dst: Ipv4Addr,
    count: u16,
    size: usize,
    interval: Duration,
    wait: Duration,
) -> io::Result<PingResult> {
    let fd = socket()?;
    let id = u16::try_from(std::process::id() & 0xff).unwrap_or(0) << 8
        | NEXT_ID.fetch_add(1, Ordering::Relaxed) & 0xff;
    let start = Instant::now();
    let (mut next_send, mut last_reply) = (start, start);
    let mut sent_at = Vec::with_capacity(usize::from(count));
    let mut replies = HashMap::new();
    let mut buf = vec![0u8; 70_000];
    loop {
        let now = Instant::now();
        let sent = u16::try_from(sent_at.len()).unwrap_or(u16::MAX);
        if sent < count && now >= next_send {
            send(&fd, dst, id, sent, size)?;
            sent_at.push(Instant::now());
            next_send += interval;
            continue;
        }
        if replies.len() == usize::from(count) || (sent == count && now > next_send + wait) {
            break;
        }
        // SAFETY: `buf` is writable for its whole length during the call.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        let Ok(n) = usize::try_from(n) else { continue };
        let arrived = Instant::now();
        if let Some(seq) = reply_seq(&buf[..n], dst, id) {
            if let Some(sent) = sent_at.get(usize::from(seq)) {
                if replies.insert(seq, arrived - *sent).is_none() {
                    last_reply = arrived;
                }
            }
        }
    }
    let mut rtts: Vec<_> = replies.into_iter().collect();
    rtts.sort_unstable();
    Ok(PingResult {
        received: rtts.len(),
        elapsed: last_reply - start,
        rtts: rtts.into_iter().map(|(_, rtt)| rtt).collect(),
    })
}
