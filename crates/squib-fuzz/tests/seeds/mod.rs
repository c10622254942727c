//! Hand-made seeds, built with the same byte layout the targets decode (see each target's
//! module docs), so the fuzzer starts from valid requests, packets and images.

use squib_arch::kernel::test_images::{bzimage, elf_image, XLF_KERNEL_64};
use squib_devices::virtio::block::request_type;
use squib_devices::virtio::test_utils::{udp_frame, UdpEnds, F_WRITE};
use squib_devices::virtio::vsock::packet::op;
use squib_fuzz::net::GUEST_MAC;
use squib_mmds::DEFAULT_IPV4_ADDR;

/// A scenario being written.
#[derive(Default)]
struct S(Vec<u8>);

impl S {
    fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }
    fn u16(mut self, v: u16) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn bytes(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(b);
        self
    }
    fn prefixed(self, b: &[u8]) -> Self {
        let len = u8::try_from(b.len()).expect("content of at most 255 bytes");
        self.u8(len).bytes(b)
    }
    /// A slot descriptor (see `guest::descriptor`) with `content` at the slot's start.
    fn desc(self, slot: u8, len: u16, flags: u16, content: &[u8]) -> Self {
        self.u8((slot << 3) | flags as u8)
            .u16(len)
            .prefixed(content)
    }
    /// The step byte `step`, then a chain of 1 to 4 slot descriptors (queue op 0).
    fn chain(self, step: u8, descs: &[(u8, u16, u16, &[u8])]) -> Self {
        let mut s = self.u8(step).u8(descs.len() as u8 - 1);
        for &(slot, len, flags, content) in descs {
            s = s.desc(slot, len, flags, content);
        }
        s
    }
    fn done(self) -> Vec<u8> {
        self.0
    }
}

fn block_header(kind: u32, sector: u64) -> Vec<u8> {
    let mut h = kind.to_le_bytes().to_vec();
    h.extend_from_slice(&[0; 4]);
    h.extend_from_slice(&sector.to_le_bytes());
    h
}

/// One block request: header, data (when `len` > 0), status; then a kick.
fn block_request(s: S, kind: u32, sector: u64, len: u16, data_flags: u16, data: &[u8]) -> S {
    let hdr = block_header(kind, sector);
    let s = if len == 0 {
        s.chain(0, &[(0, 16, 0, &hdr), (2, 1, F_WRITE, &[])])
    } else {
        s.chain(
            0,
            &[
                (0, 16, 0, &hdr),
                (1, len, data_flags, data),
                (2, 1, F_WRITE, &[]),
            ],
        )
    };
    s.u8(0xe0)
}

fn block_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let base = || S::default().u8(2).u16(8192).u8(0).u64(u64::MAX);
    let mut discard = 0u64.to_le_bytes().to_vec();
    discard.extend_from_slice(&[8, 0, 0, 0, 0, 0, 0, 0]);
    let req = |kind, sector, len, flags, data: &[u8]| {
        block_request(base(), kind, sector, len, flags, data).done()
    };
    vec![
        ("read", req(request_type::IN, 1, 512, F_WRITE, &[])),
        ("write", req(request_type::OUT, 2, 512, 0, &[0xab; 64])),
        ("flush", req(request_type::FLUSH, 0, 0, 0, &[])),
        ("get_id", req(request_type::GET_ID, 0, 20, F_WRITE, &[])),
        ("discard", req(request_type::DISCARD, 0, 16, 0, &discard)),
        (
            "write_zeroes",
            req(request_type::WRITE_ZEROES, 0, 16, 0, &discard),
        ),
        (
            "read_past_end",
            req(request_type::IN, 15, 1024, F_WRITE, &[]),
        ),
        (
            "write_then_read",
            block_request(
                block_request(base(), request_type::OUT, 0, 4096, 0, &[1; 255]),
                request_type::IN,
                0,
                4096,
                F_WRITE,
                &[],
            )
            .done(),
        ),
    ]
}

