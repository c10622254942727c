//! `PUT /mmds/config` and the MMDS data store bodies (`PUT`/`PATCH /mmds`).

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::error::SchemaError;
use super::ids::IfaceId;

use crate::error::RequestError;
use crate::routes::{parse, RouteInput};

/// The default MMDS address.
pub const DEFAULT_MMDS_IPV4: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);

/// MMDS protocol version.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
pub enum MmdsVersion {
    /// Token-less (deprecated).
    #[default]
    V1,
    /// Session tokens.
    V2,
}

/// `PUT /mmds/config` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMmdsConfig {
    network_interfaces: Vec<String>,
    #[serde(default)]
    version: MmdsVersion,
    #[serde(default)]
    ipv4_address: Option<Ipv4Addr>,
    #[serde(default)]
    imds_compat: bool,
}

/// A validated MMDS configuration. Whether each interface exists is the VMM's check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MmdsConfig {
    /// Protocol version.
    pub version: MmdsVersion,
    /// Interfaces whose traffic to the address reaches MMDS.
    pub network_interfaces: Vec<IfaceId>,
    /// Link-local address MMDS answers on.
    pub ipv4_address: Ipv4Addr,
    /// EC2 IMDS compatible responses.
    pub imds_compat: bool,
}

impl MmdsConfig {
    /// `true` for V1, which Firecracker answers with a `Deprecation` header.
    #[must_use]
    pub fn is_deprecated_version(&self) -> bool {
        self.version == MmdsVersion::V1
    }
}

impl TryFrom<RawMmdsConfig> for MmdsConfig {
    type Error = SchemaError;

    fn try_from(raw: RawMmdsConfig) -> Result<Self, SchemaError> {
        if raw.network_interfaces.is_empty() {
            return Err(SchemaError::EmptyMmdsInterfaces);
        }
        let ipv4_address = raw.ipv4_address.unwrap_or(DEFAULT_MMDS_IPV4);
        let [a, b, c, _] = ipv4_address.octets();
        if a != 169 || b != 254 || c == 0 || c == 255 {
            return Err(SchemaError::InvalidMmdsIpv4);
        }
        let network_interfaces = raw
            .network_interfaces
            .into_iter()
            .map(IfaceId::try_from)
            .collect::<Result<_, _>>()?;
        Ok(Self {
            version: raw.version,
            network_interfaces,
            ipv4_address,
            imds_compat: raw.imds_compat,
        })
    }
}

/// The JSON document of `PUT`/`PATCH /mmds` (any JSON; the store checks its shape and size).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct MmdsContents(pub serde_json::Value);

/// `PUT /mmds/config`, with the deprecation warning for V1.
pub(crate) fn parse_put_config(input: &RouteInput<'_>) -> Result<MmdsConfig, RequestError> {
    let config: MmdsConfig = parse::validated::<RawMmdsConfig, _>(input)?;
    if config.is_deprecated_version() {
        input.deprecate("PUT /mmds/config: V1 is deprecated. Use V2 instead.");
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<MmdsConfig, SchemaError> {
        MmdsConfig::try_from(serde_json::from_str::<RawMmdsConfig>(json).unwrap())
    }

    #[test]
    fn address_must_be_link_local() {
        assert_eq!(
            parse(r#"{"network_interfaces":["eth0"]}"#)
                .unwrap()
                .ipv4_address,
            DEFAULT_MMDS_IPV4
        );
        assert_eq!(
            parse(r#"{"network_interfaces":["eth0"],"ipv4_address":"169.254.0.1"}"#),
            Err(SchemaError::InvalidMmdsIpv4)
        );
        assert_eq!(
            parse(r#"{"network_interfaces":["eth0"],"ipv4_address":"10.0.0.1"}"#),
            Err(SchemaError::InvalidMmdsIpv4)
        );
        assert_eq!(
            parse(r#"{"network_interfaces":[]}"#),
            Err(SchemaError::EmptyMmdsInterfaces)
        );
        assert_eq!(
            parse(r#"{"network_interfaces":["a-b"]}"#),
            Err(SchemaError::InvalidIdChars)
        );
    }
}
