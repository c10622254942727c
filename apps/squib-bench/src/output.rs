//! Where the report goes: `--out` keeps the rest of an existing `BENCHMARKS.md`.
//!
//! The report is one section between [`BEGIN`] and [`END`]; other benchmarks (the guest
//! block and network ones, hand-written notes) keep their own sections in the same file, so
//! a rerun replaces this section only, and appends it when the file has none.

/// Marker opening squib-bench's section.
pub const BEGIN: &str = "<!-- squib-bench:begin -->";
/// Marker closing squib-bench's section.
pub const END: &str = "<!-- squib-bench:end -->";

/// `existing` with its squib-bench section replaced by `report` (wrapped in the markers),
/// or with the section appended when `existing` has none.
pub fn splice_report(existing: &str, report: &str) -> String {
    let section = format!("{BEGIN}\n{}\n{END}\n", report.trim_end());
    match (existing.find(BEGIN), existing.find(END)) {
        (Some(begin), Some(end)) if begin < end => {
            let rest = &existing[end + END.len()..];
            let rest = rest.strip_prefix('\n').unwrap_or(rest);
            format!("{}{section}{rest}", &existing[..begin])
        }
        _ if existing.trim().is_empty() => section,
        _ => format!("{}\n\n{section}", existing.trim_end()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_only_its_own_section() {
        let file = format!("# Notes\n\n{BEGIN}\nold\n{END}\n<!-- net:begin -->\nnet\n");
        let out = splice_report(&file, "new report\n");
        assert_eq!(
            out,
            format!("# Notes\n\n{BEGIN}\nnew report\n{END}\n<!-- net:begin -->\nnet\n")
        );
    }

    #[test]
    fn appends_to_a_file_without_markers_and_fills_an_empty_one() {
        let out = splice_report("# Hand-written\n", "report");
        assert_eq!(out, format!("# Hand-written\n\n{BEGIN}\nreport\n{END}\n"));
        assert_eq!(
            splice_report("", "report"),
            format!("{BEGIN}\nreport\n{END}\n")
        );
    }
}