fn rng_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let req = |s: S| s.chain(0, &[(0, 64, F_WRITE, &[])]).u8(0xe0);
    vec![
        ("one_request", req(S::default().u8(0).u8(0).u64(0)).done()),
        (
            "throttled",
            req(req(S::default().u8(1).u16(16).u16(0).u8(1).u8(0).u64(0)))
                .u8(0xf0)
                .done(),
        ),
        (
            "two_buffers",
            S::default()
                .u8(0)
                .u8(0)
                .u64(0)
                .chain(0, &[(0, 16, F_WRITE, &[]), (1, 4096, F_WRITE, &[])])
                .u8(0xe0)
                .done(),
        ),
    ]
}

/// Balloon scenarios: config bits, target, no register accesses, features; then steps.
fn balloon_seeds() -> Vec<(&'static str, Vec<u8>)> {
    // Page frames 0x30..0x32: the end of the target's 256 KiB of guest memory.
    let pfns: Vec<u8> = [0x30u32, 0x31, 0x31, 0x1_0000]
        .iter()
        .flat_map(|p| p.to_le_bytes())
        .collect();
    let mut stats = Vec::new();
    for (tag, value) in [(4u16, 1u64 << 20), (5, 2 << 20)] {
        stats.extend_from_slice(&tag.to_le_bytes());
        stats.extend_from_slice(&value.to_le_bytes());
    }
    let all = |s: S| s.u8(0).u64(u64::MAX);
    vec![
        (
            "inflate_deflate",
            all(S::default().u8(0x1).u8(1))
                .u8(0)
                .chain(0, &[(0, 16, 0, &pfns)])
                .u8(0)
                .u8(0xc0)
                .u8(1)
                .chain(0, &[(0, 8, 0, &pfns)])
                .u8(1)
                .u8(0xc0)
                .u8(0)
                .u8(0xe0)
                .u16(1)
                .done(),
        ),
        (
            "stats_hinting_reporting",
            all(S::default().u8(0xe).u8(0))
                .u8(2)
                .chain(0, &[(1, 20, 0, &stats)])
                .u8(2)
                .u8(0xc0)
                .u8(0)
                .u8(0xf2)
                .u8(3)
                .chain(
                    0,
                    &[(2, 4, 0, &2u32.to_le_bytes()), (3, 4096, F_WRITE, &[])],
                )
                .u8(3)
                .u8(0xc0)
                .u8(4)
                .chain(0, &[(3, 8192, F_WRITE, &[])])
                .u8(4)
                .u8(0xc0)
                .u8(0)
                .u8(0xff)
                .done(),
        ),
    ]
}

/// An Ethernet ARP request from the guest for `target`, behind a zero virtio-net header.
fn arp_request(target: [u8; 4]) -> Vec<u8> {
    let mut f = vec![0u8; 12];
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&GUEST_MAC);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&GUEST_MAC);
    f.extend_from_slice(&[172, 16, 0, 2]);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target);
    f
}

