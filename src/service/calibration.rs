//! Scores people can act on: the decision statistic identification mode thresholds, and the estimated
//! false-positive identification rate (FPIR) of a score at the current gallery size, from the impostor
//! distribution shipped in the recognizer's manifest.

use serde::Serialize;

use crate::eval::metrics::CalibrationTable;
use crate::manifest::CalibrationSpec;

use super::ServiceError;

/// The number identification mode compares with a watchlist's threshold. The calibration table is made for one
/// statistic, and the service computes exactly that one.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "name", rename_all = "lowercase")]
pub enum DecisionStatistic {
    /// The best candidate's similarity.
    Top1,
    /// The best candidate's similarity minus the mean of the next `cohort` candidates' similarities.
    Margin { cohort: usize },
}

impl DecisionStatistic {
    /// The statistic for a ranked list of per-subject similarities (best first); `None` for an empty list.
    pub fn evaluate(&self, ranked: &[f32]) -> Option<f32> {
        let top = *ranked.first()?;
        match *self {
            DecisionStatistic::Top1 => Some(top),
            DecisionStatistic::Margin { cohort } => {
                let rest = &ranked[1..ranked.len().min(cohort + 1)];
                // With fewer runner-ups than the cohort (tiny galleries), the missing ones count as similarity 0,
                // the expected score of an unrelated face, so the statistic stays comparable with the calibration.
                let sum: f32 = rest.iter().sum();
                Some(top - sum / cohort.max(1) as f32)
            }
        }
    }

    /// How many ranked subjects the statistic needs.
    pub fn depth(&self) -> usize {
        match *self {
            DecisionStatistic::Top1 => 1,
            DecisionStatistic::Margin { cohort } => cohort + 1,
        }
    }
}

/// A model's calibration: its statistic and the FPIR table.
#[derive(Debug, Clone)]
pub struct Calibration {
    pub statistic: DecisionStatistic,
    table: CalibrationTable,
    pub source: String,
}

impl Calibration {
    pub fn from_spec(spec: &CalibrationSpec) -> Result<Calibration, ServiceError> {
        let statistic = match spec.statistic.as_str() {
            "margin" => DecisionStatistic::Margin { cohort: spec.margin_cohort.max(1) },
            _ => DecisionStatistic::Top1,
        };
        let table = CalibrationTable::from_parts(spec.gallery_size, spec.searches, spec.scores.clone(), spec.fpir.clone())
            .map_err(ServiceError::Calibration)?;
        Ok(Calibration { statistic, table, source: spec.source.clone() })
    }

    /// Estimated FPIR of a decision score against a gallery of `gallery_size` templates.
    pub fn fpir(&self, score: f32, gallery_size: usize) -> f64 {
        self.table.fpir_at_gallery_size(score, gallery_size.max(1)).unwrap_or(1.0)
    }

    /// The decision score needed for `target` FPIR at `gallery_size`; targets finer than the calibration data can
    /// resolve get the most conservative threshold the data supports.
    pub fn threshold(&self, target: f64, gallery_size: usize) -> f32 {
        match self.table.threshold_for_fpir_at_gallery_size(target, gallery_size.max(1)) {
            Ok(t) => t,
            Err(_) => self.table.scores().last().copied().map(f32::next_up).unwrap_or(1.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_on_a_hand_computed_list() {
        let ranked = [0.8, 0.4, 0.2, 0.0];
        assert_eq!(DecisionStatistic::Top1.evaluate(&ranked), Some(0.8));
        // 0.8 - (0.4 + 0.2) / 2 = 0.5
        assert!((DecisionStatistic::Margin { cohort: 2 }.evaluate(&ranked).unwrap() - 0.5).abs() < 1e-6);
        // Too few runner-ups: missing ones count as 0 → 0.8 - (0.4 + 0.2 + 0.0 + 0 + 0) / 5 = 0.68
        assert!((DecisionStatistic::Margin { cohort: 5 }.evaluate(&ranked).unwrap() - 0.68).abs() < 1e-6);
        assert_eq!(DecisionStatistic::Top1.evaluate(&[]), None);
    }
}
