//! The multiplexer: every connection, the host listener, the deadlines, and what epoll
//! watches (Firecracker's `VsockMuxer`).
//!
//! - `guest`: packets from the guest (tx queue): requests, answers, data, shutdowns.
//! - `host`: the listener, `CONNECT` handshakes, stream events, and the packets owed to the
//!   guest (rx queue), served round-robin across connections.
//! - `deadlines`: the 2000 ms deadlines behind one timerfd.
//!
//! Connections are keyed by `(local_port, peer_port)`. Those owing the guest a packet sit once
//! each in `rxq`; packets for no connection (an `RST` answering a stray packet) wait in a
//! bounded `stray_rst` queue. Registration changes are recorded while handling an event and applied to epoll
//! by [`Muxer::sync_epoll`] at its end; a closed stream is only closed after its fd left
//! epoll, so an fd number is never reused while epoll still knows it.
//!
//! Everything is bounded: at most [`MAX_CONNECTIONS`] connections plus handshakes, one
//! [`TX_BUF_CAPACITY`](super::connection::TX_BUF_CAPACITY) buffer each, `rxq` at most one entry per
//! connection, `stray_rst` at most [`MAX_STRAY_RST`], `killq` rebuilt past [`MAX_KILLQ`].

mod deadlines;
mod guest;
mod host;

use std::collections::{HashMap, HashSet, VecDeque};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use event_manager::{EventOps, EventSet, Events};
use vmm_sys_util::timerfd::TimerFd;

use deadlines::{Deadline, Target};

use super::connection::{pending, ConnPhase, Connection};
use super::event_handler::{PROCESS_CONN, PROCESS_LISTENER};
use super::packet::Segments;
use super::{VsockError, VsockMetrics, CONN_TIMEOUT_MS, FIRST_LOCAL_PORT, MAX_CONNECTIONS};

/// Most queued `RST`s answering packets that belong to no connection; more are dropped.
pub const MAX_STRAY_RST: usize = 256;
/// Deadline-queue length past which it is rebuilt from the live connections.
pub const MAX_KILLQ: usize = 4 * MAX_CONNECTIONS;

/// A connection's identity: host-side port, guest-side port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnKey {
    /// Host-side port.
    pub local_port: u32,
    /// Guest-side port.
    pub peer_port: u32,
}

/// A host client that connected to `uds_path` and has not sent its `CONNECT` line yet.
#[derive(Debug)]
struct Handshake {
    stream: UnixStream,
    id: u64,
    registered: bool,
}

/// All connections of one vsock device and their host side.
#[derive(Debug)]
pub struct Muxer {
    guest_cid: u64,
    uds_path: PathBuf,
    listener: UnixListener,
    timer: TimerFd,
    timer_armed: bool,
    timeout: Duration,
    conns: HashMap<ConnKey, Connection>,
    by_fd: HashMap<RawFd, ConnKey>,
    handshakes: HashMap<RawFd, Handshake>,
    rxq: VecDeque<ConnKey>,
    stray_rst: VecDeque<ConnKey>,
    killq: VecDeque<Deadline>,
    local_ports: HashSet<u32>,
    next_local_port: u32,
    next_id: u64,
    dirty: Vec<RawFd>,
    retired: Vec<(UnixStream, bool)>,
    guest_ready: bool,
    /// While `accept` fails (out of file descriptors), the listener is not watched until
    /// this instant: a level-triggered listener would otherwise spin the event loop.
    listener_paused_until: Option<Instant>,
    /// Whether the listener's epoll registration must be brought in line with the pause.
    listener_dirty: bool,
    metrics: Arc<VsockMetrics>,
    /// Reused piece list (no allocation per packet).
    scratch: Segments,
}

impl Muxer {
    /// Bind `uds_path` (non-blocking) and create the deadline timer.
    ///
    /// # Errors
    /// [`VsockError`] when the socket cannot be bound or the timer created.
    pub fn new(
        guest_cid: u64,
        uds_path: PathBuf,
        metrics: Arc<VsockMetrics>,
    ) -> Result<Self, VsockError> {
        let timer = TimerFd::new()
            .map_err(|e| VsockError::EventFd(std::io::Error::from_raw_os_error(e.errno())))?;
        let listener = UnixListener::bind(&uds_path).map_err(VsockError::Bind)?;
        // From here on the socket file is ours: `Drop` unlinks it, also on the error below.
        let muxer = Self {
            guest_cid,
            uds_path,
            timer,
            listener,
            timer_armed: false,
            timeout: Duration::from_millis(CONN_TIMEOUT_MS),
            listener_paused_until: None,
            listener_dirty: false,
            conns: HashMap::new(),
            by_fd: HashMap::new(),
            handshakes: HashMap::new(),
            rxq: VecDeque::new(),
            stray_rst: VecDeque::new(),
            killq: VecDeque::new(),
            local_ports: HashSet::new(),
            next_local_port: FIRST_LOCAL_PORT,
            next_id: 0,
            dirty: Vec::new(),
            retired: Vec::new(),
            guest_ready: false,
            metrics,
            scratch: Vec::with_capacity(super::QUEUE_SIZE.into()),
        };
        muxer
            .listener
            .set_nonblocking(true)
            .map_err(VsockError::NonBlocking)?;
        Ok(muxer)
    }

