//! Device setup (the TAP in this namespace, a [`Net`] on it, activated on hand-built
//! virtqueues) and the frames and payloads both directions send and check.

use std::net::SocketAddrV4;
use std::process::Command;
use std::sync::Arc;

use squib_devices::virtio::net::{features as net_features, Net, NetConfig, RX_INDEX, TX_INDEX};
use squib_devices::virtio::test_utils::{self, UdpEnds, VirtQueue};
use squib_devices::virtio::{features, GuestMemoryMmap, VirtioDevice, VirtioInterrupt};
use virtio_queue::QueueT;
use vm_memory::GuestAddress;

use crate::{
    GUEST_IP, GUEST_MAC, GUEST_MAC_TEXT, GUEST_SRC_PORT, HOST_IP, HOST_PORT, RING, RXQ, TAP, TXQ,
};

// ---------------------------------------------------------------------------------------
// Setup

pub(super) struct Device {
    pub(super) net: Net,
    pub(super) tap_mac: [u8; 6],
}

fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {args:?}: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!("ip {}: {}", args.join(" "), err.trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let word = text
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)?;
    let mut mac = [0u8; 6];
    let mut parts = word.split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    Some(mac)
}

/// Open the TAP (created in this namespace), address it and point the guest's IP at its MAC.
pub(super) fn open_device(mtu: u16) -> Result<Device, String> {
    let net = Net::new(NetConfig {
        iface_id: "bench".to_owned(),
        tap_name: TAP.to_owned(),
        guest_mac: Some(GUEST_MAC),
        mtu: Some(mtu),
        rx_rate_limiter: None,
        tx_rate_limiter: None,
    })
    .map_err(|e| e.to_string())?;
    // No IPv6 chatter (router solicitations, MLD) on the TAP; the driver skips it anyway.
    let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{TAP}/disable_ipv6"), "1");
    let mtu = mtu.to_string();
    ip(&["link", "set", TAP, "mtu", &mtu, "txqueuelen", "2048", "up"])?;
    ip(&["addr", "add", "10.99.0.1/24", "dev", TAP])?;
    ip(&[
        "neigh",
        "replace",
        "10.99.0.2",
        "lladdr",
        GUEST_MAC_TEXT,
        "dev",
        TAP,
        "nud",
        "permanent",
    ])?;
    let link = ip(&["-o", "link", "show", TAP])?;
    let tap_mac = parse_mac(&link).ok_or_else(|| format!("no MAC in {link:?}"))?;
    Ok(Device { net, tap_mac })
}

/// Lay out both queues, ack what a Linux guest acks and activate the device.
pub(super) fn activate<'a>(
    net: &mut Net,
    mem: &'a GuestMemoryMmap,
) -> Result<(VirtQueue<'a>, VirtQueue<'a>), String> {
    let rxq = VirtQueue::new(mem, GuestAddress(RXQ), RING);
    let txq = VirtQueue::new(mem, GuestAddress(TXQ), RING);
    rxq.configure(&mut net.queues_mut()[RX_INDEX]);
    txq.configure(&mut net.queues_mut()[TX_INDEX]);
    let offered = net.avail_features();
    for bit in [
        net_features::MRG_RXBUF,
        features::RING_EVENT_IDX,
        features::VERSION_1,
    ] {
        if offered & (1 << bit) == 0 {
            return Err(format!("device does not offer feature bit {bit}"));
        }
    }
    net.set_acked_features(offered);
    for q in net.queues_mut() {
        q.set_event_idx(true);
    }
    let irq = Arc::new(VirtioInterrupt::new().map_err(|e| e.to_string())?);
    net.activate(mem.clone(), irq)
        .map_err(|e| format!("activate: {e:?}"))?;
    Ok((rxq, txq))
}

// ---------------------------------------------------------------------------------------
// Frames and payloads

pub(super) fn pattern(key: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|j| ((j as u64 * 7 + key * 37) % 251) as u8)
        .collect()
}

/// The payload carries `seq` and then the pattern of its key.
pub(super) fn payload_ok(payload: &[u8], seq: u64, pattern: &[u8]) -> bool {
    payload.len() == pattern.len()
        && payload[..8] == seq.to_be_bytes()
        && payload[8..] == pattern[8..]
}

/// A guest frame to the host's UDP socket carrying `payload`.
pub(super) fn udp_frame(dst_mac: [u8; 6], payload: &[u8]) -> Vec<u8> {
    let ends = UdpEnds {
        src_mac: GUEST_MAC,
        dst_mac,
        src: SocketAddrV4::new(GUEST_IP, GUEST_SRC_PORT),
        dst: SocketAddrV4::new(HOST_IP, HOST_PORT),
    };
    test_utils::udp_frame(ends, payload)
}
