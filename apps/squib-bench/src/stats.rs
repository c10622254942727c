//! Summary statistics of one figure's samples: median, p90, p99, min/max, mean and standard
//! deviation.
//!
//! Percentiles interpolate linearly between the two closest ranks (the "R-7" definition that
//! numpy and most spreadsheets use), so the median of an even count is the mean of the two
//! middle samples and a single sample is its own p90. Non-finite samples are dropped: a
//! figure is never computed from a NaN.

use serde::Serialize;

/// The statistics reported for one figure.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// Number of samples.
    pub n: usize,
    /// 50th percentile.
    pub median: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Smallest sample.
    pub min: f64,
    /// Largest sample.
    pub max: f64,
    /// Arithmetic mean.
    pub mean: f64,
    /// Sample standard deviation (n - 1 in the denominator; 0 for one sample).
    pub stddev: f64,
}

impl Summary {
    /// Summarises `samples`; `None` when there is no finite sample.
    pub fn of(samples: &[f64]) -> Option<Summary> {
        let mut sorted: Vec<f64> = samples.iter().copied().filter(|s| s.is_finite()).collect();
        if sorted.is_empty() {
            return None;
        }
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let mean = sorted.iter().sum::<f64>() / n as f64;
        let stddev = if n > 1 {
            let var = sorted.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
            var.sqrt()
        } else {
            0.0
        };
        Some(Summary {
            n,
            median: percentile(&sorted, 50.0),
            p90: percentile(&sorted, 90.0),
            p99: percentile(&sorted, 99.0),
            min: sorted[0],
            max: sorted[n - 1],
            mean,
            stddev,
        })
    }
}

/// The `p`th percentile (0..=100) of `sorted`, which must be sorted and non-empty.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = (p / 100.0).clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let low = rank.floor() as usize;
    let high = rank.ceil() as usize;
    let weight = rank - low as f64;
    sorted[low] + (sorted[high] - sorted[low]) * weight
}

/// `b / a`, or `None` when `a` is zero or either value is not finite.
pub fn ratio(a: f64, b: f64) -> Option<f64> {
    let r = b / a;
    (a != 0.0 && r.is_finite()).then_some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_or_non_finite_samples_have_no_summary() {
        assert_eq!(Summary::of(&[]), None);
        assert_eq!(Summary::of(&[f64::NAN, f64::INFINITY]), None);
    }

    #[test]
    fn single_sample_is_every_percentile_with_zero_spread() {
        let s = Summary::of(&[7.5]).unwrap();
        assert_eq!((s.n, s.median, s.p90, s.p99), (1, 7.5, 7.5, 7.5));
        assert_eq!((s.min, s.max, s.stddev), (7.5, 7.5, 0.0));
    }

    #[test]
    fn median_of_even_count_is_mean_of_middle_pair() {
        let s = Summary::of(&[4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!(s.median, 2.5);
        assert_eq!((s.min, s.max), (1.0, 4.0));
    }

    #[test]
    fn percentiles_interpolate_between_ranks() {
        let samples: Vec<f64> = (1..=11).map(f64::from).collect();
        let s = Summary::of(&samples).unwrap();
        assert_eq!(s.median, 6.0);
        assert_eq!(s.p90, 10.0);
        assert!((s.p99 - 10.9).abs() < 1e-9, "p99 {}", s.p99);
    }

    #[test]
    fn stddev_uses_sample_denominator() {
        let s = Summary::of(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]).unwrap();
        assert_eq!(s.mean, 5.0);
        assert!((s.stddev - (32.0f64 / 7.0).sqrt()).abs() < 1e-9);
    }

    #[test]
    fn nan_samples_are_dropped_not_propagated() {
        let s = Summary::of(&[1.0, f64::NAN, 3.0]).unwrap();
        assert_eq!((s.n, s.median), (2, 2.0));
    }

    #[test]
    fn ratio_is_b_over_a_and_refuses_zero_denominator() {
        assert_eq!(ratio(2.0, 3.0), Some(1.5));
        assert_eq!(ratio(0.0, 3.0), None);
        assert_eq!(ratio(f64::NAN, 3.0), None);
    }
}
