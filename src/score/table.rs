//! The FPIR calibration table a model manifest ships: score → false-positive identification rate, read from the
//! decision scores of non-mated searches at one gallery size and rescaled to any other.

use serde::{Deserialize, Serialize};

use super::fpir::{check_rate, rescale_fpir, table_lookup, TableLookup};
use super::ScoreError;

/// Empirical score → FPIR map built from the decision scores of non-mated searches against a gallery of
/// `gallery_size` identities, as written into the model manifest (`gallery_size`, `searches`, `scores = [...]`,
/// `fpir = [...]`).
///
/// Invariants (checked on construction and deserialisation): `scores` strictly increasing and finite, `fpir`
/// within `(0, 1]` and never increasing. Tables the evaluation harness builds also have `fpir` strictly
/// decreasing and starting at exactly 1 (the lowest observed score).
///
/// Estimate at score `s` ([`CalibrationTable::fpir_at`]):
/// - at a table point: the fraction of non-mated searches with decision score `>= s`;
/// - between two table points: log-linear interpolation (`ln FPIR` linear in score), which lies between the
///   neighbours' values; where the table keeps every observed score (the low-FPIR tail) that is never below
///   the empirical step value, elsewhere thinning keeps it within about 5 % of it;
/// - below the lowest observed score: 1;
/// - above the highest observed score: `1/(searches + 1)`, the resolution floor — the estimate is never 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "CalibrationTableFields")]
pub struct CalibrationTable {
    gallery_size: usize,
    searches: usize,
    scores: Vec<f32>,
    fpir: Vec<f64>,
}

/// Unchecked serialised form of [`CalibrationTable`].
#[derive(Debug, Clone, Deserialize)]
struct CalibrationTableFields {
    gallery_size: usize,
    searches: usize,
    scores: Vec<f32>,
    fpir: Vec<f64>,
}

impl TryFrom<CalibrationTableFields> for CalibrationTable {
    type Error = ScoreError;

    fn try_from(fields: CalibrationTableFields) -> Result<Self, ScoreError> {
        let invalid = |reason| Err(ScoreError::InvalidCalibrationTable { reason });
        if fields.gallery_size == 0 {
            return invalid("gallery_size must be at least 1");
        }
        if fields.searches == 0 {
            return invalid("searches must be at least 1");
        }
        if fields.scores.is_empty() || fields.scores.len() != fields.fpir.len() {
            return invalid("scores and fpir must be non-empty and of equal length");
        }
        if fields.scores.iter().any(|s| !s.is_finite()) {
            return invalid("scores must be finite");
        }
        if fields.scores.windows(2).any(|w| w[0] >= w[1]) {
            return invalid("scores must be strictly increasing");
        }
        if fields
            .fpir
            .iter()
            .any(|f| !(f.is_finite() && *f > 0.0 && *f <= 1.0))
        {
            return invalid("fpir values must lie in (0, 1]");
        }
        if fields.fpir.windows(2).any(|w| w[0] < w[1]) {
            return invalid("fpir must not increase with the score");
        }
        Ok(CalibrationTable {
            gallery_size: fields.gallery_size,
            searches: fields.searches,
            scores: fields.scores,
            fpir: fields.fpir,
        })
    }
}

impl CalibrationTable {
    /// A table from stored parts (e.g. a model manifest's `[calibration]`), checked against the invariants.
    pub fn from_parts(
        gallery_size: usize,
        searches: usize,
        scores: Vec<f32>,
        fpir: Vec<f64>,
    ) -> Result<Self, ScoreError> {
        CalibrationTable::try_from(CalibrationTableFields {
            gallery_size,
            searches,
            scores,
            fpir,
        })
    }

    /// Gallery size (enrolled identities) the non-mated searches ran against.
    pub fn gallery_size(&self) -> usize {
        self.gallery_size
    }

    /// Non-mated searches the table rests on.
    pub fn searches(&self) -> usize {
        self.searches
    }

    /// Table scores, strictly increasing.
    pub fn scores(&self) -> &[f32] {
        &self.scores
    }

    /// FPIR at each table score, never increasing.
    pub fn fpir(&self) -> &[f64] {
        &self.fpir
    }

    /// The smallest FPIR the table ever reports: `1/(searches + 1)`.
    pub fn resolution_floor(&self) -> f64 {
        1.0 / (self.searches as f64 + 1.0)
    }

    /// Estimated FPIR at the calibration gallery size for decision score `score` (rules on the type). A NaN
    /// score gets the most pessimistic estimate, 1.
    pub fn fpir_at(&self, score: f32) -> f64 {
        match table_lookup(&self.scores, &self.fpir, score) {
            TableLookup::Below => 1.0,
            TableLookup::Within(fpir) => fpir,
            TableLookup::Above => self.resolution_floor(),
        }
    }

