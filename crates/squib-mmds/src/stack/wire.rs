//! Wire formats for the MMDS endpoint: Ethernet II, ARP (Ethernet/IPv4), IPv4 and TCP.
//!
//! Parsers take untrusted guest bytes and return `None` for anything malformed or truncated:
//! every length is checked before it is used, so no input can index out of bounds. Writers
//! fill a caller's buffer and return the frame length, or `None` if it does not fit.

use std::net::Ipv4Addr;

/// A MAC address.
pub type Mac = [u8; 6];

/// Ethernet header length (no VLAN tag).
pub const ETH_HDR_LEN: usize = 14;
/// EtherType of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// EtherType of ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// Length of an Ethernet/IPv4 ARP packet.
pub const ARP_LEN: usize = 28;
/// IPv4 header length without options (what we send).
pub const IPV4_HDR_LEN: usize = 20;
/// TCP header length without options.
pub const TCP_HDR_LEN: usize = 20;
/// IP protocol number of TCP.
pub const PROTOCOL_TCP: u8 = 6;

/// TCP flag bits.
pub mod flags {
    /// No more data from sender.
    pub const FIN: u8 = 0x01;
    /// Synchronise sequence numbers.
    pub const SYN: u8 = 0x02;
    /// Reset the connection.
    pub const RST: u8 = 0x04;
    /// Push.
    pub const PSH: u8 = 0x08;
    /// Acknowledgment field is significant.
    pub const ACK: u8 = 0x10;
}

fn be16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*bytes.get(at)?, *bytes.get(at + 1)?]))
}

fn be32(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at + 4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn ipv4_at(bytes: &[u8], at: usize) -> Option<Ipv4Addr> {
    let b = bytes.get(at..at + 4)?;
    Some(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
}

/// An Ethernet frame: addresses, EtherType and payload.
#[derive(Debug, Clone, Copy)]
pub struct EthernetFrame<'a> {
    /// Source MAC.
    pub src: Mac,
    /// EtherType.
    pub ethertype: u16,
    /// What follows the header.
    pub payload: &'a [u8],
}

/// Parse an Ethernet II header.
#[must_use]
pub fn parse_ethernet(frame: &[u8]) -> Option<EthernetFrame<'_>> {
    let src: Mac = frame.get(6..12)?.try_into().ok()?;
    Some(EthernetFrame {
        src,
        ethertype: be16(frame, 12)?,
        payload: frame.get(ETH_HDR_LEN..)?,
    })
}

/// An ARP request for an IPv4 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpRequest {
    /// Sender hardware address.
    pub sha: Mac,
    /// Sender protocol address.
    pub spa: Ipv4Addr,
    /// Target protocol address.
    pub tpa: Ipv4Addr,
}

/// The target protocol address of an Ethernet/IPv4 ARP packet, if the header fields say so.
#[must_use]
pub fn arp_target(payload: &[u8]) -> Option<Ipv4Addr> {
    ipv4_at(payload, 24)
}

/// Parse an Ethernet/IPv4 ARP request (operation 1).
#[must_use]
pub fn parse_arp_request(payload: &[u8]) -> Option<ArpRequest> {
    let header_ok = be16(payload, 0)? == 1
        && be16(payload, 2)? == ETHERTYPE_IPV4
        && *payload.get(4)? == 6
        && *payload.get(5)? == 4
        && be16(payload, 6)? == 1;
    if !header_ok {
        return None;
    }
    Some(ArpRequest {
        sha: payload.get(8..14)?.try_into().ok()?,
        spa: ipv4_at(payload, 14)?,
        tpa: ipv4_at(payload, 24)?,
    })
}

fn write_ethernet(buf: &mut [u8], dst: Mac, src: Mac, ethertype: u16) {
    buf[0..6].copy_from_slice(&dst);
    buf[6..12].copy_from_slice(&src);
    buf[12..14].copy_from_slice(&ethertype.to_be_bytes());
}

