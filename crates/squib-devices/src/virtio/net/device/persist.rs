//! [`NetState`]: what a snapshot keeps of a network device, and its restore.
//!
//! The TAP, rate limiters and interface id come back from the VM configuration (the VMM may
//! open another TAP); the snapshot keeps the virtio state, the config space the guest sees
//! (its MAC, which a driver may rewrite, and the MTU) and what the device holds in flight, so
//! that no frame is lost across a snapshot:
//! - rx chains popped from the ring and held for the next frame (their guest buffers; guest
//!   memory is restored as it was, so the buffers are still the guest's to fill);
//! - a frame read from the TAP that waits for rx buffers (`rx_frame`), or one already read
//!   into the held buffers and not yet published (`rx_frame_in_guest`, held back by the rate
//!   limiter).
//!
//! Tx holds nothing: a chain the TAP or the rate limiter refused goes back to the ring
//! before the drain ends, so the restore's queue kick sends it.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use vm_memory::{GuestAddress, GuestMemory, Permissions};

use super::{Net, RxChain};
use crate::virtio::net::{format_mac, MAX_BUFFER_LEN, RX_INDEX, TX_INDEX, VNET_HDR_LEN};
use crate::virtio::persist::{restore_device, RestoreError, VirtioDeviceState};
use crate::virtio::{GuestMemoryMmap, VirtioDevice, VirtioInterrupt};

/// One guest buffer of a held rx chain.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestBuffer {
    /// Guest address.
    pub addr: u64,
    /// Length in bytes.
    pub len: u32,
}

/// An rx chain the device popped and holds for the next frame.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct HeldRxChain {
    /// Its head descriptor (what completes it in the used ring).
    pub head: u16,
    /// Its device-writable buffers, in order.
    pub buffers: Vec<GuestBuffer>,
}

/// A network device's snapshot state.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct NetState {
    /// Queues, features, activation.
    pub virtio: VirtioDeviceState,
    /// The interface id.
    pub iface_id: String,
    /// The MAC in config space (as the driver may have rewritten it), if offered.
    pub guest_mac: Option<[u8; 6]>,
    /// The MTU in config space, if offered.
    pub mtu: Option<u16>,
    /// Rx chains held for the next frame, oldest first.
    pub rx_held: Vec<HeldRxChain>,
    /// A frame (virtio-net header included) waiting for rx buffers; empty when none.
    pub rx_frame: Vec<u8>,
    /// Length of a frame already in the held chains' buffers, not yet published; 0 = none.
    pub rx_frame_in_guest: u32,
}

impl Net {
    /// The state to put in a snapshot.
    #[must_use]
    pub fn save(&self) -> NetState {
        let mut start = 0;
        let rx_held = self
            .rx
            .chains
            .iter()
            .map(|chain| {
                let buffers = self.rx.segs[start..chain.end_seg]
                    .iter()
                    .map(|&(addr, len)| GuestBuffer { addr: addr.0, len })
                    .collect();
                start = chain.end_seg;
                HeldRxChain {
                    head: chain.head,
                    buffers,
                }
            })
            .collect();
        NetState {
            virtio: self.state.save(self.is_activated()),
            iface_id: self.iface_id.clone(),
            guest_mac: self.guest_mac,
            mtu: self.mtu,
            rx_held,
            rx_frame: self.rx.buf[..self.rx.pending].to_vec(),
            // At most MAX_BUFFER_LEN (a TAP read into the held buffers).
            rx_frame_in_guest: u32::try_from(self.rx.in_guest).unwrap_or(u32::MAX),
        }
    }

    /// Apply `state` to this freshly built device; if it was activated, activate it with
    /// `mem` and `interrupt` (which sets the TAP's offloads) and kick both queues.
    ///
    /// # Errors
    /// [`RestoreError::Identity`] for another interface id, MTU or a MAC where the
    /// configuration has none (or the reverse), [`RestoreError::InFlight`] for held chains or
    /// frames that do not fit the device or guest memory, or the common virtio checks.
    pub fn restore(
        &mut self,
        state: &NetState,
        mem: &GuestMemoryMmap,
        interrupt: &Arc<VirtioInterrupt>,
    ) -> Result<(), RestoreError> {
        self.check_identity(state)?;
        let rx_size = state.virtio.queues.get(RX_INDEX).map_or(0, |q| q.size);
        let held =
            check_in_flight(state, rx_size, mem).map_err(|reason| RestoreError::InFlight {
                device: format!("net {}", self.iface_id),
                reason,
            })?;
        restore_device(self, &state.virtio, mem, interrupt, |net| {
            net.guest_mac = state.guest_mac;
            net.install_rx(held, state);
            Ok(())
        })?;
        if state.virtio.activated {
            self.state.kick_queues(&[RX_INDEX, TX_INDEX])?;
        }
        Ok(())
    }

