//! The bridge between a virtio-net device and MMDS: [`SharedMmdsStore`], the one data store
//! that the API writes and every interface's endpoint reads, and [`MmdsInterceptor`], the
//! [`FrameInterceptor`] a net device consults for each frame the guest sends.
//!
//! The device's frames carry the 12-byte virtio-net header; the MMDS stack speaks plain
//! Ethernet. The interceptor strips the header from frames going in and prepends a zeroed one
//! (no offloads; the device fills `num_buffers`) to frames coming out.
//!
//! Lock order: a net device's mutex, then the store's. API handlers take only the store's.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use serde_json::Value;
use squib_devices::virtio::net::{FrameInterceptor, VNET_HDR_LEN};
use squib_logger::metrics::METRICS;
use squib_mmds::{MmdsStack, MmdsStore, MmdsStoreError};

/// Firecracker's default MMDS size limit: the default API payload limit (51200 bytes).
pub const DEFAULT_MMDS_SIZE_LIMIT: usize = 51_200;

/// The MMDS document, shared by the API handlers and the net devices' endpoints.
#[derive(Debug, Clone)]
pub struct SharedMmdsStore(Arc<Mutex<MmdsStore>>);

impl Default for SharedMmdsStore {
    fn default() -> Self {
        Self::new(DEFAULT_MMDS_SIZE_LIMIT)
    }
}

impl SharedMmdsStore {
    /// An empty store holding at most `size_limit` bytes.
    #[must_use]
    pub fn new(size_limit: usize) -> Self {
        Self(Arc::new(Mutex::new(MmdsStore::new(size_limit))))
    }

    fn lock(&self) -> MutexGuard<'_, MmdsStore> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The document (`{}` before the first `PUT`).
    #[must_use]
    pub fn get(&self) -> Value {
        self.lock().get()
    }

    /// Replace the document.
    ///
    /// # Errors
    /// As [`MmdsStore::put`].
    pub fn put(&self, value: Value) -> Result<(), MmdsStoreError> {
        self.lock().put(value)
    }

    /// Apply a JSON merge patch.
    ///
    /// # Errors
    /// As [`MmdsStore::patch`].
    pub fn patch(&self, patch: &Value) -> Result<(), MmdsStoreError> {
        self.lock().patch(patch)
    }
}

/// One interface's MMDS endpoint, as a net device's frame hook.
#[derive(Debug)]
pub struct MmdsInterceptor {
    stack: MmdsStack,
    store: SharedMmdsStore,
}

impl MmdsInterceptor {
    /// Answer guest frames for MMDS with `stack`, reading documents from `store`.
    #[must_use]
    pub fn new(stack: MmdsStack, store: SharedMmdsStore) -> Self {
        Self { stack, store }
    }
}

impl FrameInterceptor for MmdsInterceptor {
    fn intercept(&mut self, frame: &[u8]) -> bool {
        let Some(eth) = frame.get(VNET_HDR_LEN..) else {
            return false;
        };
        let store = self.store.lock();
        let taken = self.stack.handle_frame(eth, &store, Instant::now());
        if taken {
            METRICS.mmds.rx_accepted.inc();
            METRICS.mmds.rx_count.inc();
        }
        taken
    }

    fn next_rx_frame(&mut self, buf: &mut [u8]) -> Option<usize> {
        let (header, eth) = buf.split_at_mut_checked(VNET_HDR_LEN)?;
        let len = self.stack.next_frame(eth)?;
        header.fill(0);
        METRICS.mmds.tx_frames.inc();
        METRICS.mmds.tx_count.inc();
        METRICS.mmds.tx_bytes.add(len as u64);
        Some(VNET_HDR_LEN + len)
    }

    fn has_rx_frame(&self) -> bool {
        self.stack.has_pending_frames()
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use serde_json::json;
    use squib_mmds::stack::wire::{self, flags, Mac, TcpHeader};
    use squib_mmds::{DEFAULT_IPV4_ADDR, DEFAULT_MAC_ADDR};

    use super::*;

    const GUEST_MAC: Mac = [0x06, 0, 0xac, 0x10, 0, 0x02];
    const GUEST_IP: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 2);
    const GUEST_PORT: u16 = 40_000;

    fn interceptor() -> MmdsInterceptor {
        let store = SharedMmdsStore::new(51_200);
        store
            .put(json!({"latest": {"meta-data": {"hostname": "vm1"}}}))
            .unwrap();
        MmdsInterceptor::new(MmdsStack::new(DEFAULT_IPV4_ADDR, DEFAULT_MAC_ADDR), store)
    }

    /// `eth` behind a virtio-net header with a non-zero `num_buffers`, as a driver sends it.
    fn with_vnet_header(eth: &[u8]) -> Vec<u8> {
        let mut frame = vec![0u8; VNET_HDR_LEN];
        frame[10] = 1;
        frame.extend_from_slice(eth);
        frame
    }

    fn arp_request(target: Ipv4Addr) -> Vec<u8> {
        let mut eth = vec![0xff; 6];
        eth.extend_from_slice(&GUEST_MAC);
        eth.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
        eth.extend_from_slice(&GUEST_MAC);
        eth.extend_from_slice(&GUEST_IP.octets());
        eth.extend_from_slice(&[0; 6]);
        eth.extend_from_slice(&target.octets());
        with_vnet_header(&eth)
    }

