//! The version of the state-file format, and which versions this build can read.

use std::fmt;

/// A state-file format version: `major.minor.patch`, each stored as a little-endian `u16`.
///
/// A reader accepts a file whose major version equals its own and whose minor version is not
/// newer than its own; the patch number never affects compatibility.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    /// Incompatible layout or payload changes.
    pub major: u16,
    /// Backwards-compatible additions: an older reader cannot read them, a newer one can.
    pub minor: u16,
    /// Changes that do not touch what is stored.
    pub patch: u16,
}

/// The format this build writes, and the newest it reads.
pub const SNAPSHOT_VERSION: Version = Version::new(1, 0, 0);

impl Version {
    /// `major.minor.patch`.
    pub const fn new(major: u16, minor: u16, patch: u16) -> Self {
        Self {
            major,
            minor,
            patch,
        }
    }

    /// Whether a reader of version `self` can read a file written as `file`: same major, and a
    /// minor that is not newer than the reader's.
    pub const fn can_read(self, file: Version) -> bool {
        file.major == self.major && file.minor <= self.minor
    }

    /// `X.Y.Z`, without the leading `v` of [`Display`](fmt::Display) (the form error messages
    /// use).
    pub fn semver(self) -> String {
        format!("{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// `vX.Y.Z`, as `--describe-snapshot` prints it.
impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}.{}.{}", self.major, self.minor, self.patch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_semver_forms() {
        let v = Version::new(1, 22, 333);
        assert_eq!(v.to_string(), "v1.22.333");
        assert_eq!(v.semver(), "1.22.333");
        assert_eq!(SNAPSHOT_VERSION.to_string(), "v1.0.0");
    }

    #[test]
    fn reader_accepts_same_major_and_older_or_equal_minor() {
        let reader = Version::new(2, 3, 0);
        assert!(reader.can_read(Version::new(2, 3, 0)));
        assert!(reader.can_read(Version::new(2, 0, 9)));
        assert!(reader.can_read(Version::new(2, 3, 65535)));
        assert!(!reader.can_read(Version::new(2, 4, 0)));
        assert!(!reader.can_read(Version::new(1, 3, 0)));
        assert!(!reader.can_read(Version::new(3, 0, 0)));
    }
}
