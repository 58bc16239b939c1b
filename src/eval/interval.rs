//! Confidence intervals of a measured rate: with the few events a small FPIR gives (a handful of false positives
//! in a few hundred searches, often none), the interval says more than the rate itself.

use serde::Serialize;

/// The normal quantile of a two-sided 95 % interval.
pub(crate) const Z_95: f64 = 1.959_963_984_540_054;

/// A rate of `events` in `trials` and its two-sided 95 % Wilson score interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RateInterval {
    pub events: usize,
    pub trials: usize,
    pub rate: f64,
    pub low: f64,
    pub high: f64,
}

impl RateInterval {
    /// `events / trials` with its 95 % Wilson interval; 0 trials give the uninformative `[0, 1]` and rate 0.
    pub fn wilson_95(events: usize, trials: usize) -> RateInterval {
        let (low, high) = wilson_interval(events, trials, Z_95);
        let rate = if trials == 0 { 0.0 } else { events as f64 / trials as f64 };
        RateInterval { events, trials, rate, low, high }
    }
}

/// The Wilson score interval of `events` in `trials` at normal quantile `z`. Unlike `p ± z·sqrt(p(1−p)/n)` it
/// stays inside `[0, 1]` and does not collapse to a point when no event was seen, which is the usual case at an
/// FPIR of 0.1 % with a few hundred searches.
pub(crate) fn wilson_interval(events: usize, trials: usize, z: f64) -> (f64, f64) {
    if trials == 0 {
        return (0.0, 1.0);
    }
    let n = trials as f64;
    let p = events.min(trials) as f64 / n;
    let z2 = z * z;
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = z / (1.0 + z2 / n) * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_matches_the_closed_form_at_known_points() {
        // 0 of 321: the upper end is z²/(n + z²) = 3.8415/324.84 = 0.011826.
        let (low, high) = wilson_interval(0, 321, Z_95);
        assert_eq!(low, 0.0);
        assert!((high - 3.841_459 / (321.0 + 3.841_459)).abs() < 1e-9, "{high}");
        // 5 of 100 (a textbook case): 0.02154 to 0.11175.
        let (low, high) = wilson_interval(5, 100, Z_95);
        assert!((low - 0.021_54).abs() < 5e-5 && (high - 0.111_75).abs() < 5e-5, "{low} {high}");
        // Every event: the mirror image of none.
        let (low, high) = wilson_interval(321, 321, Z_95);
        assert!((1.0 - low - 3.841_459 / (321.0 + 3.841_459)).abs() < 1e-9 && high == 1.0);
    }

    #[test]
    fn the_interval_holds_the_rate_and_narrows_with_more_trials() {
        for (events, trials) in [(1, 10), (3, 321), (30, 3210), (0, 5)] {
            let r = RateInterval::wilson_95(events, trials);
            assert!(r.low <= r.rate && r.rate <= r.high, "{r:?}");
        }
        let few = RateInterval::wilson_95(3, 321);
        let many = RateInterval::wilson_95(30, 3210);
        assert!(many.high - many.low < few.high - few.low);
        assert_eq!(
            RateInterval::wilson_95(0, 0),
            RateInterval { events: 0, trials: 0, rate: 0.0, low: 0.0, high: 1.0 }
        );
    }
}
