//! Packets from the guest (the tx queue): connection requests and answers, data, shutdowns
//! and credit. The device has already checked the chain, the CIDs and that `data` covers
//! exactly `hdr.len` bytes.

use std::io::{self, ErrorKind};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::Path;

use vm_memory::GuestAddress;

use super::{ConnKey, Muxer};
use crate::virtio::iovec::writev_guest;
use crate::virtio::vsock::connection::{pending, ConnPhase};
use crate::virtio::vsock::packet::{
    copy_from_guest, op, sub_segments, VsockHeader, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM,
};
use crate::virtio::vsock::{ConnState, CONN_BUF_ALLOC, MAX_CONNECTIONS};
use crate::virtio::GuestMemoryMmap;

impl Muxer {
    /// Handle one packet the guest sent; `data` holds its `hdr.len` data bytes.
    pub fn send_pkt(
        &mut self,
        mem: &GuestMemoryMmap,
        hdr: &VsockHeader,
        data: &[(GuestAddress, u32)],
    ) {
        let key = ConnKey {
            local_port: hdr.dst_port,
            peer_port: hdr.src_port,
        };
        if hdr.type_ != TYPE_STREAM {
            if hdr.op != op::RST {
                self.stray_rst(key);
            }
            return;
        }
        let Some(conn) = self.conns.get_mut(&key) else {
            match hdr.op {
                op::REQUEST => self.guest_connect(key, hdr),
                op::RST => {}
                _ => self.stray_rst(key),
            }
            return;
        };
        if hdr.op == op::RST {
            self.remove(key);
            return;
        }
        if conn.state.phase == ConnPhase::Killing {
            return;
        }
        conn.state.peer_buf_alloc = hdr.buf_alloc;
        conn.state.peer_fwd_cnt = hdr.fwd_cnt;
        Self::mark_dirty(&mut self.dirty, conn);
        match (hdr.op, conn.state.phase) {
            (op::RESPONSE, ConnPhase::LocalInit) => self.establish(key),
            (op::RW, ConnPhase::Established | ConnPhase::LocalClosed) => {
                self.guest_data(key, mem, data, hdr.len);
            }
            (op::SHUTDOWN, ConnPhase::Established | ConnPhase::LocalClosed) => {
                self.guest_shutdown(key, hdr.flags);
            }
            (op::CREDIT_UPDATE, _) => {}
            (op::CREDIT_REQUEST, _) => self.owe(key, pending::CREDIT_UPDATE),
            (other, phase) => {
                squib_logger::warn_rate_limited!(
                    "vsock: op {other} unexpected on {key:?} in {phase:?}, resetting"
                );
                self.kill(key);
            }
        }
    }

    /// The guest asks for host port `key.local_port`: connect to `<uds_path>_<port>`.
    fn guest_connect(&mut self, key: ConnKey, hdr: &VsockHeader) {
        if self.conns.len() >= MAX_CONNECTIONS {
            squib_logger::warn_rate_limited!(
                "vsock: {MAX_CONNECTIONS} connections open, refusing guest port {}",
                key.peer_port
            );
            self.stray_rst(key);
            return;
        }
        let mut path = self.uds_path.as_os_str().to_owned();
        path.push(format!("_{}", key.local_port));
        match connect_nonblocking(Path::new(&path)) {
            Ok(stream) => {
                let mut state =
                    ConnState::new(key.local_port, key.peer_port, false, ConnPhase::Established);
                state.peer_buf_alloc = hdr.buf_alloc;
                state.peer_fwd_cnt = hdr.fwd_cnt;
                state.pending = pending::RESPONSE;
                if !self.insert(state, stream, false) {
                    self.stray_rst(key);
                }
            }
            Err(e) => {
                log::debug!(
                    "vsock: guest connect to {}: {e}",
                    Path::new(&path).display()
                );
                self.stray_rst(key);
            }
        }
    }