/// Write an ARP reply frame telling `their` that `our_ip` is at `our_mac`.
#[must_use]
pub fn write_arp_reply(
    buf: &mut [u8],
    our_mac: Mac,
    our_ip: Ipv4Addr,
    their_mac: Mac,
    their_ip: Ipv4Addr,
) -> Option<usize> {
    let len = ETH_HDR_LEN + ARP_LEN;
    let frame = buf.get_mut(..len)?;
    write_ethernet(frame, their_mac, our_mac, ETHERTYPE_ARP);
    let arp = &mut frame[ETH_HDR_LEN..];
    arp[0..2].copy_from_slice(&1u16.to_be_bytes());
    arp[2..4].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    arp[4] = 6;
    arp[5] = 4;
    arp[6..8].copy_from_slice(&2u16.to_be_bytes());
    arp[8..14].copy_from_slice(&our_mac);
    arp[14..18].copy_from_slice(&our_ip.octets());
    arp[18..24].copy_from_slice(&their_mac);
    arp[24..28].copy_from_slice(&their_ip.octets());
    Some(len)
}

/// The destination address of an IPv4 header, read without validating anything else.
#[must_use]
pub fn ipv4_destination(packet: &[u8]) -> Option<Ipv4Addr> {
    ipv4_at(packet, 16)
}

/// A validated IPv4 packet.
#[derive(Debug, Clone, Copy)]
pub struct Ipv4Packet<'a> {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Protocol number.
    pub protocol: u8,
    /// Payload, cut to the header's total length (Ethernet padding dropped).
    pub payload: &'a [u8],
}

/// Parse and validate an IPv4 header; fragments are refused (MMDS never needs them).
#[must_use]
pub fn parse_ipv4(packet: &[u8], verify_checksum: bool) -> Option<Ipv4Packet<'_>> {
    let first = *packet.first()?;
    let header_len = usize::from(first & 0x0f) * 4;
    if first >> 4 != 4 || header_len < IPV4_HDR_LEN {
        return None;
    }
    let total_len = usize::from(be16(packet, 2)?);
    if total_len < header_len || total_len > packet.len() {
        return None;
    }
    let fragment = be16(packet, 6)?;
    if fragment & 0x3fff != 0 {
        return None;
    }
    if verify_checksum && checksum(&[&packet[..header_len]]) != 0 {
        return None;
    }
    Some(Ipv4Packet {
        src: ipv4_at(packet, 12)?,
        dst: ipv4_at(packet, 16)?,
        protocol: *packet.get(9)?,
        payload: &packet[header_len..total_len],
    })
}

/// A TCP segment from the guest.
#[derive(Debug, Clone, Copy)]
pub struct TcpSegment<'a> {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number.
    pub ack: u32,
    /// Flag bits (see [`flags`]).
    pub flags: u8,
    /// Advertised window (no scaling: we never offer the option).
    pub window: u16,
    /// The MSS option, if present.
    pub mss: Option<u16>,
    /// The data.
    pub payload: &'a [u8],
}

impl TcpSegment<'_> {
    /// Whether all of `mask` is set.
    #[must_use]
    pub fn has(&self, mask: u8) -> bool {
        self.flags & mask == mask
    }

    /// Sequence space the segment occupies (payload plus SYN and FIN).
    #[must_use]
    pub fn seq_len(&self) -> u32 {
        let payload = u32::try_from(self.payload.len()).unwrap_or(u32::MAX);
        payload
            .wrapping_add(u32::from(self.has(flags::SYN)))
            .wrapping_add(u32::from(self.has(flags::FIN)))
    }
}

/// Parse a TCP segment carried in an IPv4 packet from `src` to `dst`.
#[must_use]
pub fn parse_tcp(
    bytes: &[u8],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    verify_checksum: bool,
) -> Option<TcpSegment<'_>> {
    let header_len = usize::from(*bytes.get(12)? >> 4) * 4;
    if header_len < TCP_HDR_LEN || header_len > bytes.len() {
        return None;
    }
    if verify_checksum && tcp_checksum(src, dst, bytes) != 0 {
        return None;
    }
    Some(TcpSegment {
        src_port: be16(bytes, 0)?,
        dst_port: be16(bytes, 2)?,
        seq: be32(bytes, 4)?,
        ack: be32(bytes, 8)?,
        flags: *bytes.get(13)? & 0x3f,
        window: be16(bytes, 14)?,
        mss: parse_mss(&bytes[TCP_HDR_LEN..header_len]),
        payload: &bytes[header_len..],
    })
}

