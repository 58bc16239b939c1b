//! The rate arithmetic under every score → rate map: score canonicalisation and checks, log-linear lookup in a
//! table of decreasing rates, and the rescaling of a rate from one gallery size to another.

use super::ScoreError;

/// Maps `-0.0` to `0.0` so that `total_cmp` ordering agrees with IEEE `>=` decisions.
pub(crate) fn canonical(score: f32) -> f32 {
    score + 0.0
}

/// The score itself, canonical, when it is finite; `index` names it in the error.
pub(crate) fn check_finite(index: usize, value: f32) -> Result<f32, ScoreError> {
    if value.is_finite() {
        Ok(canonical(value))
    } else {
        Err(ScoreError::NonFiniteScore { index, value })
    }
}

/// The rate itself when it lies in `(0, 1]`; `what` names it in the error.
pub(crate) fn check_rate(what: &'static str, value: f64) -> Result<f64, ScoreError> {
    if value.is_finite() && value > 0.0 && value <= 1.0 {
        Ok(value)
    } else {
        Err(ScoreError::InvalidRate { what, value })
    }
}

/// Where a score falls in a table of strictly increasing scores and positive, never increasing rates.
pub(super) enum TableLookup {
    /// Below the lowest score (or NaN): every trial is at or above it.
    Below,
    /// At a point, its rate; between two, `ln rate` interpolated linearly in the score (so the result lies
    /// between the neighbours' rates).
    Within(f64),
    /// Above the highest score: the table says nothing there.
    Above,
}

pub(super) fn table_lookup(scores: &[f32], rates: &[f64], score: f32) -> TableLookup {
    if score.is_nan() {
        return TableLookup::Below;
    }
    let score = canonical(score);
    // Index of the first table score above `score`.
    let above = scores.partition_point(|&s| s <= score);
    if above == 0 {
        return TableLookup::Below;
    }
    let below = above - 1;
    if scores[below] == score {
        return TableLookup::Within(rates[below]);
    }
    let (Some(&s_hi), Some(&r_hi)) = (scores.get(above), rates.get(above)) else {
        return TableLookup::Above;
    };
    let (s_lo, r_lo) = (f64::from(scores[below]), rates[below]);
    let t = (f64::from(score) - s_lo) / (f64::from(s_hi) - s_lo);
    TableLookup::Within((r_lo.ln() + t * (r_hi.ln() - r_lo.ln())).exp().clamp(r_hi, r_lo))
}

/// `1 - (1 - fpir)^exponent`, evaluated with `ln_1p`/`exp_m1` so tiny rates keep their precision.
pub(super) fn rescale_fpir(fpir: f64, exponent: f64) -> f64 {
    if fpir >= 1.0 {
        return 1.0;
    }
    -(exponent * (-fpir).ln_1p()).exp_m1()
}