    /// The guest accepted a host-initiated connection: tell the host client.
    fn establish(&mut self, key: ConnKey) {
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        conn.state.phase = ConnPhase::Established;
        conn.expiry = None;
        let mut reply = [0u8; 16];
        let len = crate::virtio::vsock::connect::ok_reply(conn.state.local_port, &mut reply);
        let written = match io::Write::write(&mut conn.stream, &reply[..len]) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => 0,
            Err(e) => {
                self.metrics.tx_write_fails.inc();
                log::debug!("vsock: cannot send OK to the host for {key:?}: {e}");
                self.kill(key);
                return;
            }
        };
        let rest = &reply[written..len];
        if !rest.is_empty() {
            conn.tx_buf.append_with(rest.len(), |dst, off| {
                dst.copy_from_slice(&rest[off..off + dst.len()]);
                true
            });
            conn.tx_buf_reply = rest.len();
        }
        Self::mark_dirty(&mut self.dirty, conn);
    }

    /// Guest data for the host: written straight from guest memory; what the host cannot
    /// take yet is buffered, within the credit the guest was given.
    fn guest_data(
        &mut self,
        key: ConnKey,
        mem: &GuestMemoryMmap,
        data: &[(GuestAddress, u32)],
        len: u32,
    ) {
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        if conn.state.peer_shutdown & SHUTDOWN_SEND != 0 {
            squib_logger::warn_rate_limited!("vsock: data on {key:?} after the guest shut it");
            self.kill(key);
            return;
        }
        conn.state.rx_cnt = conn.state.rx_cnt.wrapping_add(len);
        if conn.state.unforwarded() > CONN_BUF_ALLOC {
            squib_logger::warn_rate_limited!(
                "vsock: guest overran its credit on {key:?} ({} bytes unread), resetting",
                conn.state.unforwarded()
            );
            self.kill(key);
            return;
        }
        if len == 0 {
            return;
        }
        let mut written = 0;
        if conn.tx_buf.is_empty() {
            match writev_guest(conn.stream.as_raw_fd(), mem, data) {
                Ok(n) => written = n as u32,
                Err(e)
                    if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    self.metrics.tx_write_fails.inc();
                    log::debug!("vsock: write to the host for {key:?}: {e}");
                    self.kill(key);
                    return;
                }
            }
            conn.state.fwd_cnt = conn.state.fwd_cnt.wrapping_add(written);
        }
        if written < len {
            let rest = u64::from(len - written);
            sub_segments(data, u64::from(written), rest, &mut self.scratch);
            let scratch = &self.scratch;
            let buffered = conn.tx_buf.append_with(rest as usize, |dst, off| {
                copy_from_guest(mem, scratch, off as u64, dst)
            });
            if !buffered {
                squib_logger::warn_rate_limited!("vsock: cannot buffer guest data on {key:?}");
                self.kill(key);
                return;
            }
            Self::mark_dirty(&mut self.dirty, conn);
        }
        if conn.state.needs_credit_update() {
            self.owe(key, pending::CREDIT_UPDATE);
        }
    }

    /// The guest shut one or both directions.
    fn guest_shutdown(&mut self, key: ConnKey, flags: u32) {
        if let Some(conn) = self.conns.get_mut(&key) {
            conn.state.peer_shutdown |= flags & (SHUTDOWN_RCV | SHUTDOWN_SEND);
            if conn.tx_buf.is_empty() {
                self.after_drain(key);
            }
        }
    }

    /// Everything the guest sent reached the host: act on its shutdown, if any. Both
    /// directions shut → `RST` and the connection goes; send only → EOF to the host.
    pub(super) fn after_drain(&mut self, key: ConnKey) {
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        let shut = conn.state.peer_shutdown;
        if shut == SHUTDOWN_RCV | SHUTDOWN_SEND {
            self.kill(key);
        } else if shut & SHUTDOWN_SEND != 0 && !conn.host_write_shut {
            conn.host_write_shut = true;
            if let Err(e) = conn.stream.shutdown(std::net::Shutdown::Write) {
                log::debug!("vsock: shutdown of the host stream for {key:?}: {e}");
            }
        }
    }
}

/// Connect to the Unix stream socket at `path` without blocking: a listener whose backlog is
/// full fails at once (`EAGAIN`) instead of stalling the event loop.
///
/// # Errors
/// The path is too long or holds a NUL, or the OS error of `socket`/`connect`.
pub fn connect_nonblocking(path: &Path) -> io::Result<UnixStream> {
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: `sockaddr_un` is plain old data; all zeroes is a valid (empty) address.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(ErrorKind::InvalidInput.into());
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (dst, &src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = src as libc::c_char;
    }
    // SAFETY: plain syscall without pointers; the result is checked.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created by `socket` and nothing else owns it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    // SAFETY: `addr` is a valid `sockaddr_un` of at least `len` bytes (the path fits with
    // its NUL, checked above), alive for the call; the kernel only reads it.
    let ret = unsafe {
        libc::connect(
            owned.as_raw_fd(),
            std::ptr::addr_of!(addr).cast(),
            len as libc::socklen_t,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(UnixStream::from(owned))
}