    /// The guest's CID.
    #[must_use]
    pub fn guest_cid(&self) -> u64 {
        self.guest_cid
    }

    /// The host socket path.
    #[must_use]
    pub fn uds_path(&self) -> &Path {
        &self.uds_path
    }

    /// The listener's fd (watched for incoming host connections).
    #[must_use]
    pub fn listener_fd(&self) -> RawFd {
        self.listener.as_raw_fd()
    }

    /// The deadline timer's fd.
    #[must_use]
    pub fn timer_fd(&self) -> RawFd {
        self.timer.as_raw_fd()
    }

    /// Number of connections (handshakes excluded).
    #[must_use]
    pub fn conn_count(&self) -> usize {
        self.conns.len()
    }

    /// The protocol state of the connection `key`, if any.
    #[must_use]
    pub fn conn_state(&self, key: ConnKey) -> Option<super::ConnState> {
        self.conns.get(&key).map(|c| c.state)
    }

    /// Every connection's protocol state.
    pub fn conn_states(&self) -> impl Iterator<Item = &super::ConnState> {
        self.conns.values().map(|c| &c.state)
    }

    /// Change the kill deadline (tests use a short one).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Whether the guest can be sent packets (the device is active). When it cannot,
    /// connections that would owe it an `RST` are removed at once.
    pub fn set_guest_ready(&mut self, ready: bool) {
        self.guest_ready = ready;
    }

    /// The local port the next host-initiated connection tries first (a snapshot keeps it,
    /// so a restored guest does not see recent ports reused at once).
    #[must_use]
    pub fn next_local_port(&self) -> u32 {
        self.next_local_port
    }

    /// Continue port allocation at `port` (restore); `false`, and nothing changes, when it
    /// is outside the host-initiated range [2³⁰, 2³¹).
    pub fn set_next_local_port(&mut self, port: u32) -> bool {
        if !(FIRST_LOCAL_PORT..1 << 31).contains(&port) {
            return false;
        }
        self.next_local_port = port;
        true
    }

    /// Whether a packet is owed to the guest.
    #[must_use]
    pub fn has_rx(&self) -> bool {
        !self.stray_rst.is_empty() || !self.rxq.is_empty()
    }

    /// Drop every connection without telling anyone (transport reset, device reset). Their
    /// host streams close at the next [`Muxer::sync_epoll`]; handshakes carry on.
    pub fn drop_connections(&mut self) {
        let count = self.conns.len() as u64;
        for (_, conn) in self.conns.drain() {
            self.retired
                .push((conn.stream, !conn.registered.is_empty()));
        }
        self.metrics.conns_removed.add(count);
        self.by_fd.clear();
        self.local_ports.clear();
        self.rxq.clear();
        self.stray_rst.clear();
        self.killq
            .retain(|d| matches!(d.target, Target::Handshake(_)));
        self.wake_soon();
    }

    /// Apply the recorded registration changes to epoll and close retired streams.
    pub fn sync_epoll(&mut self, ops: &mut EventOps) {
        // Taken and put back so the list keeps its capacity (no allocation per event).
        let mut dirty = std::mem::take(&mut self.dirty);
        for fd in dirty.drain(..) {
            if let Some(conn) = self.by_fd.get(&fd).and_then(|k| self.conns.get_mut(k)) {
                conn.dirty = false;
                let want = conn.wanted_events();
                if want == conn.registered {
                    continue;
                }
                let events = Events::with_data_raw(fd, PROCESS_CONN, want);
                let result = if conn.registered.is_empty() {
                    ops.add(events)
                } else {
                    ops.modify(events)
                };
                match result {
                    Ok(()) => conn.registered = want,
                    Err(e) => {
                        self.metrics.muxer_event_fails.inc();
                        log::error!("vsock: cannot update epoll for stream fd {fd}: {e}");
                    }
                }
            } else if let Some(hs) = self.handshakes.get_mut(&fd) {
                if !hs.registered {
                    match ops.add(Events::with_data_raw(fd, PROCESS_CONN, EventSet::IN)) {
                        Ok(()) => hs.registered = true,
                        Err(e) => {
                            self.metrics.muxer_event_fails.inc();
                            log::error!("vsock: cannot watch handshake fd {fd}: {e}");
                        }
                    }
                }
            }
        }
        self.dirty = dirty;
        if std::mem::take(&mut self.listener_dirty) {
            let want = if self.listener_paused_until.is_some() {
                EventSet::empty()
            } else {
                EventSet::IN
            };
            let events = Events::with_data_raw(self.listener.as_raw_fd(), PROCESS_LISTENER, want);
            if let Err(e) = ops.modify(events) {
                self.metrics.muxer_event_fails.inc();
                log::error!("vsock: cannot update epoll for the listener: {e}");
            }
        }
        for (stream, registered) in self.retired.drain(..) {
            if registered {
                if let Err(e) = ops.remove(Events::empty_raw(stream.as_raw_fd())) {
                    self.metrics.muxer_event_fails.inc();
                    log::error!("vsock: cannot unwatch a closed stream: {e}");
                }
            }
        }
    }