fn net_seeds() -> Vec<(&'static str, Vec<u8>)> {
    // V1, no checksum verification; every offered feature.
    let base = || S::default().u8(0).u8(0).u64(u64::MAX);
    let rx_bufs = |s: S| {
        s.chain(0, &[(3, 2048, F_WRITE, &[])])
            .chain(0, &[(4, 2048, F_WRITE, &[])])
            .chain(0, &[(5, 2048, F_WRITE, &[])])
            .u8(0xd0)
    };
    let udp = udp_frame(
        UdpEnds {
            src_mac: GUEST_MAC,
            dst_mac: [0xff; 6],
            src: "172.16.0.2:5000".parse().expect("address"),
            dst: "172.16.0.1:53".parse().expect("address"),
        },
        b"hello",
    );
    let arp = arp_request(DEFAULT_IPV4_ADDR.octets());
    let get = b"GET /latest/meta-data/hostname HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n";
    let put_token = b"PUT /latest/api/token HTTP/1.1\r\nX-metadata-token-ttl-seconds: 60\r\n\r\n";
    let tcp = |s: S, flags: u8, payload: &[u8]| s.u8(0xf8).u8(flags).prefixed(payload);
    let handshake = || tcp(tcp(rx_bufs(base()), 0x02, &[]), 0x10, &[]);
    vec![
        (
            "arp_for_mmds",
            rx_bufs(base())
                .chain(1, &[(6, arp.len() as u16, 0, &arp)])
                .u8(0xc0)
                .u8(0xd0)
                .done(),
        ),
        (
            "udp_to_tap",
            base()
                .chain(1, &[(6, udp.len() as u16, 0, &udp)])
                .u8(0xc0)
                .u8(0xf0)
                .done(),
        ),
        (
            "tap_to_guest",
            rx_bufs(base())
                .u8(0xe0)
                .prefixed(&udp)
                .u16(0)
                .u8(0xd0)
                .done(),
        ),
        ("mmds_http_get", tcp(handshake(), 0x18, get).u8(0xd0).done()),
        (
            "mmds_token_then_close",
            tcp(tcp(handshake(), 0x18, put_token), 0x11, &[]).done(),
        ),
        (
            "split_header_chain",
            rx_bufs(base())
                .chain(1, &[(6, 12, 0, &[0; 12]), (7, 42, 0, &arp[12..])])
                .u8(0xc0)
                .done(),
        ),
    ]
}

fn vsock_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let base = || {
        S::default()
            .u8(0)
            .u64(u64::MAX)
            .chain(0, &[(8, 4096, F_WRITE, &[])])
            .chain(0, &[(9, 4096, F_WRITE, &[])])
            .chain(0, &[(10, 4096, F_WRITE, &[])])
            .u8(0xb0)
            .u8(0)
    };
    // A tx packet (step 0x90): control, src port, len, op, flags, buf_alloc, fwd_cnt, slot,
    // data; then a tx kick.
    let pkt = |s: S, op: u16, len: u16, data: &[u8]| {
        s.u8(0x90)
            .u8(0)
            .u8(7)
            .u16(len)
            .u8(op as u8)
            .u8(0)
            .u32(256 * 1024)
            .u32(0)
            .u8(0)
            .prefixed(data)
            .u8(0xb0)
            .u8(1)
    };
    vec![
        (
            "guest_connects_and_sends",
            pkt(
                pkt(base(), op::REQUEST, 0, &[]).u8(0xd0).u8(0),
                op::RW,
                5,
                b"hello",
            )
            .u8(0xe0)
            .u8(0)
            .prefixed(b"reply")
            .u16(0)
            .u8(0xb0)
            .u8(0)
            .done(),
        ),
        (
            "host_connects",
            base()
                .u8(0xc0)
                .u8(0)
                .prefixed(b"CONNECT 52\n")
                .u8(0xb0)
                .u8(0)
                .done(),
        ),
        (
            "shutdown_and_rst",
            pkt(
                pkt(pkt(base(), op::REQUEST, 0, &[]), op::SHUTDOWN, 0, &[]),
                op::RST,
                0,
                &[],
            )
            .done(),
        ),
        (
            "credit_request",
            pkt(pkt(base(), op::REQUEST, 0, &[]), op::CREDIT_REQUEST, 0, &[]).done(),
        ),
    ]
}

