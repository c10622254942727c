//! The results of a run and their two renderings: a Markdown table for humans and JSON for
//! tools.
//!
//! Every figure has one [`Outcome`] per measured binary: either its samples and their
//! [`Summary`], or the reason it was not run. A figure that could not be measured is never
//! printed as a number. With two binaries, the table shows B/A ratios of the medians and
//! p90s, which survive a noisy machine better than absolute figures.

use serde::Serialize;

use crate::machine::Machine;
use crate::stats::{ratio, Summary};

/// What a figure is: where it belongs, what it is called and its unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FigureDef {
    /// Scenario name (`startup`, `api`, `boot 1x128`, ...).
    pub scenario: &'static str,
    /// Key the scenario's runs use for this figure.
    pub key: &'static str,
    /// Human label.
    pub label: &'static str,
    /// Unit of the samples (`ms`, `us`, `KiB`, `VM/s`).
    pub unit: &'static str,
}

/// One binary's result for one figure.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// Measured: the summary, the raw samples in run order, and how many runs failed.
    Measured {
        /// Statistics of `samples`.
        summary: Summary,
        /// The samples, in the order they were taken.
        samples: Vec<f64>,
        /// Runs that produced no sample for this figure.
        failed_runs: usize,
        /// The first failure's reason, if any run failed.
        first_failure: Option<String>,
    },
    /// Not measured, and why.
    NotRun {
        /// One sentence saying why.
        reason: String,
    },
}

impl Outcome {
    /// Builds the outcome of `samples` and `failures` (reasons of runs without a sample).
    pub fn from_samples(samples: Vec<f64>, failures: &[String]) -> Outcome {
        match Summary::of(&samples) {
            Some(summary) => Outcome::Measured {
                summary,
                samples,
                failed_runs: failures.len(),
                first_failure: failures.first().cloned(),
            },
            None => Outcome::NotRun {
                reason: failures
                    .first()
                    .cloned()
                    .unwrap_or_else(|| "no run produced a sample".to_owned()),
            },
        }
    }

    fn summary(&self) -> Option<&Summary> {
        match self {
            Outcome::Measured { summary, .. } => Some(summary),
            Outcome::NotRun { .. } => None,
        }
    }
}

/// A figure and its outcome for each binary (same order as [`Report::binaries`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Figure {
    /// What was measured.
    #[serde(flatten)]
    pub def: FigureDef,
    /// One outcome per binary.
    pub outcomes: Vec<Outcome>,
    /// B/A of the medians, when two binaries were both measured.
    pub ratio_median: Option<f64>,
    /// B/A of the p90s, when two binaries were both measured.
    pub ratio_p90: Option<f64>,
}

impl Figure {
    /// A figure from its outcomes, computing the ratios.
    pub fn new(def: FigureDef, outcomes: Vec<Outcome>) -> Figure {
        let pair = match outcomes.as_slice() {
            [a, b] => a.summary().zip(b.summary()),
            _ => None,
        };
        Figure {
            def,
            ratio_median: pair.and_then(|(a, b)| ratio(a.median, b.median)),
            ratio_p90: pair.and_then(|(a, b)| ratio(a.p90, b.p90)),
            outcomes,
        }
    }

    /// The same reason for every binary.
    pub fn not_run(def: FigureDef, binaries: usize, reason: &str) -> Figure {
        let outcome = Outcome::NotRun {
            reason: reason.to_owned(),
        };
        Figure::new(def, vec![outcome; binaries])
    }
}

/// A whole run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// The machine it ran on.
    pub machine: Machine,
    /// UTC date and time of the run (`YYYY-MM-DD HH:MM:SS UTC`).
    pub date: String,
    /// The command line that produced it.
    pub command: String,
    /// The measured binaries: A, then B if comparing.
    pub binaries: Vec<String>,
    /// Every figure, in scenario order.
    pub figures: Vec<Figure>,
}

