//! The scenarios and the driver that alternates binaries between their runs.
//!
//! A scenario is a function that performs one run on one binary and returns named samples
//! (`(key, Ok(value))`, or `(key, Err(reason))` when that figure could not be measured in
//! this run). [`alternate`] calls it round after round, A then B, so that slow drift of a
//! noisy machine hits both binaries alike, and collects each figure's samples per binary.

pub mod api;
pub mod boot;
pub mod churn;
pub mod snapshot;
pub mod startup;
pub mod unavailable;

use std::path::Path;

use crate::report::{Figure, FigureDef, Outcome};

/// Samples from one run: figure key and value (or why it is missing). A key may repeat.
pub type Samples = Vec<(&'static str, Result<f64, String>)>;

/// Runs `run(binary_index, round)` for `rounds` rounds over `binaries` binaries, alternating,
/// and turns the samples into one [`Figure`] per def. A run's `Err` counts as a failure of
/// every figure for that binary.
pub fn alternate(
    defs: &[FigureDef],
    binaries: &[&Path],
    rounds: usize,
    mut run: impl FnMut(usize, usize) -> Result<Samples, String>,
) -> Vec<Figure> {
    let n = binaries.len();
    let mut samples = vec![vec![Vec::new(); n]; defs.len()];
    let mut failures = vec![vec![Vec::<String>::new(); n]; defs.len()];
    let scenario = defs.first().map_or("?", |d| d.scenario);
    for round in 0..rounds {
        for (bin, path) in binaries.iter().enumerate() {
            let result = run(bin, round);
            let status = match &result {
                Ok(_) => "ok".to_owned(),
                Err(e) => format!("failed: {e}"),
            };
            eprintln!(
                "squib-bench: {scenario}: {} round {}/{rounds}: {status}",
                path.display(),
                round + 1
            );
            match result {
                Ok(values) => {
                    for (key, value) in values {
                        let Some(i) = defs.iter().position(|d| d.key == key) else {
                            continue;
                        };
                        match value {
                            Ok(v) => samples[i][bin].push(v),
                            Err(e) => failures[i][bin].push(e),
                        }
                    }
                }
                Err(e) => failures.iter_mut().for_each(|f| f[bin].push(e.clone())),
            }
        }
    }
    defs.iter()
        .zip(samples.into_iter().zip(failures))
        .map(|(def, (s, f))| {
            let outcomes = s
                .into_iter()
                .zip(f)
                .map(|(s, f)| Outcome::from_samples(s, &f))
                .collect();
            Figure::new(*def, outcomes)
        })
        .collect()
}

/// `Duration` in milliseconds.
pub fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `Duration` in microseconds.
pub fn us(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFS: [FigureDef; 2] = [
        FigureDef {
            scenario: "t",
            key: "x",
            label: "x",
            unit: "ms",
        },
        FigureDef {
            scenario: "t",
            key: "y",
            label: "y",
            unit: "ms",
        },
    ];

    #[test]
    fn alternate_runs_a_b_a_b_and_splits_samples_per_binary() {
        let mut order = Vec::new();
        let bins = [Path::new("/a"), Path::new("/b")];
        let figs = alternate(&DEFS, &bins, 2, |bin, round| {
            order.push((bin, round));
            let v = (bin * 10 + round) as f64;
            Ok(vec![("x", Ok(v)), ("x", Ok(v + 0.5)), ("unknown", Ok(1.0))])
        });
        assert_eq!(order, vec![(0, 0), (1, 0), (0, 1), (1, 1)]);
        let Outcome::Measured { samples, .. } = &figs[0].outcomes[1] else {
            panic!("B measured");
        };
        assert_eq!(samples, &vec![10.0, 10.5, 11.0, 11.5]);
        assert!(figs[0].ratio_median.is_some());
        assert!(matches!(figs[1].outcomes[0], Outcome::NotRun { .. }));
    }

    #[test]
    fn failed_runs_become_reasons_or_failure_counts() {
        let bins = [Path::new("/a")];
        let figs = alternate(&DEFS, &bins, 3, |_, round| match round {
            0 => Err("boot timed out".to_owned()),
            _ => Ok(vec![
                ("x", Ok(1.0)),
                ("y", Err("no metrics line".to_owned())),
            ]),
        });
        let Outcome::Measured { failed_runs, .. } = &figs[0].outcomes[0] else {
            panic!("x measured in two runs");
        };
        assert_eq!(*failed_runs, 1);
        assert_eq!(
            figs[1].outcomes[0],
            Outcome::NotRun {
                reason: "boot timed out".to_owned()
            }
        );
    }

    #[test]
    fn unit_conversions() {
        let d = std::time::Duration::from_micros(1500);
        assert_eq!((ms(d), us(d)), (1.5, 1500.0));
    }
}
