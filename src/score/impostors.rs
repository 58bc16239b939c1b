//! Per-comparison impostor rates with a fitted tail: how often one comparison of two different people scores at
//! or above a threshold, counted where a data set can count it and extrapolated beyond. The FPIR of the top-1
//! score at any gallery size follows from it.
//!
//! Why it exists: a table of non-mated *searches* at one gallery size resolves FPIR only down to one search in
//! the number run (642 on lfw-dev), so rescaled to 100,000 templates it says nothing below a per-comparison rate
//! of about 1e-6, while an alert threshold at 0.3 % FPIR needs 3e-8. Counting every impostor *comparison* of a
//! labelled folder (about 7 million on lfw-dev) reaches 1.4e-7; the exponential tail fitted to the highest
//! thousand scores carries it further, and every estimate made there says that it is an extrapolation.

use serde::{Deserialize, Serialize};

use super::fpir::{canonical, check_finite, check_rate, rescale_fpir, table_lookup, TableLookup};
use super::ScoreError;

/// Table points per decade of rate.
const POINTS_PER_DECADE: f64 = 10.0;
/// The table stops where this many impostor comparisons remain at or above its last score: above it, counts are
/// too small to read a rate from, and the fitted tail takes over.
const TABLE_END_EXCEEDANCES: usize = 30;
/// The tail's scale is fitted on the highest this many comparisons (at most 1 % of them).
const TAIL_FIT_EXCEEDANCES: usize = 1000;

/// Score → per-comparison impostor rate, as a model manifest's `[calibration.comparisons]` holds it.
///
/// - Within the table (`scores[0]` to the last score): the fraction of counted impostor comparisons at or above
///   the score, log-linear between points (as [`super::CalibrationTable`] interpolates FPIR).
/// - Below the lowest score: 1.
/// - Above the last score `s_e` (rate `r_e`): the exponential tail `r_e · exp(-(s - s_e) / tail_scale)`, whose
///   scale is the mean excess of the highest comparisons over the one below them (the maximum-likelihood
///   exponential fit). Such estimates are extrapolations ([`ImpostorRates::is_extrapolated`]).
///
/// Invariants (checked on construction and deserialisation): scores finite and strictly increasing, rates in
/// `(0, 1]` and never increasing, `tail_scale` finite and positive, `comparisons` at least 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "ImpostorRatesFields")]
pub struct ImpostorRates {
    /// Impostor comparisons counted.
    comparisons: u64,
    /// How many of the highest comparisons the tail scale was fitted on.
    tail_fit: usize,
    tail_scale: f64,
    scores: Vec<f32>,
    rates: Vec<f64>,
}

/// Unchecked serialised form of [`ImpostorRates`].
#[derive(Debug, Clone, Deserialize)]
struct ImpostorRatesFields {
    comparisons: u64,
    tail_fit: usize,
    tail_scale: f64,
    scores: Vec<f32>,
    rates: Vec<f64>,
}

impl TryFrom<ImpostorRatesFields> for ImpostorRates {
    type Error = ScoreError;

    fn try_from(f: ImpostorRatesFields) -> Result<Self, ScoreError> {
        let invalid = |reason| Err(ScoreError::InvalidImpostorRates { reason });
        if f.comparisons == 0 {
            return invalid("comparisons must be at least 1");
        }
        if f.scores.is_empty() || f.scores.len() != f.rates.len() {
            return invalid("scores and rates must be non-empty and of equal length");
        }
        if f.scores.iter().any(|s| !s.is_finite()) || f.scores.windows(2).any(|w| w[0] >= w[1]) {
            return invalid("scores must be finite and strictly increasing");
        }
        if f.rates.iter().any(|r| !(r.is_finite() && *r > 0.0 && *r <= 1.0)) || f.rates.windows(2).any(|w| w[0] < w[1]) {
            return invalid("rates must lie in (0, 1] and never increase with the score");
        }
        if !(f.tail_scale.is_finite() && f.tail_scale > 0.0) {
            return invalid("tail_scale must be finite and positive");
        }
        Ok(ImpostorRates {
            comparisons: f.comparisons,
            tail_fit: f.tail_fit,
            tail_scale: f.tail_scale,
            scores: f.scores,
            rates: f.rates,
        })
    }
}

