//! Where the report goes: `--out` keeps the rest of an existing `BENCHMARKS.md`.
//!
//! The report is one section between `<!-- NAME:begin -->` and `<!-- NAME:end -->` (NAME is
//! `--section`, [`DEFAULT_SECTION`] unless given); other benchmarks (the guest block and
//! network ones, a snapshot run, hand-written notes) keep their own sections in the same
//! file, so a rerun replaces its section only, and appends it when the file has none.

/// The section a run writes unless told otherwise.
pub const DEFAULT_SECTION: &str = "squib-bench";

/// The markers opening and closing section `name`.
pub fn markers(name: &str) -> (String, String) {
    (
        format!("<!-- {name}:begin -->"),
        format!("<!-- {name}:end -->"),
    )
}

/// `existing` with its section `name` replaced by `report` (wrapped in the markers), or
/// with the section appended when `existing` has none.
pub fn splice_report(existing: &str, report: &str, name: &str) -> String {
    let (begin_marker, end_marker) = markers(name);
    let section = format!("{begin_marker}\n{}\n{end_marker}\n", report.trim_end());
    let begin = existing.find(&begin_marker);
    let end = begin.and_then(|b| existing[b..].find(&end_marker).map(|e| b + e));
    match (begin, end) {
        (Some(begin), Some(end)) => {
            let rest = &existing[end + end_marker.len()..];
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
        let (b, e) = markers(DEFAULT_SECTION);
        let file = format!("# Notes\n\n{b}\nold\n{e}\n<!-- net:begin -->\nnet\n");
        let out = splice_report(&file, "new report\n", DEFAULT_SECTION);
        assert_eq!(
            out,
            format!("# Notes\n\n{b}\nnew report\n{e}\n<!-- net:begin -->\nnet\n")
        );
    }

    #[test]
    fn a_named_section_leaves_the_default_one_alone() {
        let (b, e) = markers(DEFAULT_SECTION);
        let file =
            format!("{b}\nsuite\n{e}\n\n<!-- snap:begin -->\nold\n<!-- snap:end -->\ntail\n");
        let out = splice_report(&file, "new", "snap");
        assert_eq!(
            out,
            format!("{b}\nsuite\n{e}\n\n<!-- snap:begin -->\nnew\n<!-- snap:end -->\ntail\n")
        );
        // A section whose name extends another's is not mistaken for it.
        let out = splice_report(&out, "x", "squib");
        assert!(out.contains(&format!("{b}\nsuite\n{e}")), "{out}");
        assert!(
            out.ends_with("<!-- squib:begin -->\nx\n<!-- squib:end -->\n"),
            "{out}"
        );
    }

    #[test]
    fn appends_to_a_file_without_markers_and_fills_an_empty_one() {
        let (b, e) = markers(DEFAULT_SECTION);
        let out = splice_report("# Hand-written\n", "report", DEFAULT_SECTION);
        assert_eq!(out, format!("# Hand-written\n\n{b}\nreport\n{e}\n"));
        assert_eq!(
            splice_report("", "report", DEFAULT_SECTION),
            format!("{b}\nreport\n{e}\n")
        );
    }

    #[test]
    fn an_end_marker_before_the_begin_marker_is_not_a_section() {
        let (b, e) = markers("s");
        let file = format!("{e}\nx\n{b}\n");
        let out = splice_report(&file, "r", "s");
        assert!(out.ends_with(&format!("{b}\nr\n{e}\n")), "{out}");
        assert!(out.starts_with(&format!("{e}\nx\n{b}\n")), "{out}");
    }
}
