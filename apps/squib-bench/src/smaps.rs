//! VMM memory overhead from `/proc/<pid>/smaps`, measured as Firecracker measures it
//! (`tests/host_tools/memory.py`): the sum of the RSS of every mapping whose size is not the
//! size of a guest memory region. What remains is the VMM's own code, heap, stacks and
//! device buffers.
//!
//! One deviation: the kernel merges an anonymous mapping with an adjacent one of the same
//! flags, so guest memory may show up a few pages larger than the region (squib's 128 MiB
//! shows as 128 MiB + 132 KiB). A mapping at most [`MERGE_SLACK_KIB`] larger than a region
//! therefore counts as guest memory too; the merged neighbour's few pages are lost.
//!
//! smaps is a list of mappings, each a header line (`start-end perms offset dev inode
//! [path]`) followed by `Key: value` lines; only `Size:` and `Rss:` (both in kB) matter here.

use std::path::Path;

use serde::Serialize;

/// How much larger than a guest region a mapping may be and still be that region, merged
/// with a small neighbour.
pub const MERGE_SLACK_KIB: u64 = 1024;

/// Errors reading or parsing smaps.
#[derive(Debug, thiserror::Error)]
pub enum SmapsError {
    /// The file could not be read (the process may have exited).
    #[error("cannot read {path}: {source}")]
    Read {
        /// The smaps path.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A `Size:`/`Rss:` line did not hold a number.
    #[error("smaps line {line}: bad value {text:?}")]
    BadValue {
        /// 1-based line number.
        line: usize,
        /// The offending line.
        text: String,
    },
    /// No mapping at all was found.
    #[error("smaps holds no mapping")]
    Empty,
}

/// One mapping's size and resident set, in KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Mapping {
    /// Virtual size.
    pub size_kib: u64,
    /// Resident set.
    pub rss_kib: u64,
}

/// RSS split into guest memory and everything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Overhead {
    /// RSS of the mappings that are not guest memory: the VMM's overhead.
    pub overhead_kib: u64,
    /// RSS of the mappings sized like a guest memory region.
    pub guest_rss_kib: u64,
    /// Number of mappings counted as overhead.
    pub mappings: usize,
}

/// Parses smaps text into its mappings.
pub fn parse(text: &str) -> Result<Vec<Mapping>, SmapsError> {
    let mut maps = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let Some(first) = line.split_whitespace().next() else {
            continue;
        };
        if !first.ends_with(':') {
            maps.push(Mapping::default());
            continue;
        }
        let field: fn(&mut Mapping, u64) = match first {
            "Size:" => |m: &mut Mapping, v| m.size_kib = v,
            "Rss:" => |m: &mut Mapping, v| m.rss_kib = v,
            _ => continue,
        };
        let value = line
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse::<u64>().ok());
        match (value, maps.last_mut()) {
            (Some(v), Some(map)) => field(map, v),
            _ => {
                return Err(SmapsError::BadValue {
                    line: i + 1,
                    text: line.to_owned(),
                })
            }
        }
    }
    if maps.is_empty() {
        return Err(SmapsError::Empty);
    }
    Ok(maps)
}

/// Splits the RSS of `maps` into guest memory (mappings whose size is one of
/// `guest_region_kib`, or up to [`MERGE_SLACK_KIB`] more) and overhead (all the others).
pub fn overhead(maps: &[Mapping], guest_region_kib: &[u64]) -> Overhead {
    let mut out = Overhead {
        overhead_kib: 0,
        guest_rss_kib: 0,
        mappings: 0,
    };
    for map in maps {
        let is_guest = guest_region_kib
            .iter()
            .any(|r| (*r..=r + MERGE_SLACK_KIB).contains(&map.size_kib));
        if is_guest {
            out.guest_rss_kib += map.rss_kib;
        } else {
            out.overhead_kib += map.rss_kib;
            out.mappings += 1;
        }
    }
    out
}

