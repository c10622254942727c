use super::*;

const DEF: FigureDef = FigureDef {
    scenario: "startup",
    key: "wall",
    label: "exec to API ready (wall)",
    unit: "ms",
};

fn report(binaries: usize, figures: Vec<Figure>) -> Report {
    Report {
        machine: Machine {
            cpus: 2,
            cpu_model: "Test CPU".to_owned(),
            kernel: "6.18.0".to_owned(),
            kvm: "kvm_pvm (software hypervisor)".to_owned(),
        },
        date: "2026-11-26 18:00:00 UTC".to_owned(),
        command: "squib-bench --quick".to_owned(),
        binaries: ["/a/squib", "/b/firecracker"][..binaries]
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
        figures,
    }
}

#[test]
fn from_samples_without_samples_is_not_run_with_first_failure() {
    let o = Outcome::from_samples(vec![], &["boot failed".to_owned(), "x".to_owned()]);
    assert_eq!(
        o,
        Outcome::NotRun {
            reason: "boot failed".to_owned()
        }
    );
}

#[test]
fn from_samples_counts_failed_runs() {
    let o = Outcome::from_samples(vec![1.0, 3.0], &["timeout".to_owned()]);
    let Outcome::Measured {
        summary,
        failed_runs,
        first_failure,
        ..
    } = o
    else {
        panic!("expected a measurement");
    };
    assert_eq!((summary.median, failed_runs), (2.0, 1));
    assert_eq!(first_failure.as_deref(), Some("timeout"));
}

#[test]
fn ratios_are_b_over_a_only_when_both_measured() {
    let a = Outcome::from_samples(vec![10.0], &[]);
    let b = Outcome::from_samples(vec![15.0], &[]);
    let f = Figure::new(DEF, vec![a.clone(), b]);
    assert_eq!((f.ratio_median, f.ratio_p90), (Some(1.5), Some(1.5)));
    let missing = Outcome::NotRun {
        reason: "no TAP".to_owned(),
    };
    assert_eq!(
        Figure::new(DEF, vec![a.clone(), missing]).ratio_median,
        None
    );
    assert_eq!(Figure::new(DEF, vec![a]).ratio_median, None);
}

#[test]
fn markdown_single_binary_prints_numbers_and_reasons() {
    let measured = Figure::new(DEF, vec![Outcome::from_samples(vec![12.0, 14.0], &[])]);
    let skipped = Figure::not_run(
        FigureDef {
            scenario: "network",
            key: "rx",
            label: "guest rx",
            unit: "Gbit/s",
        },
        1,
        "no TAP | permission",
    );
    let md = report(1, vec![measured, skipped]).to_markdown();
    assert!(md.contains("- Command: `squib-bench --quick`"), "{md}");
    assert!(md.contains("kvm_pvm (software hypervisor)"), "{md}");
    assert!(
        md.contains("| startup | exec to API ready (wall) | ms | 13.0 | 13.8 |"),
        "{md}"
    );
    assert!(
        md.contains("| network | guest rx | Gbit/s | not run: no TAP \\| permission | – |"),
        "{md}"
    );
    let columns = |line: &str| line.matches(" | ").count();
    let rows: Vec<&str> = md.lines().filter(|l| l.starts_with("| ")).collect();
    assert!(rows.iter().all(|r| columns(r) == columns(rows[0])), "{md}");
}

#[test]
fn markdown_two_binaries_prints_ratio_column() {
    let f = Figure::new(
        DEF,
        vec![
            Outcome::from_samples(vec![10.0, 10.0], &[]),
            Outcome::from_samples(vec![5.0, 5.0], &[]),
        ],
    );
    let md = report(2, vec![f]).to_markdown();
    assert!(md.contains("- Binary B: `/b/firecracker`"), "{md}");
    assert!(
        md.contains("| 10.0 | 10.0 | 10.0 | 5.00 | 5.00 | 5.00 | 0.500 | 0.500 | 2/2 |"),
        "{md}"
    );
    let missing = Outcome::NotRun {
        reason: "no TAP".to_owned(),
    };
    let f = Figure::new(DEF, vec![Outcome::from_samples(vec![1.0], &[]), missing]);
    let md = report(2, vec![f]).to_markdown();
    assert!(
        md.contains("| 1.00 | 1.00 | 1.00 | not run: no TAP | – | – | – | – | 1/0 |"),
        "{md}"
    );
    let rows: Vec<&str> = md.lines().filter(|l| l.starts_with("| ")).collect();
    assert!(rows
        .iter()
        .all(|r| r.matches(" | ").count() == rows[0].matches(" | ").count()));
}

#[test]
fn json_tags_outcomes_and_flattens_figure_def() {
    let f = Figure::not_run(DEF, 1, "guest kit missing");
    let v: serde_json::Value = serde_json::from_str(&report(1, vec![f]).to_json()).unwrap();
    let fig = &v["figures"][0];
    assert_eq!(fig["scenario"], "startup");
    assert_eq!(fig["outcomes"][0]["status"], "not_run");
    assert_eq!(fig["outcomes"][0]["reason"], "guest kit missing");
    assert_eq!(v["machine"]["cpus"], 2);
}

#[test]
fn fmt_value_keeps_about_three_digits() {
    assert_eq!(fmt_value(1234.4), "1234");
    assert_eq!(fmt_value(12.34), "12.3");
    assert_eq!(fmt_value(1.234), "1.23");
    assert_eq!(fmt_value(0.01234), "0.012");
}

#[test]
fn long_reasons_are_shortened_in_the_table_only() {
    let reason = "x".repeat(500);
    let md = report(1, vec![Figure::not_run(DEF, 1, &reason)]).to_markdown();
    assert!(
        md.contains(&format!("not run: {}…", "x".repeat(159))),
        "{md}"
    );
    assert!(!md.contains(&"x".repeat(160)));
    let json = report(1, vec![Figure::not_run(DEF, 1, &reason)]).to_json();
    assert!(json.contains(&reason));
}
