//! A private network namespace for the calling test thread, with TAPs in it.
//!
//! Namespaces belong to threads: after [`enter_private_netns`], the sockets this thread
//! opens, the threads it starts and the processes it spawns (`ip`, `squib`) all live in a
//! fresh namespace that only this test sees. Its TAPs, addresses and routes cannot clash
//! with the host's or another test's, and they vanish with the namespace once the thread
//! and its children are gone.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;

/// Runs `ip ARGS...` and returns its stdout, or a message with its stderr.
pub fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {args:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Moves this thread into a new network namespace with `lo` up. Returns `false` (after
/// saying why) when this host cannot give the test one: no `/dev/net/tun`, or no right to
/// create namespaces.
pub fn enter_private_netns() -> bool {
    if !Path::new("/dev/net/tun").exists() {
        eprintln!("skipping: /dev/net/tun is missing, TAP devices cannot be created");
        return false;
    }
    // SAFETY: unshare(2) takes no pointers; CLONE_NEWNET moves only the calling thread.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        let err = std::io::Error::last_os_error();
        eprintln!("skipping: cannot create a network namespace: {err}");
        return false;
    }
    ip(&["link", "set", "lo", "up"]).unwrap_or_else(|e| panic!("{e}"));
    true
}

/// A TAP in this thread's namespace with `172.16.<subnet>.1/24` on the host end; the guest
/// is meant to be `172.16.<subnet>.2`. Deleted on drop.
pub struct HostTap {
    pub name: String,
    subnet: u8,
}

impl HostTap {
    /// Creates `tap<subnet>`, addressed and up.
    ///
    /// # Panics
    /// When `ip` fails.
    pub fn create(subnet: u8) -> HostTap {
        let tap = HostTap {
            name: format!("tap{subnet}"),
            subnet,
        };
        let cidr = format!("{}/24", tap.host_ip());
        for args in [
            vec!["tuntap", "add", "dev", &tap.name, "mode", "tap"],
            vec!["addr", "add", &cidr, "dev", &tap.name],
            vec!["link", "set", &tap.name, "up"],
        ] {
            ip(&args).unwrap_or_else(|e| panic!("creating the host TAP: {e}"));
        }
        tap
    }

    pub fn host_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(172, 16, self.subnet, 1)
    }

    pub fn guest_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(172, 16, self.subnet, 2)
    }

    /// The kernel `ip=` argument configuring `dev` in the guest on this TAP's subnet.
    pub fn guest_ip_arg(&self, dev: &str) -> String {
        format!(
            "ip={}::{}:255.255.255.0::{dev}:off",
            self.guest_ip(),
            self.host_ip()
        )
    }

    /// The init's `squib.net_setup=` argument giving `dev` this TAP's guest address.
    pub fn guest_setup_arg(&self, dev: &str) -> String {
        format!("squib.net_setup={dev},{}/24", self.guest_ip())
    }
}

impl Drop for HostTap {
    fn drop(&mut self) {
        if let Err(e) = ip(&["link", "del", &self.name]) {
            eprintln!("deleting the host TAP: {e}");
        }
    }
}