/// Reads `/proc/<pid>/smaps` and measures the overhead of a VMM with `guest_region_kib`.
pub fn measure(pid: u32, guest_region_kib: &[u64]) -> Result<Overhead, SmapsError> {
    let path = format!("/proc/{pid}/smaps");
    let text = std::fs::read_to_string(Path::new(&path))
        .map_err(|source| SmapsError::Read { path, source })?;
    Ok(overhead(&parse(&text)?, guest_region_kib))
}

/// The guest memory region sizes (KiB) of a Firecracker-layout x86_64 VM of `mem_mib`: RAM
/// below the 3 GiB MMIO hole is one region, the rest a second one above 4 GiB.
pub fn guest_regions_kib(mem_mib: u64) -> Vec<u64> {
    const HOLE_START_MIB: u64 = 3 * 1024;
    if mem_mib <= HOLE_START_MIB {
        vec![mem_mib * 1024]
    } else {
        vec![HOLE_START_MIB * 1024, (mem_mib - HOLE_START_MIB) * 1024]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
55d0c0a00000-55d0c0b00000 r-xp 00000000 08:01 1234 /usr/bin/vmm
Size:               1024 kB
KernelPageSize:        4 kB
Rss:                 800 kB
Pss:                 800 kB
VmFlags: rd ex mr mw me
7f0000000000-7f0008000000 rw-p 00000000 00:00 0
Size:             131072 kB
Rss:               20480 kB
VmFlags: rd wr mr mw me ac
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0 [stack]
Size:                132 kB
Rss:                  16 kB
";

    #[test]
    fn parse_reads_size_and_rss_of_each_mapping() {
        let maps = parse(SAMPLE).unwrap();
        assert_eq!(
            maps,
            vec![
                Mapping {
                    size_kib: 1024,
                    rss_kib: 800
                },
                Mapping {
                    size_kib: 131_072,
                    rss_kib: 20_480
                },
                Mapping {
                    size_kib: 132,
                    rss_kib: 16
                },
            ]
        );
    }

    #[test]
    fn overhead_excludes_mappings_of_guest_region_size() {
        let maps = parse(SAMPLE).unwrap();
        let o = overhead(&maps, &guest_regions_kib(128));
        assert_eq!(o.overhead_kib, 816);
        assert_eq!(o.guest_rss_kib, 20_480);
        assert_eq!(o.mappings, 2);
    }

    #[test]
    fn guest_region_merged_with_a_small_neighbour_is_still_guest_memory() {
        let maps = [
            Mapping {
                size_kib: 131_204,
                rss_kib: 16_444,
            },
            Mapping {
                size_kib: 131_072 + MERGE_SLACK_KIB + 4,
                rss_kib: 8,
            },
            Mapping {
                size_kib: 3948,
                rss_kib: 3948,
            },
        ];
        let o = overhead(&maps, &guest_regions_kib(128));
        assert_eq!(
            (o.guest_rss_kib, o.overhead_kib, o.mappings),
            (16_444, 3956, 2)
        );
    }

    #[test]
    fn overhead_counts_everything_when_no_mapping_matches() {
        let maps = parse(SAMPLE).unwrap();
        assert_eq!(
            overhead(&maps, &guest_regions_kib(1024)).overhead_kib,
            21_296
        );
    }

    #[test]
    fn parse_rejects_garbage_values_and_empty_input() {
        assert!(matches!(
            parse("00-10 r--p 0 0:0 0\nRss: lots kB\n"),
            Err(SmapsError::BadValue { line: 2, .. })
        ));
        assert!(matches!(
            parse("Rss: 4 kB\n"),
            Err(SmapsError::BadValue { .. })
        ));
        assert!(matches!(parse(""), Err(SmapsError::Empty)));
    }

    #[test]
    fn guest_regions_split_at_the_mmio_hole() {
        assert_eq!(guest_regions_kib(128), vec![131_072]);
        assert_eq!(guest_regions_kib(4096), vec![3_145_728, 1_048_576]);
    }

    #[test]
    fn measure_reads_this_process() {
        let o = measure(std::process::id(), &[]).unwrap();
        assert!(o.overhead_kib > 0, "a running process has resident pages");
    }
}