    fn check_identity(&self, state: &NetState) -> Result<(), RestoreError> {
        let mismatch = |what, saved: String, configured: String| RestoreError::Identity {
            device: format!("net {}", self.iface_id),
            what,
            saved,
            configured,
        };
        if state.iface_id != self.iface_id {
            return Err(mismatch(
                "interface id",
                state.iface_id.clone(),
                self.iface_id.clone(),
            ));
        }
        if state.guest_mac.is_some() != self.guest_mac.is_some() {
            let show = |mac: Option<[u8; 6]>| mac.map_or("none".to_owned(), |m| format_mac(&m));
            return Err(mismatch(
                "guest MAC",
                show(state.guest_mac),
                show(self.guest_mac),
            ));
        }
        if state.mtu != self.mtu {
            let show = |mtu: Option<u16>| mtu.map_or("none".to_owned(), |m| m.to_string());
            return Err(mismatch("MTU", show(state.mtu), show(self.mtu)));
        }
        Ok(())
    }

    /// Hold the checked chains and frames of `state` as the saved device did.
    fn install_rx(&mut self, held: Vec<(u16, u64)>, state: &NetState) {
        self.rx.chains.clear();
        self.rx.segs.clear();
        self.rx.capacity = 0;
        for ((head, capacity), chain) in held.into_iter().zip(&state.rx_held) {
            self.rx
                .segs
                .extend(chain.buffers.iter().map(|b| (GuestAddress(b.addr), b.len)));
            self.rx.chains.push(RxChain {
                head,
                end_seg: self.rx.segs.len(),
                capacity,
            });
            self.rx.capacity += capacity;
        }
        let frame = &state.rx_frame;
        self.rx.buf[..frame.len()].copy_from_slice(frame);
        self.rx.pending = frame.len();
        self.rx.in_guest = state.rx_frame_in_guest as usize;
    }
}

/// Check the in-flight rx state against the restored rx queue size and guest memory, as the
/// device checked each chain when it popped it. Returns each held chain's head and capacity.
fn check_in_flight(
    state: &NetState,
    rx_size: u16,
    mem: &GuestMemoryMmap,
) -> Result<Vec<(u16, u64)>, String> {
    let frame_len = state.rx_frame.len();
    let in_guest = state.rx_frame_in_guest as usize;
    let in_flight = !state.rx_held.is_empty() || frame_len > 0 || in_guest > 0;
    if in_flight && !state.virtio.activated {
        return Err("rx state in flight on a device that is not activated".to_owned());
    }
    if state.rx_held.len() > usize::from(rx_size) {
        return Err(format!(
            "{} rx chains held, more than the rx queue's {rx_size}",
            state.rx_held.len()
        ));
    }
    let frame_ok = |len: usize| len == 0 || (VNET_HDR_LEN..=MAX_BUFFER_LEN).contains(&len);
    if !frame_ok(frame_len) || !frame_ok(in_guest) || (frame_len > 0 && in_guest > 0) {
        return Err(format!(
            "rx frame lengths {frame_len} (waiting) and {in_guest} (in guest buffers) are not \
             one frame of {VNET_HDR_LEN} to {MAX_BUFFER_LEN} bytes"
        ));
    }
    let mut held = Vec::with_capacity(state.rx_held.len());
    let mut total = 0u64;
    for chain in &state.rx_held {
        let head = chain.head;
        if head >= rx_size {
            return Err(format!(
                "held rx head {head} is outside the queue of {rx_size}"
            ));
        }
        let mut capacity = 0u64;
        for b in &chain.buffers {
            let fits = b.len > 0
                && mem.check_range(GuestAddress(b.addr), b.len as usize, Permissions::Write);
            if !fits {
                return Err(format!(
                    "held rx head {head}: buffer {:#x} ({} bytes) is not writable guest memory",
                    b.addr, b.len
                ));
            }
            capacity = capacity.saturating_add(u64::from(b.len));
        }
        if capacity == 0 || capacity > u64::from(u32::MAX) {
            return Err(format!("held rx head {head} holds {capacity} bytes"));
        }
        total = total.saturating_add(capacity);
        held.push((head, capacity));
    }
    if in_guest as u64 > total {
        return Err(format!(
            "an rx frame of {in_guest} bytes is in held buffers of {total}"
        ));
    }
    Ok(held)
}

#[cfg(test)]
#[path = "persist_tests.rs"]
mod tests;