    /// Lowest decision score whose estimated FPIR ([`CalibrationTable::fpir_at`]) is at most `target`.
    ///
    /// Targets of 1 give the lowest table score; targets between `1/(searches+1)` and the top table point give
    /// the next `f32` above the highest observed score; targets below `1/(searches+1)` cannot be supported by
    /// this calibration set and are an error.
    pub fn threshold_for_fpir(&self, target: f64) -> Result<f32, ScoreError> {
        let target = check_rate("calibration threshold", target)?;
        let floor = self.resolution_floor();
        if target < floor {
            return Err(ScoreError::BelowCalibrationResolution {
                target,
                floor,
                searches: self.searches,
            });
        }
        // First table point already at or below the target (fpir decreases along the table).
        let first_within = self.fpir.partition_point(|&f| f > target);
        let Some(&s_hi) = self.scores.get(first_within) else {
            let top = self.scores.last().copied().unwrap_or(f32::MAX);
            return Ok(top.next_up());
        };
        if first_within == 0 || self.fpir[first_within] == target {
            return Ok(s_hi);
        }
        let (s_lo, f_lo) = (
            f64::from(self.scores[first_within - 1]),
            self.fpir[first_within - 1],
        );
        let f_hi = self.fpir[first_within];
        let t = (target.ln() - f_lo.ln()) / (f_hi.ln() - f_lo.ln());
        let mut threshold = (s_lo + t * (f64::from(s_hi) - s_lo)) as f32;
        // The f64 → f32 rounding may land a step or two off either way; settle on the lowest f32 that meets
        // the target, staying inside the segment. The estimate is strictly monotone here, so a few steps do.
        for _ in 0..64 {
            if threshold >= s_hi || self.fpir_at(threshold) <= target {
                break;
            }
            threshold = threshold.next_up();
        }
        if self.fpir_at(threshold) > target {
            threshold = s_hi;
        }
        for _ in 0..64 {
            let lower = threshold.next_down();
            if f64::from(lower) <= s_lo || self.fpir_at(lower) > target {
                break;
            }
            threshold = lower;
        }
        Ok(threshold)
    }

    /// Per-comparison false-match rate implied by the FPIR estimate at `score`, assuming the `gallery_size`
    /// comparisons of a search fail independently: `p1 = 1 - (1 - FPIR)^(1/N)`.
    pub fn per_comparison_rate(&self, score: f32) -> f64 {
        rescale_fpir(self.fpir_at(score), 1.0 / self.gallery_size as f64)
    }

    /// FPIR at `score` for a gallery of `gallery_size` identities: `1 - (1 - p1)^N'` with `p1` from
    /// [`CalibrationTable::per_comparison_rate`], i.e. `1 - (1 - FPIR)^(N'/N)`. An approximation that holds
    /// when the decision score is the top-1 comparison score and comparisons are independent.
    pub fn fpir_at_gallery_size(&self, score: f32, gallery_size: usize) -> Result<f64, ScoreError> {
        if gallery_size == 0 {
            return Err(ScoreError::InvalidGallerySize);
        }
        let exponent = gallery_size as f64 / self.gallery_size as f64;
        Ok(rescale_fpir(self.fpir_at(score), exponent))
    }

    /// Lowest score whose FPIR for a gallery of `gallery_size` identities is at most `target`: the target is
    /// mapped back to the calibration gallery size (`1 - (1 - target)^(N/N')`) and inverted there.
    pub fn threshold_for_fpir_at_gallery_size(
        &self,
        target: f64,
        gallery_size: usize,
    ) -> Result<f32, ScoreError> {
        let target = check_rate("calibration threshold", target)?;
        if gallery_size == 0 {
            return Err(ScoreError::InvalidGallerySize);
        }
        let exponent = self.gallery_size as f64 / gallery_size as f64;
        let mut threshold = self.threshold_for_fpir(rescale_fpir(target, exponent))?;
        // The two rescalings need not round-trip exactly; step up until the forward estimate meets the target.
        for _ in 0..8 {
            if self.fpir_at_gallery_size(threshold, gallery_size)? <= target {
                break;
            }
            threshold = threshold.next_up();
        }
        Ok(threshold)
    }
}


#[cfg(test)]
mod tests {
    use super::*;

    /// The table of non-mated scores 0.1 0.2 0.2 0.3 0.5 0.5 0.5 0.9 (n = 8) against 100 identities: searches at
    /// or above each distinct score 0.1→8, 0.2→7, 0.3→5, 0.5→4, 0.9→1, so FPIR 1, .875, .625, .5, .125.
    fn calibration() -> CalibrationTable {
        CalibrationTable::from_parts(100, 8, vec![0.1, 0.2, 0.3, 0.5, 0.9], vec![1.0, 0.875, 0.625, 0.5, 0.125])
            .expect("valid parts")
    }

