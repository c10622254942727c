//! `Net::new` through the public API: a TAP that cannot be opened is an error naming the TAP
//! and the OS error (what `PUT /network-interfaces` answers with 400), and a real TAP in a
//! fresh network namespace opens with the features the API promises. Skips the namespace part
//! when `unshare(CLONE_NEWNET)` is not permitted.

use squib_devices::virtio::net::{features, Net, NetConfig, NetError};
use squib_devices::virtio::{device_type, has_feature, VirtioDevice};

fn config(tap_name: &str) -> NetConfig {
    NetConfig {
        iface_id: "eth0".to_owned(),
        tap_name: tap_name.to_owned(),
        guest_mac: Some([6, 0, 0xac, 0x10, 0, 2]),
        mtu: Some(1500),
        rx_rate_limiter: None,
        tx_rate_limiter: None,
    }
}

#[test]
fn unopenable_tap_is_an_error_with_name_and_os_error() {
    let err = Net::new(config("no/such/tap")).unwrap_err();
    assert!(matches!(err, NetError::TapOpen { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("no/such/tap") && text.contains("os error"),
        "{text}"
    );
}

#[test]
fn too_long_tap_name_is_rejected_before_opening() {
    let err = Net::new(config("a-very-long-tap-name")).unwrap_err();
    assert!(matches!(err, NetError::InvalidTapName { .. }), "{err}");
}

#[test]
fn real_tap_opens_in_fresh_namespace() {
    std::thread::spawn(|| {
        // SAFETY: unshare takes a flag word; it only changes this thread's namespaces.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            eprintln!(
                "skipping: unshare(CLONE_NEWNET): {}",
                std::io::Error::last_os_error()
            );
            return;
        }
        let net = Net::new(config("sqbopen0")).expect("open TAP");
        assert_eq!(net.device_type(), device_type::NET);
        assert_eq!(net.iface_id(), "eth0");
        let offered = net.avail_features();
        for bit in [
            features::MAC,
            features::MTU,
            features::MRG_RXBUF,
            features::CSUM,
        ] {
            assert!(has_feature(offered, bit), "bit {bit}");
        }
        // Two interfaces on two TAPs at once.
        let second = Net::new(NetConfig {
            iface_id: "eth1".to_owned(),
            ..config("sqbopen1")
        })
        .expect("open second TAP");
        assert_eq!(second.iface_id(), "eth1");
    })
    .join()
    .expect("test thread");
}
