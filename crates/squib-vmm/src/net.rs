//! Network interfaces between the API and the virtio-net device: the TAP opened at
//! `PUT /network-interfaces` time (as Firecracker, so a bad TAP fails the PUT, not the boot),
//! the device built from it at `InstanceStart` with its rate limiters and, for interfaces
//! listed in `PUT /mmds/config`, an MMDS endpoint.

use std::sync::{Arc, Mutex, PoisonError};

use squib_api::schemas::{
    MmdsConfig, MmdsVersion as ApiMmdsVersion, NetworkInterfaceConfig, RateLimiterConfig,
};
use squib_devices::virtio::net::{Net, NetConfig, NetError, Tap, TapIo};
use squib_mmds::{
    GuestAccess, MmdsStack, MmdsVersion, SharedTokenAuthority, TokenAuthority, DEFAULT_MAC_ADDR,
};

use crate::limiter_config::build_rate_limiter;
use crate::mmds_interceptor::{MmdsInterceptor, SharedMmdsStore};

/// A configured network interface and the TAP opened for it.
#[derive(Debug)]
pub struct NetInterface {
    /// As configured.
    pub config: NetworkInterfaceConfig,
    /// Taken by the device at boot; a failed boot leaves `None` and the next one reopens.
    tap: Mutex<Option<Tap>>,
}

impl NetInterface {
    /// Open the TAP named by `config` now.
    ///
    /// # Errors
    /// [`NetError::InvalidTapName`] or [`NetError::TapOpen`] naming the TAP and the OS error.
    pub fn open(config: NetworkInterfaceConfig) -> Result<Self, NetError> {
        let tap = Tap::open(&config.host_dev_name)?;
        Ok(Self::with_tap(config, tap))
    }

    /// Keep `tap` (already open for `config.host_dev_name`) for the device.
    #[must_use]
    pub fn with_tap(config: NetworkInterfaceConfig, tap: Tap) -> Self {
        Self {
            config,
            tap: Mutex::new(Some(tap)),
        }
    }

    /// The open TAP, handed over (for a re-PUT naming the same TAP: it cannot be opened twice).
    pub fn take_tap(&self) -> Option<Tap> {
        self.tap
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// The virtio-net device for this interface, on the TAP opened at PUT time.
    ///
    /// # Errors
    /// [`NetError`] when the TAP cannot be (re)opened or a limiter's timerfd cannot be made.
    pub fn build_net(&self) -> Result<Net, NetError> {
        let tap = match self.take_tap() {
            Some(tap) => tap,
            None => Tap::open(&self.config.host_dev_name)?,
        };
        let limiter = |config: Option<&RateLimiterConfig>| {
            config
                .map(build_rate_limiter)
                .transpose()
                .map_err(NetError::EventFd)
        };
        let cfg = NetConfig {
            iface_id: self.config.iface_id.as_str().to_owned(),
            tap_name: self.config.host_dev_name.clone(),
            guest_mac: self.config.guest_mac.as_ref().map(|m| m.0),
            mtu: self.config.mtu,
            rx_rate_limiter: limiter(self.config.rx_rate_limiter.as_ref())?,
            tx_rate_limiter: limiter(self.config.tx_rate_limiter.as_ref())?,
        };
        Net::with_tap(cfg, Box::new(tap) as Box<dyn TapIo>)
    }
}

/// What every interface's MMDS endpoint shares: the document and the V2 token authority.
#[derive(Debug, Clone)]
pub struct MmdsShared {
    /// `PUT /mmds/config`.
    pub config: MmdsConfig,
    /// The document.
    pub store: SharedMmdsStore,
    /// One authority for all interfaces: a token minted on one works on all.
    pub tokens: SharedTokenAuthority,
}

impl MmdsShared {
    /// A fresh token authority for `config` over `store`.
    #[must_use]
    pub fn new(config: MmdsConfig, store: SharedMmdsStore) -> Self {
        Self {
            config,
            store,
            tokens: Arc::new(Mutex::new(TokenAuthority::new())),
        }
    }

    /// The MMDS endpoint for `iface_id`, if MMDS is configured on it.
    #[must_use]
    pub fn interceptor_for(&self, iface_id: &str) -> Option<MmdsInterceptor> {
        let listed = self
            .config
            .network_interfaces
            .iter()
            .any(|id| id.as_str() == iface_id);
        if !listed {
            return None;
        }
        let access = GuestAccess {
            version: match self.config.version {
                ApiMmdsVersion::V1 => MmdsVersion::V1,
                ApiMmdsVersion::V2 => MmdsVersion::V2,
            },
            imds_compat: self.config.imds_compat,
        };
        let stack = MmdsStack::new(self.config.ipv4_address, DEFAULT_MAC_ADDR)
            .with_access(access)
            .with_token_authority(self.tokens.clone());
        Some(MmdsInterceptor::new(stack, self.store.clone()))
    }
}

#[cfg(test)]
mod tests {
    use squib_api::schemas::IfaceId;

    use super::*;

    fn mmds_config(ifaces: &[&str]) -> MmdsConfig {
        MmdsConfig {
            version: ApiMmdsVersion::V2,
            network_interfaces: ifaces
                .iter()
                .map(|id| IfaceId::try_from(*id).unwrap())
                .collect(),
            ipv4_address: squib_mmds::DEFAULT_IPV4_ADDR,
            imds_compat: false,
        }
    }

    #[test]
    fn only_listed_interfaces_get_an_mmds_endpoint() {
        let shared = MmdsShared::new(mmds_config(&["eth0"]), SharedMmdsStore::new(1024));
        assert!(shared.interceptor_for("eth0").is_some());
        assert!(shared.interceptor_for("eth1").is_none());
    }
}