    #[test]
    fn calibration_table_interpolates_and_floors() {
        let table = calibration();
        assert_eq!(table.fpir_at(0.5), 0.5);
        assert_eq!(table.fpir_at(-3.0), 1.0);
        assert_eq!(table.fpir_at(f32::NAN), 1.0);
        assert_eq!(table.fpir_at(0.9), 0.125);
        // Beyond the highest observed score the estimate floors at 1/(n+1), never 0.
        assert_eq!(table.fpir_at(0.95), 1.0 / 9.0);
        assert_eq!(table.fpir_at(1e30), 1.0 / 9.0);
        // Halfway between 0.5 (0.5) and 0.9 (0.125), log-linear: sqrt(0.5 × 0.125) = 0.25.
        assert!((table.fpir_at(0.7) - 0.25).abs() < 1e-6);
        let mut previous = 1.0;
        for step in 0..=1200 {
            let estimate = table.fpir_at(step as f32 / 1000.0);
            assert!(estimate <= previous && estimate > 0.0, "monotone at step {step}");
            previous = estimate;
        }
    }

    #[test]
    fn calibration_threshold_inverts_the_estimate() {
        let table = calibration();
        assert_eq!(table.threshold_for_fpir(0.5).expect("in range"), 0.5);
        assert_eq!(table.threshold_for_fpir(1.0).expect("in range"), 0.1);
        // Between the top point (0.125) and the floor (1/9): just above the top score.
        assert_eq!(
            table.threshold_for_fpir(0.12).expect("in range"),
            0.9f32.next_up()
        );
        assert!(matches!(
            table.threshold_for_fpir(0.1),
            Err(ScoreError::BelowCalibrationResolution { searches: 8, .. })
        ));
        // FPIR 0.6 between 0.3 (0.625) and 0.5 (0.5): 0.3 + 0.2·ln(0.96)/ln(0.8) = 0.33659.
        let threshold = table.threshold_for_fpir(0.6).expect("in range");
        assert!((f64::from(threshold) - 0.336588).abs() < 1e-5, "{threshold}");
        for target in [0.9, 0.6, 0.25, 0.2, 0.13] {
            let threshold = table.threshold_for_fpir(target).expect("in range");
            assert!(table.fpir_at(threshold) <= target, "target {target}");
            assert!(
                table.fpir_at(threshold.next_down()) > target,
                "lowest for {target}"
            );
        }
    }

    #[test]
    fn calibration_adjusts_for_gallery_size() {
        let table = calibration();
        // p1 = 1 - 0.5^(1/100); at N' = 200: 1 - 0.5² = 0.75; at N' = 50: 1 - 0.5^0.5.
        assert!((table.per_comparison_rate(0.5) - (1.0 - 0.5f64.powf(0.01))).abs() < 1e-15);
        assert!((table.fpir_at_gallery_size(0.5, 200).expect("valid") - 0.75).abs() < 1e-12);
        assert!((table.fpir_at_gallery_size(0.5, 50).expect("valid") - (1.0 - 0.5f64.sqrt())).abs() < 1e-12);
        assert!(table.fpir_at_gallery_size(1e30, 1).expect("valid") > 0.0);
        let threshold = table
            .threshold_for_fpir_at_gallery_size(0.75, 200)
            .expect("in range");
        assert!((threshold - 0.5).abs() < 1e-6, "{threshold}");
        assert!(table.fpir_at_gallery_size(threshold, 200).expect("valid") <= 0.75);
        assert!(matches!(
            table.fpir_at_gallery_size(0.5, 0),
            Err(ScoreError::InvalidGallerySize)
        ));
    }


    #[test]
    fn calibration_table_round_trips_through_toml_and_validates() {
        let table = calibration();
        let text = toml::to_string(&table).expect("serialisable");
        assert!(text.contains("scores = [") && text.contains("fpir = [") && text.contains("searches = 8"));
        let back: CalibrationTable = toml::from_str(&text).expect("valid table");
        assert_eq!(back, table);
        let broken = text.replace("0.875", "0.4");
        assert!(toml::from_str::<CalibrationTable>(&broken).is_err(), "non-monotone fpir rejected");
        // A hand-thinned table with a plateau is accepted; duplicate scores or rising fpir are not.
        let plateau =
            CalibrationTable::from_parts(10, 50, vec![0.1, 0.2, 0.3], vec![0.5, 0.5, 0.1]).expect("valid");
        assert_eq!(plateau.threshold_for_fpir(0.5).expect("in range"), 0.1);
        assert!(CalibrationTable::from_parts(10, 50, vec![0.1, 0.1], vec![0.5, 0.4]).is_err());
        assert!(CalibrationTable::from_parts(10, 50, vec![0.1, 0.2], vec![0.4, 0.5]).is_err());
        assert!(CalibrationTable::from_parts(10, 50, vec![0.1, f32::NAN], vec![0.5, 0.4]).is_err());
        assert!(CalibrationTable::from_parts(0, 50, vec![0.1], vec![0.5]).is_err());
    }
}