    /// Queue `conn`'s registration for the next epoll sync.
    fn mark_dirty(dirty: &mut Vec<RawFd>, conn: &mut Connection) {
        if !conn.dirty {
            conn.dirty = true;
            dirty.push(conn.stream.as_raw_fd());
        }
    }

    /// Put `key` in the rx queue if it owes the guest something and is not there yet.
    fn schedule_rx(rxq: &mut VecDeque<ConnKey>, key: ConnKey, conn: &mut Connection) {
        if conn.state.pending != 0 && !conn.in_rxq {
            conn.in_rxq = true;
            rxq.push_back(key);
        }
    }

    /// Owe the guest `bits`, and make sure the connection is served.
    fn owe(&mut self, key: ConnKey, bits: u8) {
        if let Some(conn) = self.conns.get_mut(&key) {
            conn.state.pending |= bits;
            Self::schedule_rx(&mut self.rxq, key, conn);
        }
    }

    /// Queue an `RST` for a packet that belongs to no connection.
    fn stray_rst(&mut self, key: ConnKey) {
        if self.guest_ready && self.stray_rst.len() < MAX_STRAY_RST {
            self.stray_rst.push_back(key);
        }
    }

    /// Abort `key`: an `RST` is owed to the guest and then the connection goes (at once when
    /// the guest cannot be told).
    fn kill(&mut self, key: ConnKey) {
        if !self.guest_ready {
            self.remove(key);
            return;
        }
        if let Some(conn) = self.conns.get_mut(&key) {
            conn.state.phase = ConnPhase::Killing;
            conn.state.pending = pending::RST;
            conn.expiry = None;
            Self::schedule_rx(&mut self.rxq, key, conn);
            Self::mark_dirty(&mut self.dirty, conn);
        }
    }

    /// Forget `key` and close its stream.
    fn remove(&mut self, key: ConnKey) {
        let Some(conn) = self.conns.remove(&key) else {
            return;
        };
        self.by_fd.remove(&conn.stream.as_raw_fd());
        if conn.state.host_initiated {
            self.local_ports.remove(&conn.state.local_port);
        }
        if conn.in_rxq {
            self.rxq.retain(|k| *k != key);
        }
        self.retired
            .push((conn.stream, !conn.registered.is_empty()));
        self.metrics.conns_removed.inc();
    }

    /// Add a connection on `stream` (`registered`: epoll already watches it for input).
    /// Its ports must be free: if they are not, the stream is closed and `false` returned.
    fn insert(&mut self, state: super::ConnState, stream: UnixStream, registered: bool) -> bool {
        let key = ConnKey {
            local_port: state.local_port,
            peer_port: state.peer_port,
        };
        if self.conns.contains_key(&key) {
            self.retired.push((stream, registered));
            return false;
        }
        let fd = stream.as_raw_fd();
        let expiry = (state.phase == ConnPhase::LocalInit).then(|| Instant::now() + self.timeout);
        let mut conn = Connection {
            state,
            stream,
            tx_buf: super::connection::TxBuf::default(),
            tx_buf_reply: 0,
            expiry,
            id: self.fresh_id(),
            host_write_shut: false,
            in_rxq: false,
            registered: if registered {
                EventSet::IN
            } else {
                EventSet::empty()
            },
            dirty: false,
        };
        if state.host_initiated {
            self.local_ports.insert(state.local_port);
        }
        Self::schedule_rx(&mut self.rxq, key, &mut conn);
        Self::mark_dirty(&mut self.dirty, &mut conn);
        if let Some(at) = expiry {
            self.push_deadline(at, Target::Conn(key), conn.id);
        }
        self.by_fd.insert(fd, key);
        self.conns.insert(key, conn);
        self.metrics.conns_added.inc();
        true
    }

    fn fresh_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }
}

impl Drop for Muxer {
    fn drop(&mut self) {
        // A re-PUT replaces the device; its socket file must not linger.
        if let Err(e) = std::fs::remove_file(&self.uds_path) {
            log::debug!("vsock: cannot remove {}: {e}", self.uds_path.display());
        }
    }
}

#[cfg(test)]
mod tests;