impl Report {
    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// The report as Markdown: run description, then the table.
    pub fn to_markdown(&self) -> String {
        let m = &self.machine;
        let mut out = String::new();
        out.push_str(&format!("- Date: {}\n", self.date));
        out.push_str(&format!("- Command: `{}`\n", self.command));
        for (name, bin) in ["A", "B"].iter().zip(&self.binaries) {
            out.push_str(&format!("- Binary {name}: `{bin}`\n"));
        }
        out.push_str(&format!(
            "- Machine: {} CPUs, {}; kernel {}; /dev/kvm: {}\n\n",
            m.cpus, m.cpu_model, m.kernel, m.kvm
        ));
        if self.binaries.len() == 2 {
            out.push_str(&self.table_two());
        } else {
            out.push_str(&self.table_one());
        }
        out
    }

    fn table_one(&self) -> String {
        let mut out = String::from(
            "| scenario | figure | unit | median | p90 | p99 | min | max | stddev | n |\n\
             |---|---|---|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for f in &self.figures {
            let d = &f.def;
            let cells = match &f.outcomes[..] {
                [o, ..] => outcome_cells(o),
                [] => not_run_cells("no binary measured", 5),
            };
            out.push_str(&format!(
                "| {} | {} | {} | {cells} |\n",
                d.scenario, d.label, d.unit
            ));
        }
        out
    }

    fn table_two(&self) -> String {
        let mut out = String::from(
            "| scenario | figure | unit | A median | A p90 | A p99 | B median | B p90 | B p99 | \
             B/A median | B/A p90 | n A/B |\n\
             |---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for f in &self.figures {
            let d = &f.def;
            let [a, b] = &f.outcomes[..] else { continue };
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {}/{} |\n",
                d.scenario,
                d.label,
                d.unit,
                two_cells(a),
                two_cells(b),
                ratio_cell(f.ratio_median),
                ratio_cell(f.ratio_p90),
                count(a),
                count(b),
            ));
        }
        out
    }
}

/// Formats a value with about three significant digits.
pub fn fmt_value(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn outcome_cells(o: &Outcome) -> String {
    match o {
        Outcome::Measured {
            summary: s,
            failed_runs,
            ..
        } => {
            let n = if *failed_runs > 0 {
                format!("{} ({failed_runs} failed)", s.n)
            } else {
                s.n.to_string()
            };
            [s.median, s.p90, s.p99, s.min, s.max, s.stddev]
                .map(fmt_value)
                .join(" | ")
                + " | "
                + &n
        }
        Outcome::NotRun { reason } => not_run_cells(reason, 5),
    }
}

fn not_run_cells(reason: &str, empty: usize) -> String {
    let mut cells = vec![format!("not run: {}", escape(reason))];
    cells.extend(std::iter::repeat_n("–".to_owned(), empty + 1));
    cells.join(" | ")
}

/// Median, p90 and p99 cells, or the reason and two empty cells.
fn two_cells(o: &Outcome) -> String {
    match o {
        Outcome::Measured { summary: s, .. } => [s.median, s.p90, s.p99].map(fmt_value).join(" | "),
        Outcome::NotRun { reason } => format!("not run: {} | – | –", escape(reason)),
    }
}

fn ratio_cell(r: Option<f64>) -> String {
    r.map_or("–".to_owned(), |r| format!("{r:.3}"))
}

fn count(o: &Outcome) -> usize {
    o.summary().map_or(0, |s| s.n)
}

/// Longest reason printed in a table cell (the JSON has it whole).
const MAX_REASON: usize = 160;

/// Keeps a reason inside one table cell, shortened to [`MAX_REASON`] characters.
fn escape(text: &str) -> String {
    let short: String = if text.chars().count() > MAX_REASON {
        text.chars().take(MAX_REASON - 1).chain(['…']).collect()
    } else {
        text.to_owned()
    };
    short.replace('|', "\\|").replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests;
