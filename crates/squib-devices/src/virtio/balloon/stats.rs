//! The guest's memory statistics (virtio 1.2 §5.5.6.3) and their `GET /balloon/statistics`
//! form.
//!
//! The guest writes an array of packed `(u16 tag, u64 value)` records, little-endian. Tags
//! the device does not know are skipped (newer drivers add tags), and at most
//! [`MAX_STATS_RECORDS`] are read from one buffer, whatever length the guest claims.

use serde::{Deserialize, Serialize};

/// Bytes of one record.
pub const RECORD_SIZE: usize = 10;
/// Most records read from one buffer (the spec defines 16 tags; room for newer ones).
pub const MAX_STATS_RECORDS: usize = 64;

/// The latest statistics the guest sent, with the balloon's target and size, as
/// Firecracker's `BalloonStats` (absent fields are left out of the JSON).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct BalloonStats {
    /// Target size in 4 KiB pages.
    pub target_pages: u32,
    /// Size the guest reached, in pages.
    pub actual_pages: u32,
    /// Target in MiB.
    pub target_mib: u32,
    /// Size in MiB.
    pub actual_mib: u32,
    /// Memory swapped in (bytes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swap_in: Option<u64>,
    /// Memory swapped out (bytes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swap_out: Option<u64>,
    /// Major page faults.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub major_faults: Option<u64>,
    /// Minor page faults.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minor_faults: Option<u64>,
    /// Unused memory (bytes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub free_memory: Option<u64>,
    /// Memory the guest can use (bytes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_memory: Option<u64>,
    /// Memory available for new work without swapping (bytes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub available_memory: Option<u64>,
    /// Disk caches (bytes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_caches: Option<u64>,
    /// Successful hugetlb page allocations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hugetlb_allocations: Option<u64>,
    /// Failed hugetlb page allocations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hugetlb_failures: Option<u64>,
    /// OOM killer invocations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oom_kill: Option<u64>,
    /// Allocation stalls.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alloc_stall: Option<u64>,
    /// Pages scanned by kswapd.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub async_scan: Option<u64>,
    /// Pages scanned directly.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direct_scan: Option<u64>,
    /// Pages reclaimed by kswapd.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub async_reclaim: Option<u64>,
    /// Pages reclaimed directly.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direct_reclaim: Option<u64>,
}

impl BalloonStats {
    /// Record one `(tag, value)`; returns false for a tag the device does not know.
    pub fn update(&mut self, tag: u16, value: u64) -> bool {
        let slot = match tag {
            0 => &mut self.swap_in,
            1 => &mut self.swap_out,
            2 => &mut self.major_faults,
            3 => &mut self.minor_faults,
            4 => &mut self.free_memory,
            5 => &mut self.total_memory,
            6 => &mut self.available_memory,
            7 => &mut self.disk_caches,
            8 => &mut self.hugetlb_allocations,
            9 => &mut self.hugetlb_failures,
            10 => &mut self.oom_kill,
            11 => &mut self.alloc_stall,
            12 => &mut self.async_scan,
            13 => &mut self.direct_scan,
            14 => &mut self.async_reclaim,
            15 => &mut self.direct_reclaim,
            _ => return false,
        };
        *slot = Some(value);
        true
    }

    /// The guest-sent values as `(tag, value)` records, in tag order (for snapshots: the
    /// JSON form leaves absent fields out, which binary formats cannot read back).
    #[must_use]
    pub fn records(&self) -> Vec<(u16, u64)> {
        let fields = [
            self.swap_in,
            self.swap_out,
            self.major_faults,
            self.minor_faults,
            self.free_memory,
            self.total_memory,
            self.available_memory,
            self.disk_caches,
            self.hugetlb_allocations,
            self.hugetlb_failures,
            self.oom_kill,
            self.alloc_stall,
            self.async_scan,
            self.direct_scan,
            self.async_reclaim,
            self.direct_reclaim,
        ];
        (0u16..)
            .zip(fields)
            .filter_map(|(tag, v)| v.map(|v| (tag, v)))
            .collect()
    }

    /// Apply every record of `buf` (a trailing partial record is ignored); returns how many
    /// records had unknown tags.
    pub fn update_from(&mut self, buf: &[u8]) -> usize {
        let mut unknown = 0;
        for rec in buf.chunks_exact(RECORD_SIZE).take(MAX_STATS_RECORDS) {
            let tag = u16::from_le_bytes([rec[0], rec[1]]);
            let mut value = [0u8; 8];
            value.copy_from_slice(&rec[2..]);
            if !self.update(tag, u64::from_le_bytes(value)) {
                unknown += 1;
            }
        }
        unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(tag: u16, value: u64) -> Vec<u8> {
        let mut r = tag.to_le_bytes().to_vec();
        r.extend_from_slice(&value.to_le_bytes());
        r
    }

    #[test]
    fn parses_every_known_tag_and_skips_unknown_ones() {
        let mut buf = Vec::new();
        for tag in 0..16u16 {
            buf.extend(record(tag, 1000 + u64::from(tag)));
        }
        buf.extend(record(99, 5));
        buf.extend([1, 2, 3]);
        let mut s = BalloonStats::default();
        assert_eq!(s.update_from(&buf), 1);
        assert_eq!(s.swap_in, Some(1000));
        assert_eq!(s.free_memory, Some(1004));
        assert_eq!(s.total_memory, Some(1005));
        assert_eq!(s.hugetlb_failures, Some(1009));
        assert_eq!(s.direct_reclaim, Some(1015));
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json.as_object().unwrap().len(), 20);
        assert_eq!(json["available_memory"], 1006);
    }

    #[test]
    fn absent_fields_are_left_out() {
        let s = BalloonStats {
            target_pages: 256,
            target_mib: 1,
            ..BalloonStats::default()
        };
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            r#"{"target_pages":256,"actual_pages":0,"target_mib":1,"actual_mib":0}"#
        );
    }
}