fn mmio_seeds() -> Vec<(&'static str, Vec<u8>)> {
    // Control byte: bit 0 write, bits 1-2 = 2 (4 bytes), a register offset byte follows.
    let w = |s: S, offset: u8, v: u32| s.u8(0b101).u8(offset).u32(v);
    let r = |s: S, offset: u8| s.u8(0b100).u8(offset);
    let init = |dev: u8| {
        let mut s = S::default().u8(dev);
        if dev == 0 {
            s = s.u8(0);
        }
        for off in [0x00, 0x04, 0x08, 0x34] {
            s = r(s, off);
        }
        for (off, v) in [
            (0x70, 1),
            (0x70, 3),
            (0x24, 1),
            (0x20, 1),
            (0x70, 11),
            (0x38, 16),
            (0x80, 0),
            (0x90, 0x100),
            (0xa0, 0x200),
            (0x44, 1),
            (0x70, 15),
        ] {
            s = w(s, off, v);
        }
        r(s, 0x70).u8(0xff)
    };
    vec![
        ("rng_init", init(0).done()),
        ("block_init", init(1).done()),
        ("net_init", init(2).done()),
        (
            "block_config_space",
            S::default()
                .u8(1)
                .u8(0b1000)
                .u16(0x100)
                .u8(0b1010)
                .u16(0x108)
                .u8(0b1110)
                .u16(0x100)
                .done(),
        ),
    ]
}

fn mmds_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let v2_tok = |req: &[u8]| {
        let mut v = vec![0b101];
        v.extend_from_slice(&60u32.to_le_bytes());
        v.extend_from_slice(req);
        v
    };
    let plain = |mode: u8, req: &[u8]| {
        let mut v = vec![mode];
        v.extend_from_slice(req);
        v
    };
    vec![
        (
            "v1_get",
            plain(0, b"GET /latest/meta-data/hostname HTTP/1.1\r\n\r\n"),
        ),
        (
            "v1_get_json",
            plain(0, b"GET / HTTP/1.1\r\nAccept: application/json\r\n\r\n"),
        ),
        (
            "imds_list",
            plain(2, b"GET /latest/meta-data/ HTTP/1.0\r\n\r\n"),
        ),
        (
            "v2_token_and_get",
            v2_tok(
                b"PUT /latest/api/token HTTP/1.1\r\nX-metadata-token-ttl-seconds: 60\r\n\r\n\
                  GET /s HTTP/1.1\r\nX-metadata-token: $T\r\n\r\n",
            ),
        ),
        (
            "v2_aws_header",
            v2_tok(b"GET /latest HTTP/1.1\r\nX-aws-ec2-metadata-token: $T\r\n\r\n"),
        ),
        ("v2_no_token", plain(1, b"GET /n HTTP/1.1\r\n\r\n")),
        (
            "pipelined_with_body",
            plain(
                0,
                b"PUT /latest/api/token HTTP/1.1\r\nContent-Length: 3\r\n\
                  X-Forwarded-For: a\r\n\r\nabcPOST / HTTP/1.1\r\n\r\n",
            ),
        ),
    ]
}

const CONFIG_FILE: &str = r#"{"boot-source":{"kernel_image_path":"/k","boot_args":"console=ttyS0"},
"drives":[{"drive_id":"rootfs","path_on_host":"/r","is_root_device":true,"is_read_only":false}],
"machine-config":{"vcpu_count":2,"mem_size_mib":128},
"network-interfaces":[{"iface_id":"eth0","host_dev_name":"tap0","guest_mac":"06:00:ac:10:00:02"}],
"vsock":{"guest_cid":3,"uds_path":"/v.sock"},
"mmds-config":{"version":"V2","network_interfaces":["eth0"]},
"entropy":{"rate_limiter":{"bandwidth":{"size":1000,"refill_time":100}}}}"#;

