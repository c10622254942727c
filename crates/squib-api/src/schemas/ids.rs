//! Resource ID newtypes (`[A-Za-z0-9_]{1,64}`) and MAC addresses.

use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};

use super::error::SchemaError;

/// The longest resource ID squib accepts.
pub const MAX_ID_LEN: usize = 64;

/// Check a resource ID: non-empty, at most 64 bytes, `[A-Za-z0-9_]` only.
///
/// # Errors
/// [`SchemaError::EmptyId`], [`SchemaError::IdTooLong`] or [`SchemaError::InvalidIdChars`].
pub fn validate_id(id: &str) -> Result<(), SchemaError> {
    if id.is_empty() {
        return Err(SchemaError::EmptyId);
    }
    if !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(SchemaError::InvalidIdChars);
    }
    if id.len() > MAX_ID_LEN {
        return Err(SchemaError::IdTooLong);
    }
    Ok(())
}

macro_rules! resource_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The ID as text.
            #[must_use]
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = SchemaError;
            fn try_from(id: String) -> Result<Self, SchemaError> {
                validate_id(&id)?;
                Ok(Self(id))
            }
        }

        impl TryFrom<&str> for $name {
            type Error = SchemaError;
            fn try_from(id: &str) -> Result<Self, SchemaError> {
                Self::try_from(id.to_owned())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

resource_id!(
    /// A block (or pmem) device ID.
    DriveId
);
resource_id!(
    /// A network interface ID.
    IfaceId
);

/// A MAC address, written `aa:bb:cc:dd:ee:ff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl FromStr for MacAddr {
    type Err = SchemaError;

    fn from_str(s: &str) -> Result<Self, SchemaError> {
        let invalid = || SchemaError::InvalidMac(s.to_owned());
        let mut bytes = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut bytes {
            let part = parts.next().ok_or_else(invalid)?;
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(invalid());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| invalid())?;
        }
        if parts.next().is_some() {
            return Err(invalid());
        }
        Ok(Self(bytes))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl Serialize for MacAddr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_accepts_alphanumerics_and_underscore_up_to_64() {
        assert!(DriveId::try_from("root_1").is_ok());
        assert!(DriveId::try_from("a".repeat(64)).is_ok());
        assert_eq!(
            DriveId::try_from("a".repeat(65)),
            Err(SchemaError::IdTooLong)
        );
        assert_eq!(IfaceId::try_from(""), Err(SchemaError::EmptyId));
        assert_eq!(IfaceId::try_from("eth-0"), Err(SchemaError::InvalidIdChars));
        assert_eq!(IfaceId::try_from("é"), Err(SchemaError::InvalidIdChars));
    }

    #[test]
    fn mac_parses_and_prints_lowercase() {
        let mac: MacAddr = "AA:bb:0c:dd:ee:0F".parse().unwrap();
        assert_eq!(mac.to_string(), "aa:bb:0c:dd:ee:0f");
        for bad in [
            "",
            "aa:bb:cc:dd:ee",
            "aa:bb:cc:dd:ee:ff:00",
            "aa:bb:cc:dd:ee:f",
            "zz:bb:cc:dd:ee:ff",
            "+a:bb:cc:dd:ee:ff",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
    }
}