fn parse_mss(mut options: &[u8]) -> Option<u16> {
    while let Some(&kind) = options.first() {
        match kind {
            0 => return None,
            1 => options = &options[1..],
            _ => {
                let len = usize::from(*options.get(1)?);
                if len < 2 || len > options.len() {
                    return None;
                }
                if kind == 2 && len == 4 {
                    return be16(options, 2);
                }
                options = &options[len..];
            }
        }
    }
    None
}

/// Header fields of a TCP segment we send.
#[derive(Debug, Clone, Copy)]
pub struct TcpHeader {
    /// Ethernet destination (the guest).
    pub dst_mac: Mac,
    /// Ethernet source (MMDS).
    pub src_mac: Mac,
    /// IPv4 source (MMDS).
    pub src_ip: Ipv4Addr,
    /// IPv4 destination (the guest).
    pub dst_ip: Ipv4Addr,
    /// IPv4 identification.
    pub ip_id: u16,
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number.
    pub ack: u32,
    /// Flag bits.
    pub flags: u8,
    /// Advertised window.
    pub window: u16,
    /// MSS option to include (SYN-ACK only).
    pub mss: Option<u16>,
}

/// Bytes of Ethernet, IPv4 and TCP headers in a frame built from `header`.
#[must_use]
pub fn tcp_frame_overhead(header: &TcpHeader) -> usize {
    ETH_HDR_LEN + IPV4_HDR_LEN + TCP_HDR_LEN + if header.mss.is_some() { 4 } else { 0 }
}

/// Write a full Ethernet/IPv4/TCP frame with correct checksums.
#[must_use]
pub fn write_tcp_frame(buf: &mut [u8], header: &TcpHeader, payload: &[u8]) -> Option<usize> {
    let tcp_len = tcp_frame_overhead(header) - ETH_HDR_LEN - IPV4_HDR_LEN + payload.len();
    let ip_len = IPV4_HDR_LEN + tcp_len;
    let frame = buf.get_mut(..ETH_HDR_LEN + ip_len)?;
    write_ethernet(frame, header.dst_mac, header.src_mac, ETHERTYPE_IPV4);
    let ip = &mut frame[ETH_HDR_LEN..];
    ip[0] = 0x45;
    ip[1] = 0;
    ip[2..4].copy_from_slice(&u16::try_from(ip_len).ok()?.to_be_bytes());
    ip[4..6].copy_from_slice(&header.ip_id.to_be_bytes());
    ip[6..8].copy_from_slice(&0x4000u16.to_be_bytes());
    ip[8] = 64;
    ip[9] = PROTOCOL_TCP;
    ip[10..12].fill(0);
    ip[12..16].copy_from_slice(&header.src_ip.octets());
    ip[16..20].copy_from_slice(&header.dst_ip.octets());
    let ip_sum = checksum(&[&ip[..IPV4_HDR_LEN]]);
    ip[10..12].copy_from_slice(&ip_sum.to_be_bytes());
    let tcp = &mut ip[IPV4_HDR_LEN..];
    write_tcp_header(tcp, header, tcp_len - payload.len());
    tcp[tcp_len - payload.len()..].copy_from_slice(payload);
    let tcp_sum = tcp_checksum(header.src_ip, header.dst_ip, tcp);
    tcp[16..18].copy_from_slice(&tcp_sum.to_be_bytes());
    Some(ETH_HDR_LEN + ip_len)
}

