//! The description of one guest memory region a VMM sends its page-fault handler: a JSON
//! array of these objects, with Firecracker's field names, so handlers written for
//! Firecracker work unchanged.

use serde::{Deserialize, Serialize};

/// One registered guest memory region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestRegionUffdMapping {
    /// Where the region starts in the VMM's address space: the addresses page faults report.
    pub base_host_virt_addr: u64,
    /// Size of the region in bytes.
    pub size: u64,
    /// Where the region's contents start in the snapshot memory file.
    pub offset: u64,
    /// Size in bytes of the pages backing the region: the unit to fill.
    pub page_size: u64,
    /// Firecracker's deprecated name of `page_size`, and despite the name also in bytes.
    /// Sent for handlers that still read it; a handler reads `page_size`.
    #[serde(default)]
    pub page_size_kib: u64,
}

impl GuestRegionUffdMapping {
    /// One past the region's last byte in the VMM, `None` if that overflows.
    pub fn end(&self) -> Option<u64> {
        self.base_host_virt_addr.checked_add(self.size)
    }

    /// Whether the VMM address `address` lies in the region.
    pub fn contains(&self, address: u64) -> bool {
        address >= self.base_host_virt_addr && address - self.base_host_virt_addr < self.size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_with_firecrackers_field_names() {
        let mapping = GuestRegionUffdMapping {
            base_host_virt_addr: 0x7f00_0000_0000,
            size: 0x10_0000,
            offset: 0x2000,
            page_size: 4096,
            page_size_kib: 4096,
        };
        assert_eq!(
            serde_json::to_string(&mapping).unwrap(),
            r#"{"base_host_virt_addr":139637976727552,"size":1048576,"offset":8192,"page_size":4096,"page_size_kib":4096}"#
        );
    }

    #[test]
    fn contains_is_half_open() {
        let mapping = GuestRegionUffdMapping {
            base_host_virt_addr: 0x1000,
            size: 0x2000,
            offset: 0,
            page_size: 4096,
            page_size_kib: 4096,
        };
        assert!(!mapping.contains(0xfff));
        assert!(mapping.contains(0x1000));
        assert!(mapping.contains(0x2fff));
        assert!(!mapping.contains(0x3000));
        assert_eq!(mapping.end(), Some(0x3000));
    }
}