/// Builds the rates from the scores of impostor comparisons (order does not matter; `scores` is left sorted
/// in descending order).
///
/// Table points sit at exceedance counts `n · 10^(-j/10)` for `j = 0, 1, …` down to 30 (ties merged: each point's
/// rate is the exact fraction at or above its score). The tail scale is the mean excess of the highest
/// `k = min(1000, n/100)` scores over the `(k+1)`-th highest; at least 3,000 comparisons are needed so that
/// `k >= 30`.
pub fn impostor_rates(scores: &mut [f32]) -> Result<ImpostorRates, ScoreError> {
    let n = scores.len();
    let tail_fit = TAIL_FIT_EXCEEDANCES.min(n / 100);
    if tail_fit < TABLE_END_EXCEEDANCES {
        return Err(ScoreError::TooFewImpostorComparisons { found: n, needed: 100 * TABLE_END_EXCEEDANCES });
    }
    for (index, s) in scores.iter_mut().enumerate() {
        *s = check_finite(index, *s)?;
    }
    scores.sort_unstable_by(|a, b| b.total_cmp(a));
    // Comparisons scoring at or above `s`, from the descending order.
    let at_or_above = |s: f32| scores.partition_point(|&x| x >= s);
    let mut points: Vec<(f32, f64)> = Vec::new();
    for j in 0.. {
        let target = (n as f64 * 10f64.powf(-f64::from(j) / POINTS_PER_DECADE)).round() as usize;
        let count = target.max(TABLE_END_EXCEEDANCES);
        let score = scores[count - 1];
        if points.last().is_none_or(|&(last, _)| score > last) {
            points.push((score, at_or_above(score) as f64 / n as f64));
        }
        if count == TABLE_END_EXCEEDANCES {
            break;
        }
    }
    let threshold = f64::from(scores[tail_fit]);
    let excess: f64 = scores[..tail_fit].iter().map(|&s| f64::from(s) - threshold).sum::<f64>() / tail_fit as f64;
    // Scores are finite (checked above), so the mean excess is a number: zero when the top scores all tie.
    if excess <= 0.0 {
        return Err(ScoreError::InvalidImpostorRates { reason: "the highest impostor scores are all equal" });
    }
    ImpostorRates::try_from(ImpostorRatesFields {
        comparisons: n as u64,
        tail_fit,
        tail_scale: excess,
        scores: points.iter().map(|p| p.0).collect(),
        rates: points.iter().map(|p| p.1).collect(),
    })
}

impl ImpostorRates {
    pub fn comparisons(&self) -> u64 {
        self.comparisons
    }

    pub fn tail_fit(&self) -> usize {
        self.tail_fit
    }

    pub fn tail_scale(&self) -> f64 {
        self.tail_scale
    }

    /// Table scores, strictly increasing.
    pub fn scores(&self) -> &[f32] {
        &self.scores
    }

    /// Rate at each table score, never increasing.
    pub fn rates(&self) -> &[f64] {
        &self.rates
    }

    fn table_end(&self) -> (f64, f64) {
        let last = self.scores.len() - 1;
        (f64::from(self.scores[last]), self.rates[last])
    }

    /// Whether the rate at `score` comes from the fitted tail rather than from counted comparisons.
    pub fn is_extrapolated(&self, score: f32) -> bool {
        f64::from(score) > self.table_end().0
    }

    /// Estimated fraction of impostor comparisons scoring at or above `score` (rules on the type). NaN gets 1.
    pub fn rate_at(&self, score: f32) -> f64 {
        match table_lookup(&self.scores, &self.rates, score) {
            TableLookup::Below => 1.0,
            TableLookup::Within(rate) => rate,
            TableLookup::Above => {
                let (s_end, r_end) = self.table_end();
                r_end * (-(f64::from(canonical(score)) - s_end) / self.tail_scale).exp()
            }
        }
    }