fn write_tcp_header(tcp: &mut [u8], header: &TcpHeader, header_len: usize) {
    tcp[0..2].copy_from_slice(&header.src_port.to_be_bytes());
    tcp[2..4].copy_from_slice(&header.dst_port.to_be_bytes());
    tcp[4..8].copy_from_slice(&header.seq.to_be_bytes());
    tcp[8..12].copy_from_slice(&header.ack.to_be_bytes());
    // header_len is 20 or 24, so the data offset always fits in four bits.
    tcp[12] = u8::try_from(header_len / 4).unwrap_or(5) << 4;
    tcp[13] = header.flags;
    tcp[14..16].copy_from_slice(&header.window.to_be_bytes());
    tcp[16..20].fill(0);
    if let Some(mss) = header.mss {
        tcp[20] = 2;
        tcp[21] = 4;
        tcp[22..24].copy_from_slice(&mss.to_be_bytes());
    }
}

/// The Internet checksum (RFC 1071) over several byte slices, as if concatenated (each slice
/// but the last must have even length).
#[must_use]
pub fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for part in parts {
        let mut chunks = part.chunks_exact(2);
        for pair in &mut chunks {
            sum += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
        }
        if let [last] = chunks.remainder() {
            sum += u32::from(*last) << 8;
        }
        sum = (sum & 0xffff) + (sum >> 16);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // The loop above leaves sum <= 0xffff.
    !u16::try_from(sum).unwrap_or(0xffff)
}

/// TCP checksum over the pseudo-header and `segment`; 0 when verifying a correct segment.
#[must_use]
pub fn tcp_checksum(src: Ipv4Addr, dst: Ipv4Addr, segment: &[u8]) -> u16 {
    let len = u16::try_from(segment.len())
        .unwrap_or(u16::MAX)
        .to_be_bytes();
    let pseudo = [
        &src.octets()[..],
        &dst.octets()[..],
        &[0, PROTOCOL_TCP],
        &len[..],
    ]
    .concat();
    checksum(&[&pseudo, segment])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_matches_rfc1071_example() {
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(checksum(&[&data]), !0xddf2);
        assert_eq!(checksum(&[&data[..4], &data[4..]]), !0xddf2);
    }

    #[test]
    fn written_tcp_frame_parses_back_with_valid_checksums() {
        let header = TcpHeader {
            dst_mac: [2; 6],
            src_mac: [6; 6],
            src_ip: Ipv4Addr::new(169, 254, 169, 254),
            dst_ip: Ipv4Addr::new(10, 0, 0, 2),
            ip_id: 7,
            src_port: 80,
            dst_port: 4000,
            seq: 1,
            ack: 2,
            flags: flags::SYN | flags::ACK,
            window: 1000,
            mss: Some(1460),
        };
        let mut buf = [0u8; 128];
        let len = write_tcp_frame(&mut buf, &header, b"hey").unwrap();
        let eth = parse_ethernet(&buf[..len]).unwrap();
        assert_eq!(eth.ethertype, ETHERTYPE_IPV4);
        let ip = parse_ipv4(eth.payload, true).unwrap();
        let tcp = parse_tcp(ip.payload, ip.src, ip.dst, true).unwrap();
        assert_eq!(
            (tcp.src_port, tcp.dst_port, tcp.seq, tcp.ack),
            (80, 4000, 1, 2)
        );
        assert_eq!(tcp.mss, Some(1460));
        assert_eq!(tcp.payload, b"hey");
        assert!(write_tcp_frame(&mut buf[..40], &header, b"hey").is_none());
    }

    #[test]
    fn truncated_headers_are_refused() {
        assert!(parse_ethernet(&[0; 13]).is_none());
        assert!(parse_ipv4(&[0x45; 19], false).is_none());
        assert!(parse_ipv4(&[0x46, 0, 0, 20, 0, 0, 0, 0, 64, 6], false).is_none());
        assert!(parse_tcp(&[0; 19], Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST, false).is_none());
        assert!(parse_arp_request(&[0; 27]).is_none());
        assert_eq!(parse_mss(&[2, 4, 5]), None);
        assert_eq!(parse_mss(&[1, 2, 4, 5, 0xb4]), Some(0x05b4));
        assert_eq!(parse_mss(&[3, 0]), None);
    }
}
