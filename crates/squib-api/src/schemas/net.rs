//! `PUT`/`PATCH /network-interfaces/{id}`: virtio-net over a TAP device.

use serde::{Deserialize, Serialize};

use super::error::SchemaError;
use super::ids::{IfaceId, MacAddr};
use super::rate_limiter::{check_limiter, RateLimiterConfig};
use crate::error::RequestError;
use crate::routes::parse::BodyId;

/// Smallest MTU virtio-net accepts (IPv4 minimum).
pub const MIN_MTU: u16 = 68;
/// Longest TAP name (`IFNAMSIZ` - 1).
pub const MAX_TAP_NAME_LEN: usize = 15;

/// `PUT /network-interfaces/{id}` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNetworkInterface {
    pub(crate) iface_id: String,
    host_dev_name: String,
    #[serde(default)]
    guest_mac: Option<String>,
    #[serde(default)]
    mtu: Option<u16>,
    #[serde(default)]
    rx_rate_limiter: Option<RateLimiterConfig>,
    #[serde(default)]
    tx_rate_limiter: Option<RateLimiterConfig>,
}

/// A validated network interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkInterfaceConfig {
    /// Interface ID.
    pub iface_id: IfaceId,
    /// Host TAP device.
    pub host_dev_name: String,
    /// Guest MAC.
    pub guest_mac: Option<MacAddr>,
    /// RX limiter.
    pub rx_rate_limiter: Option<RateLimiterConfig>,
    /// TX limiter.
    pub tx_rate_limiter: Option<RateLimiterConfig>,
    /// MTU advertised with `VIRTIO_NET_F_MTU`.
    pub mtu: Option<u16>,
}

impl TryFrom<RawNetworkInterface> for NetworkInterfaceConfig {
    type Error = SchemaError;

    fn try_from(raw: RawNetworkInterface) -> Result<Self, SchemaError> {
        let iface_id = IfaceId::try_from(raw.iface_id)?;
        let name = &raw.host_dev_name;
        if name.is_empty() || name.len() > MAX_TAP_NAME_LEN || name.contains(['\0', '/']) {
            return Err(SchemaError::InvalidTapName(raw.host_dev_name));
        }
        if let Some(mtu) = raw.mtu {
            if mtu < MIN_MTU {
                return Err(SchemaError::InvalidMtu(mtu));
            }
        }
        Ok(Self {
            iface_id,
            host_dev_name: raw.host_dev_name,
            guest_mac: raw.guest_mac.as_deref().map(str::parse).transpose()?,
            rx_rate_limiter: check_limiter("rx_rate_limiter", raw.rx_rate_limiter)?,
            tx_rate_limiter: check_limiter("tx_rate_limiter", raw.tx_rate_limiter)?,
            mtu: raw.mtu,
        })
    }
}

/// `PATCH /network-interfaces/{id}` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNetworkPatch {
    pub(crate) iface_id: String,
    #[serde(default)]
    rx_rate_limiter: Option<RateLimiterConfig>,
    #[serde(default)]
    tx_rate_limiter: Option<RateLimiterConfig>,
}

/// A validated network interface update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkPatch {
    /// Interface ID.
    pub iface_id: IfaceId,
    /// New RX limiter.
    pub rx_rate_limiter: Option<RateLimiterConfig>,
    /// New TX limiter.
    pub tx_rate_limiter: Option<RateLimiterConfig>,
}

impl TryFrom<RawNetworkPatch> for NetworkPatch {
    type Error = SchemaError;

    fn try_from(raw: RawNetworkPatch) -> Result<Self, SchemaError> {
        Ok(Self {
            iface_id: IfaceId::try_from(raw.iface_id)?,
            rx_rate_limiter: check_limiter("rx_rate_limiter", raw.rx_rate_limiter)?,
            tx_rate_limiter: check_limiter("tx_rate_limiter", raw.tx_rate_limiter)?,
        })
    }
}

/// Network interfaces name both IDs in their mismatch error.
fn net_id_mismatch(path: &str, body: &str) -> RequestError {
    RequestError::NetIdMismatch {
        path: path.to_owned(),
        body: body.to_owned(),
    }
}

impl BodyId for RawNetworkInterface {
    type PathId = IfaceId;
    fn body_id(&self) -> &str {
        &self.iface_id
    }
    fn mismatch(path: &str, body: &str) -> RequestError {
        net_id_mismatch(path, body)
    }
}

impl BodyId for RawNetworkPatch {
    type PathId = IfaceId;
    fn body_id(&self) -> &str {
        &self.iface_id
    }
    fn mismatch(path: &str, body: &str) -> RequestError {
        net_id_mismatch(path, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<NetworkInterfaceConfig, SchemaError> {
        NetworkInterfaceConfig::try_from(serde_json::from_str::<RawNetworkInterface>(json).unwrap())
    }

    #[test]
    fn validates_mac_mtu_and_tap_name() {
        let ok = parse(r#"{"iface_id":"eth0","host_dev_name":"tap0","guest_mac":"06:00:AC:10:00:02","mtu":1500}"#).unwrap();
        assert_eq!(ok.guest_mac.unwrap().to_string(), "06:00:ac:10:00:02");
        assert_eq!(
            parse(r#"{"iface_id":"eth0","host_dev_name":"tap0","mtu":67}"#),
            Err(SchemaError::InvalidMtu(67))
        );
        assert!(matches!(
            parse(r#"{"iface_id":"eth0","host_dev_name":"tap0","guest_mac":"x"}"#),
            Err(SchemaError::InvalidMac(_))
        ));
        assert!(matches!(
            parse(r#"{"iface_id":"eth0","host_dev_name":""}"#),
            Err(SchemaError::InvalidTapName(_))
        ));
    }

    #[test]
    fn serialises_like_firecracker() {
        let ok = parse(r#"{"iface_id":"eth0","host_dev_name":"tap0"}"#).unwrap();
        assert_eq!(
            serde_json::to_string(&ok).unwrap(),
            r#"{"iface_id":"eth0","host_dev_name":"tap0","guest_mac":null,"rx_rate_limiter":null,"tx_rate_limiter":null,"mtu":null}"#
        );
    }
}