    /// Lowest score whose estimated rate ([`ImpostorRates::rate_at`]) is at most `target`.
    pub fn threshold_for_rate(&self, target: f64) -> Result<f32, ScoreError> {
        let target = check_rate("impostor rate threshold", target)?;
        let first_within = self.rates.partition_point(|&r| r > target);
        let estimate = match self.scores.get(first_within) {
            Some(&s_hi) if first_within == 0 || self.rates[first_within] == target => f64::from(s_hi),
            Some(&s_hi) => {
                let (s_lo, r_lo, r_hi) = (f64::from(self.scores[first_within - 1]), self.rates[first_within - 1], self.rates[first_within]);
                s_lo + (target.ln() - r_lo.ln()) / (r_hi.ln() - r_lo.ln()) * (f64::from(s_hi) - s_lo)
            }
            None => {
                let (s_end, r_end) = self.table_end();
                s_end + self.tail_scale * (r_end / target).ln()
            }
        };
        // Settle the f64 → f32 rounding on the lowest f32 that meets the target (the estimate is monotone).
        let mut threshold = estimate as f32;
        for _ in 0..64 {
            if self.rate_at(threshold) <= target {
                break;
            }
            threshold = threshold.next_up();
        }
        for _ in 0..64 {
            let lower = threshold.next_down();
            if self.rate_at(lower) > target {
                break;
            }
            threshold = lower;
        }
        Ok(threshold)
    }

    /// FPIR of the top-1 score `score` against a gallery of `gallery_size` templates: `1 - (1 - p)^N` with `p`
    /// the per-comparison rate, i.e. the comparisons of one search taken as independent. Probes that resemble
    /// many people make comparisons dependent, which lowers the true FPIR below this (Jensen), so the estimate
    /// errs on the side of fewer alerts.
    pub fn fpir_at_gallery_size(&self, score: f32, gallery_size: usize) -> Result<f64, ScoreError> {
        if gallery_size == 0 {
            return Err(ScoreError::InvalidGallerySize);
        }
        Ok(rescale_fpir(self.rate_at(score), gallery_size as f64))
    }

    /// Lowest top-1 score whose FPIR at `gallery_size` ([`ImpostorRates::fpir_at_gallery_size`]) is at most
    /// `target`.
    pub fn threshold_for_fpir_at_gallery_size(&self, target: f64, gallery_size: usize) -> Result<f32, ScoreError> {
        let target = check_rate("calibration threshold", target)?;
        if gallery_size == 0 {
            return Err(ScoreError::InvalidGallerySize);
        }
        let per_comparison = rescale_fpir(target, 1.0 / gallery_size as f64);
        let mut threshold = self.threshold_for_rate(per_comparison.max(f64::MIN_POSITIVE))?;
        for _ in 0..64 {
            if self.fpir_at_gallery_size(threshold, gallery_size)? <= target {
                break;
            }
            threshold = threshold.next_up();
        }
        Ok(threshold)
    }
}

/// One row of [`tail_check`]: at the score where the whole set counts `counted` comparisons at or above, the rate
/// the whole set counts and the rate a fit on a tenth of the comparisons predicts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TailCheck {
    pub counted: usize,
    pub score: f32,
    pub counted_rate: f64,
    pub predicted_rate: f64,
    /// Whether the prediction came from the subsample's fitted tail.
    pub extrapolated: bool,
    /// The same exponential anchored where it was fitted (the subsample's `k+1`-th highest score, at rate `k/m`)
    /// instead of at the table's last point: the textbook peaks-over-threshold estimate, whose anchor rests on
    /// `k` counts rather than 30.
    pub predicted_from_fit_threshold: f64,
}