    fn tcp(seq: u32, ack: u32, tcp_flags: u8, payload: &[u8]) -> Vec<u8> {
        let header = TcpHeader {
            dst_mac: DEFAULT_MAC_ADDR,
            src_mac: GUEST_MAC,
            src_ip: GUEST_IP,
            dst_ip: DEFAULT_IPV4_ADDR,
            ip_id: 1,
            src_port: GUEST_PORT,
            dst_port: 80,
            seq,
            ack,
            flags: tcp_flags,
            window: 65_535,
            mss: None,
        };
        let mut eth = vec![0u8; 1514];
        let len = wire::write_tcp_frame(&mut eth, &header, payload).unwrap();
        eth.truncate(len);
        with_vnet_header(&eth)
    }

    /// Every frame the interceptor has for the guest, headers checked and stripped.
    fn drain(mmds: &mut MmdsInterceptor) -> Vec<Vec<u8>> {
        let mut frames = Vec::new();
        let mut buf = vec![0xee; 2048];
        while let Some(len) = mmds.next_rx_frame(&mut buf) {
            assert_eq!(&buf[..VNET_HDR_LEN], &[0; VNET_HDR_LEN]);
            frames.push(buf[VNET_HDR_LEN..len].to_vec());
        }
        frames
    }

    /// (seq, ack, flags, payload) of a TCP frame MMDS sent to the guest.
    fn parse_tcp(eth: &[u8]) -> (u32, u32, u8, Vec<u8>) {
        let frame = wire::parse_ethernet(eth).unwrap();
        assert_eq!(frame.src, DEFAULT_MAC_ADDR);
        let ip = wire::parse_ipv4(frame.payload, true).unwrap();
        let seg = wire::parse_tcp(ip.payload, ip.src, ip.dst, true).unwrap();
        (seg.seq, seg.ack, seg.flags, seg.payload.to_vec())
    }

    #[test]
    fn frames_to_and_from_mmds_are_counted() {
        let m = &METRICS.mmds;
        let before = (
            m.rx_accepted.count(),
            m.tx_frames.count(),
            m.tx_bytes.count(),
        );
        let mut mmds = interceptor();
        assert!(mmds.intercept(&arp_request(DEFAULT_IPV4_ADDR)));
        let frames = drain(&mut mmds);
        // Other tests count too (the counters are process-wide): at least ours.
        assert!(m.rx_accepted.count() > before.0);
        assert!(m.tx_frames.count() > before.1);
        assert!(m.tx_bytes.count() >= before.2 + (frames[0].len() - VNET_HDR_LEN) as u64);
    }

    #[test]
    fn arp_for_mmds_is_answered_with_the_mmds_mac() {
        let mut mmds = interceptor();
        assert!(!mmds.has_rx_frame());
        assert!(mmds.intercept(&arp_request(DEFAULT_IPV4_ADDR)));
        assert!(mmds.has_rx_frame());
        let frames = drain(&mut mmds);
        assert_eq!(frames.len(), 1);
        let reply = &frames[0];
        assert_eq!(&reply[..6], &GUEST_MAC);
        assert_eq!(&reply[12..14], &[0x08, 0x06]);
        assert_eq!(&reply[20..22], &[0, 2], "ARP op is reply");
        assert_eq!(&reply[22..28], &DEFAULT_MAC_ADDR);
        assert_eq!(&reply[28..32], &DEFAULT_IPV4_ADDR.octets());
    }

    #[test]
    fn frames_for_other_hosts_go_to_the_tap() {
        let mut mmds = interceptor();
        assert!(!mmds.intercept(&arp_request(Ipv4Addr::new(172, 16, 0, 1))));
        assert!(!mmds.intercept(&[0; 4]), "shorter than the vnet header");
        assert!(!mmds.intercept(&with_vnet_header(&[1, 2, 3])));
        assert!(!mmds.has_rx_frame());
    }

    #[test]
    fn http_get_over_tcp_returns_the_document_value() {
        let mut mmds = interceptor();
        assert!(mmds.intercept(&tcp(1000, 0, flags::SYN, b"")));
        let syn_ack = drain(&mut mmds);
        assert_eq!(syn_ack.len(), 1);
        let (server_isn, ack, fl, _) = parse_tcp(&syn_ack[0]);
        assert_eq!(fl & (flags::SYN | flags::ACK), flags::SYN | flags::ACK);
        assert_eq!(ack, 1001);

        let request = b"GET /latest/meta-data/hostname HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n";
        let data_flags = flags::ACK | flags::PSH;
        assert!(mmds.intercept(&tcp(1001, server_isn + 1, flags::ACK, b"")));
        assert!(mmds.intercept(&tcp(1001, server_isn + 1, data_flags, request)));
        let reply: Vec<u8> = drain(&mut mmds)
            .iter()
            .flat_map(|f| parse_tcp(f).3)
            .collect();
        let reply = String::from_utf8(reply).unwrap();
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        assert!(reply.ends_with("vm1"), "{reply}");
    }

    #[test]
    fn store_updates_are_seen_by_the_api_view() {
        let store = SharedMmdsStore::new(64);
        assert_eq!(store.get(), json!({}));
        assert!(store.patch(&json!({"a": 1})).is_err(), "patch before put");
        store.put(json!({"a": 1})).unwrap();
        store.clone().patch(&json!({"b": 2})).unwrap();
        assert_eq!(store.get(), json!({"a": 1, "b": 2}));
        assert!(matches!(
            store.put(json!({"a": "x".repeat(100)})),
            Err(MmdsStoreError::LimitExceeded)
        ));
    }
}
