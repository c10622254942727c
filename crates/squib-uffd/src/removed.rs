//! The ranges of guest memory the guest has discarded since the restore: their contents are
//! zeros now, not the memory file's.

use std::collections::BTreeMap;

/// Disjoint, non-adjacent half-open address ranges, keyed by start.
#[derive(Debug, Default)]
pub(crate) struct RemovedRanges {
    ranges: BTreeMap<u64, u64>,
}

impl RemovedRanges {
    /// Adds `[start, end)`, merging it with the ranges it overlaps or touches.
    pub(crate) fn insert(&mut self, mut start: u64, mut end: u64) {
        if start >= end {
            return;
        }
        if let Some((&before, &before_end)) = self.ranges.range(..=start).next_back() {
            if before_end >= start {
                start = before;
                end = end.max(before_end);
                self.ranges.remove(&before);
            }
        }
        while let Some((&next, &next_end)) = self.ranges.range(start..=end).next() {
            end = end.max(next_end);
            self.ranges.remove(&next);
        }
        self.ranges.insert(start, end);
    }

    /// The end of the removed range holding `address`, if one does.
    pub(crate) fn covering(&self, address: u64) -> Option<u64> {
        self.ranges
            .range(..=address)
            .next_back()
            .filter(|&(_, &end)| end > address)
            .map(|(_, &end)| end)
    }

    /// The start of the first removed range after `address`.
    pub(crate) fn next_after(&self, address: u64) -> Option<u64> {
        let from = address.checked_add(1)?;
        self.ranges.range(from..).next().map(|(&start, _)| start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_and_touching_ranges_merge() {
        let mut removed = RemovedRanges::default();
        removed.insert(0x3000, 0x4000);
        removed.insert(0x1000, 0x2000);
        removed.insert(0x8000, 0x9000);
        removed.insert(0x2000, 0x3000);
        assert_eq!(removed.ranges.len(), 2);
        assert_eq!(removed.covering(0x1000), Some(0x4000));
        assert_eq!(removed.covering(0x3fff), Some(0x4000));
        removed.insert(0x3800, 0x8800);
        assert_eq!(removed.ranges.len(), 1);
        assert_eq!(removed.covering(0x1000), Some(0x9000));
        removed.insert(0x5000, 0x5000);
        assert_eq!(removed.ranges.len(), 1);
    }

    #[test]
    fn lookups_are_half_open() {
        let mut removed = RemovedRanges::default();
        removed.insert(0x2000, 0x3000);
        removed.insert(0x5000, 0x6000);
        assert_eq!(removed.covering(0x1fff), None);
        assert_eq!(removed.covering(0x3000), None);
        assert_eq!(removed.next_after(0), Some(0x2000));
        assert_eq!(removed.next_after(0x2000), Some(0x5000));
        assert_eq!(removed.next_after(0x5000), None);
        assert_eq!(removed.next_after(u64::MAX), None);
    }
}