/// How far the fitted tail can be trusted: rates built from every `keep_one_in`-th comparison (in the order
/// given, which must not follow the scores) are compared with the counts of all of them at the scores where all
/// of them count `exceedances` comparisons. The subsample's table ends `keep_one_in` times higher in rate, so
/// the lower rows test the tail where the truth is still counted.
pub fn tail_check(scores: &[f32], keep_one_in: usize, exceedances: &[usize]) -> Result<Vec<TailCheck>, ScoreError> {
    let mut subsample: Vec<f32> = scores.iter().step_by(keep_one_in.max(1)).copied().collect();
    let fitted = impostor_rates(&mut subsample)?;
    // `subsample` is now sorted descending: the fit threshold is its (k+1)-th highest score.
    let fit_threshold = f64::from(subsample[fitted.tail_fit()]);
    let fit_rate = fitted.tail_fit() as f64 / subsample.len() as f64;
    let mut all = scores.to_vec();
    // Checks the scores and sorts them descending.
    impostor_rates(&mut all)?;
    let n = all.len();
    Ok(exceedances
        .iter()
        .filter(|&&c| c >= 1 && c <= n)
        .map(|&c| {
            let score = all[c - 1];
            let counted = all.partition_point(|&x| x >= score);
            TailCheck {
                counted,
                score,
                counted_rate: counted as f64 / n as f64,
                predicted_rate: fitted.rate_at(score),
                extrapolated: fitted.is_extrapolated(score),
                predicted_from_fit_threshold: fit_rate
                    * (-(f64::from(score) - fit_threshold) / fitted.tail_scale()).exp(),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Impostor scores 0.000, 0.001, …, 3.999 (4,000 comparisons): the count at or above `s` is `4000 - 1000·s`.
    fn ladder() -> Vec<f32> {
        (0..4000).map(|i| i as f32 / 1000.0).collect()
    }

    #[test]
    fn table_points_are_exact_counts_at_decade_steps_down_to_thirty() {
        let rates = impostor_rates(&mut ladder()).unwrap();
        assert_eq!(rates.comparisons(), 4000);
        // j = 0: count 4000 → the lowest score, rate 1; j = 10: count 400 → score 3.6, rate 0.1.
        assert_eq!((rates.scores()[0], rates.rates()[0]), (0.0, 1.0));
        assert_eq!((rates.scores()[10], rates.rates()[10]), (3.6, 0.1));
        // j = 11: round(4000 · 10^-1.1) = 318 → the 318th highest is 3.682; the last point is count 30: 3.970.
        assert_eq!((rates.scores()[11], rates.rates()[11]), (3.682, 318.0 / 4000.0));
        assert_eq!((*rates.scores().last().unwrap(), *rates.rates().last().unwrap()), (3.97, 30.0 / 4000.0));
        assert_eq!(rates.scores().len(), 23, "j = 0..=21 (counts 4000 down to 32) plus the end at 30");
    }

    #[test]
    fn the_tail_scale_is_the_mean_excess_of_the_top_k() {
        // k = min(1000, 4000/100) = 40: the top 40 are 3.960..3.999 over the 41st, 3.959: excess 0.001..0.040,
        // mean 0.0205.
        let rates = impostor_rates(&mut ladder()).unwrap();
        assert_eq!(rates.tail_fit(), 40);
        assert!((rates.tail_scale() - 0.0205).abs() < 1e-6, "{}", rates.tail_scale());
        // Beyond the table: 30/4000 · exp(-(s - 3.97) / 0.0205).
        let s = 4.01f32;
        let expected = 30.0 / 4000.0 * (-(f64::from(s) - f64::from(3.97f32)) / rates.tail_scale()).exp();
        assert!((rates.rate_at(s) - expected).abs() < 1e-12);
        assert!(rates.is_extrapolated(s) && !rates.is_extrapolated(3.97));
    }

    #[test]
    fn rates_interpolate_log_linearly_and_thresholds_invert_them() {
        let rates = impostor_rates(&mut ladder()).unwrap();
        assert_eq!(rates.rate_at(-1.0), 1.0);
        assert_eq!(rates.rate_at(3.6), 0.1);
        let mid = rates.rate_at(3.641);
        let geometric = (0.1f64.ln() + (3.641 - 3.6) / (3.682 - 3.6) * ((318.0f64 / 4000.0).ln() - 0.1f64.ln())).exp();
        assert!((mid - geometric).abs() < 1e-6, "{mid} vs {geometric}");
        for target in [0.5, 0.1, 0.05, 1e-3, 1e-6, 1e-9] {
            let t = rates.threshold_for_rate(target).unwrap();
            assert!(rates.rate_at(t) <= target, "target {target}: rate {} at {t}", rates.rate_at(t));
            assert!(rates.rate_at(t.next_down()) > target, "target {target}: {t} is not the lowest");
        }
    }

    #[test]
    fn fpir_at_a_gallery_size_treats_comparisons_as_independent() {
        let rates = impostor_rates(&mut ladder()).unwrap();
        // At 3.6 the per-comparison rate is 0.1: one comparison 0.1, two 0.19, ten 1 - 0.9^10.
        assert!((rates.fpir_at_gallery_size(3.6, 1).unwrap() - 0.1).abs() < 1e-12);
        assert!((rates.fpir_at_gallery_size(3.6, 2).unwrap() - 0.19).abs() < 1e-12);
        assert!((rates.fpir_at_gallery_size(3.6, 10).unwrap() - (1.0 - 0.9f64.powi(10))).abs() < 1e-12);
        for (target, gallery) in [(0.01, 1_000usize), (3e-3, 100_000), (3e-3, 10_000_000)] {
            let t = rates.threshold_for_fpir_at_gallery_size(target, gallery).unwrap();
            assert!(rates.fpir_at_gallery_size(t, gallery).unwrap() <= target);
            assert!(rates.fpir_at_gallery_size(t.next_down().next_down(), gallery).unwrap() > target * 0.999);
        }
        assert!(matches!(rates.fpir_at_gallery_size(3.6, 0), Err(ScoreError::InvalidGallerySize)));
    }

    #[test]
    fn the_tail_check_compares_a_tenth_with_the_whole() {
        // 40,000 comparisons 0.0000..3.9999 in an order unrelated to the score; every 10th keeps 4,000 of them.
        let mut scores: Vec<f32> = (0..40_000).map(|i| ((i * 7919) % 40_000) as f32 / 10_000.0).collect();
        scores.swap(0, 1);
        let rows = tail_check(&scores, 10, &[3000, 30, 3]).unwrap();
        assert_eq!(rows.len(), 3);
        // Where the whole set counts 3,000 the tenth still counts (300 ≥ 30): no extrapolation, rates agree.
        assert_eq!((rows[0].counted, rows[0].score), (3000, 3.7));
        assert!(!rows[0].extrapolated && (rows[0].predicted_rate / rows[0].counted_rate - 1.0).abs() < 0.02, "{:?}", rows[0]);
        // Where it counts 30 and 3 the tenth has passed its table's end (30 of 4,000 ≈ 300 of 40,000).
        assert!(rows[1].extrapolated && rows[2].extrapolated);
        assert_eq!(rows[2].counted_rate, 3.0 / 40_000.0);
        // The tenth: 4,000 scores, k = 40, anchored at its 41st highest score with rate 40 / 4,000.
        let mut tenth: Vec<f32> = scores.iter().step_by(10).copied().collect();
        let scale = impostor_rates(&mut tenth).unwrap().tail_scale();
        let expected = 0.01 * (-(f64::from(rows[1].score) - f64::from(tenth[40])) / scale).exp();
        assert!((rows[1].predicted_from_fit_threshold / expected - 1.0).abs() < 1e-3, "{:?} vs {expected}", rows[1]);
    }

    #[test]
    fn too_few_or_bad_scores_are_refused_and_stored_tables_are_checked() {
        assert!(matches!(
            impostor_rates(&mut vec![0.5; 2999]),
            Err(ScoreError::TooFewImpostorComparisons { found: 2999, .. })
        ));
        assert!(matches!(impostor_rates(&mut vec![0.5; 5000]), Err(ScoreError::InvalidImpostorRates { .. })));
        let mut with_nan = ladder();
        with_nan[7] = f32::NAN;
        assert!(matches!(impostor_rates(&mut with_nan), Err(ScoreError::NonFiniteScore { .. })));

        let good = impostor_rates(&mut ladder()).unwrap();
        let text = toml::to_string(&good).unwrap();
        assert_eq!(toml::from_str::<ImpostorRates>(&text).unwrap(), good);
        let bad = text.replace(&format!("tail_scale = {}", good.tail_scale()), "tail_scale = -1.0");
        assert!(toml::from_str::<ImpostorRates>(&bad).is_err());
    }
}
