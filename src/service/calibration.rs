//! Scores people can act on: the decision statistic identification mode thresholds, and the estimated
//! false-positive identification rate (FPIR) of a score at the current gallery size, from the impostor
//! distribution shipped in the recognizer's manifest.

use crate::eval::metrics::CalibrationTable;
use crate::manifest::CalibrationSpec;

use super::ServiceError;

/// The number identification mode compares with a watchlist's threshold: the evaluation harness's statistic, so
/// that the service computes exactly what the shipped calibration table was made from.
pub use crate::eval::decision::DecisionStatistic;

/// A model's calibration: its statistic and the FPIR table.
#[derive(Debug, Clone)]
pub struct Calibration {
    pub statistic: DecisionStatistic,
    table: CalibrationTable,
    pub source: String,
}

impl Calibration {
    pub fn from_spec(spec: &CalibrationSpec) -> Result<Calibration, ServiceError> {
        let statistic =
            DecisionStatistic::from_manifest(&spec.statistic, spec.margin_cohort).map_err(ServiceError::Statistic)?;
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
    fn the_manifests_statistic_is_checked_not_guessed() {
        let spec = |statistic: &str, margin_cohort| CalibrationSpec {
            statistic: statistic.into(),
            margin_cohort,
            gallery_size: 10,
            searches: 2,
            source: "test".into(),
            scores: vec![0.1, 0.2],
            fpir: vec![1.0, 0.5],
        };
        assert_eq!(Calibration::from_spec(&spec("top1", 0)).unwrap().statistic, DecisionStatistic::Top1);
        assert_eq!(Calibration::from_spec(&spec("margin", 5)).unwrap().statistic, DecisionStatistic::Margin { cohort: 5 });
        assert!(matches!(Calibration::from_spec(&spec("margin", 0)), Err(ServiceError::Statistic(_))));
        assert!(matches!(Calibration::from_spec(&spec("top-1", 0)), Err(ServiceError::Statistic(_))));
    }
}