fn api_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let req = |m: u8, path: &str, body: &str| {
        let mut v = vec![m];
        v.extend_from_slice(path.as_bytes());
        v.push(b'\n');
        v.extend_from_slice(body.as_bytes());
        v
    };
    vec![
        ("get_root", req(0, "/", "")),
        (
            "machine_config",
            req(
                1,
                "/machine-config",
                r#"{"vcpu_count":2,"mem_size_mib":256,"smt":false}"#,
            ),
        ),
        (
            "boot_source",
            req(
                1,
                "/boot-source",
                r#"{"kernel_image_path":"/k","boot_args":"console=ttyS0"}"#,
            ),
        ),
        (
            "drive",
            req(
                1,
                "/drives/rootfs",
                r#"{"drive_id":"rootfs","path_on_host":"/r","is_root_device":true,"is_read_only":false,"rate_limiter":{"ops":{"size":10,"refill_time":100}}}"#,
            ),
        ),
        (
            "patch_drive",
            req(
                2,
                "/drives/rootfs",
                r#"{"drive_id":"rootfs","path_on_host":"/r2"}"#,
            ),
        ),
        (
            "net",
            req(
                1,
                "/network-interfaces/eth0",
                r#"{"iface_id":"eth0","host_dev_name":"tap0","guest_mac":"06:00:ac:10:00:02"}"#,
            ),
        ),
        (
            "actions",
            req(1, "/actions", r#"{"action_type":"InstanceStart"}"#),
        ),
        (
            "mmds_put",
            req(1, "/mmds", r#"{"latest":{"meta-data":{"a":"b"}}}"#),
        ),
        (
            "mmds_config",
            req(
                1,
                "/mmds/config",
                r#"{"version":"V2","network_interfaces":["eth0"]}"#,
            ),
        ),
        (
            "vsock",
            req(1, "/vsock", r#"{"guest_cid":3,"uds_path":"/v.sock"}"#),
        ),
        (
            "snapshot",
            req(
                1,
                "/snapshot/create",
                r#"{"snapshot_path":"/s","mem_file_path":"/m"}"#,
            ),
        ),
        (
            "logger",
            req(
                1,
                "/logger",
                r#"{"log_path":"/l","level":"Debug","show_level":true}"#,
            ),
        ),
        ("custom_method", req(7, "OPTIONS /version", "")),
        ("config_file", req(1, "/", CONFIG_FILE)),
    ]
}

fn kernel_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let with = |mode: u8, image: Vec<u8>| {
        let mut v = vec![mode];
        v.extend_from_slice(&image);
        v
    };
    let payload = [0x90u8; 64];
    let mut above = vec![2];
    above.extend_from_slice(&0x30_0000u32.to_le_bytes());
    above.extend_from_slice(&[7; 4096]);
    vec![
        ("elf", with(0, elf_image(&payload, 0x1000, None))),
        (
            "elf_pvh",
            with(0, elf_image(&payload, 0x1000, Some(0x20_0040))),
        ),
        (
            "elf_bss_past_ram",
            with(0, elf_image(&payload, 8 << 20, None)),
        ),
        ("bzimage", with(0, bzimage(0x020f, XLF_KERNEL_64, &payload))),
        (
            "bzimage_old",
            with(0, bzimage(0x0200, XLF_KERNEL_64, &payload)),
        ),
        ("initrd", with(1, vec![0x1f; 5000])),
        ("initrd_above", above),
    ]
}

/// Seeds of one target: (name, bytes).
type Seeds = Vec<(&'static str, Vec<u8>)>;
/// A target's name and its seed builder.
type Group = (&'static str, fn() -> Seeds);

/// Every seed: (target, name, bytes).
pub fn all() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let groups: [Group; 9] = [
        ("virtio_block", block_seeds),
        ("virtio_net", net_seeds),
        ("virtio_vsock", vsock_seeds),
        ("virtio_rng", rng_seeds),
        ("virtio_balloon", balloon_seeds),
        ("mmio_transport", mmio_seeds),
        ("mmds_http", mmds_seeds),
        ("api_request", api_seeds),
        ("kernel_loader", kernel_seeds),
    ];
    groups
        .into_iter()
        .flat_map(|(target, seeds)| {
            seeds()
                .into_iter()
                .map(move |(name, bytes)| (target, name, bytes))
        })
        .collect()
}
