//! Scores people can act on: the decision statistic identification mode thresholds, and the estimated
//! false-positive identification rate (FPIR) of a score at the current gallery size, from the impostor
//! distribution shipped in the recognizer's manifest.

use crate::manifest::CalibrationSpec;
use crate::score::{CalibrationTable, ImpostorRates};

use super::ServiceError;

/// The number identification mode compares with a watchlist's threshold: the statistic the evaluation harness
/// measured with, so that the service computes exactly what the shipped calibration table was made from.
pub use crate::score::DecisionStatistic;

/// A model's calibration: its statistic, the FPIR table of non-mated searches, and for `top1` the per-comparison
/// impostor rates when the manifest has them.
#[derive(Debug, Clone)]
pub struct Calibration {
    pub statistic: DecisionStatistic,
    table: CalibrationTable,
    /// Used whenever present: the top-1 score of a search is the highest of its comparisons, so per-comparison
    /// rates give its FPIR at every gallery size, while the search table resolves only sizes near its own.
    comparisons: Option<ImpostorRates>,
    pub source: String,
}

impl Calibration {
    pub fn from_spec(spec: &CalibrationSpec) -> Result<Calibration, ServiceError> {
        let statistic =
            DecisionStatistic::from_manifest(&spec.statistic, spec.margin_cohort).map_err(ServiceError::Statistic)?;
        let table = CalibrationTable::from_parts(spec.gallery_size, spec.searches, spec.scores.clone(), spec.fpir.clone())
            .map_err(ServiceError::Calibration)?;
        if spec.comparisons.is_some() && statistic != DecisionStatistic::Top1 {
            return Err(ServiceError::ComparisonsNeedTop1 { statistic: spec.statistic.clone() });
        }
        Ok(Calibration { statistic, table, comparisons: spec.comparisons.clone(), source: spec.source.clone() })
    }

    /// Estimated FPIR of a decision score against a gallery of `gallery_size` templates.
    pub fn fpir(&self, score: f32, gallery_size: usize) -> f64 {
        let gallery_size = gallery_size.max(1);
        match &self.comparisons {
            Some(rates) => rates.fpir_at_gallery_size(score, gallery_size),
            None => self.table.fpir_at_gallery_size(score, gallery_size),
        }
        .unwrap_or(1.0)
    }

    /// Whether the FPIR estimate of `score` lies beyond counted data: in the per-comparison rates' fitted tail, or
    /// above the highest score of a search table (where it reports its resolution floor).
    pub fn is_extrapolated(&self, score: f32) -> bool {
        match &self.comparisons {
            Some(rates) => rates.is_extrapolated(score),
            None => self.table.scores().last().is_some_and(|&top| score > top),
        }
    }

    /// The decision score needed for `target` FPIR at `gallery_size`. Per-comparison rates answer every target
    /// (beyond the counted comparisons from their fitted tail); the search table gives targets finer than it can
    /// resolve its most conservative threshold.
    pub fn threshold(&self, target: f64, gallery_size: usize) -> f32 {
        let gallery_size = gallery_size.max(1);
        let fallback = || self.table.scores().last().copied().map(f32::next_up).unwrap_or(1.0);
        match &self.comparisons {
            Some(rates) => rates.threshold_for_fpir_at_gallery_size(target, gallery_size).unwrap_or_else(|_| fallback()),
            None => self.table.threshold_for_fpir_at_gallery_size(target, gallery_size).unwrap_or_else(|_| fallback()),
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
            comparisons: None,
        };
        assert_eq!(Calibration::from_spec(&spec("top1", 0)).unwrap().statistic, DecisionStatistic::Top1);
        assert_eq!(Calibration::from_spec(&spec("margin", 5)).unwrap().statistic, DecisionStatistic::Margin { cohort: 5 });
        assert!(matches!(Calibration::from_spec(&spec("margin", 0)), Err(ServiceError::Statistic(_))));
        assert!(matches!(Calibration::from_spec(&spec("top-1", 0)), Err(ServiceError::Statistic(_))));
    }

    /// Per-comparison rates, when the manifest has them, decide top-1 thresholds at every gallery size; the
    /// search table alone cannot resolve a 0.3 % target at 100,000 templates.
    #[test]
    fn per_comparison_rates_take_over_for_top1() {
        let mut impostors: Vec<f32> = (0..4000).map(|i| i as f32 / 4000.0).collect();
        let rates = crate::score::impostors::impostor_rates(&mut impostors).unwrap();
        let mut spec = CalibrationSpec {
            statistic: "top1".into(),
            margin_cohort: 0,
            gallery_size: 100,
            searches: 4,
            source: "test".into(),
            scores: vec![0.1, 0.5, 0.9, 0.95],
            fpir: vec![1.0, 0.75, 0.5, 0.25],
            comparisons: None,
        };
        let table_only = Calibration::from_spec(&spec).unwrap();
        assert_eq!(table_only.threshold(3e-3, 100_000), 0.95f32.next_up(), "beyond the table: its most conservative");
        assert!(table_only.is_extrapolated(0.96) && !table_only.is_extrapolated(0.95));
        spec.comparisons = Some(rates.clone());
        let with_rates = Calibration::from_spec(&spec).unwrap();
        let t = with_rates.threshold(3e-3, 100_000);
        assert_eq!(t, rates.threshold_for_fpir_at_gallery_size(3e-3, 100_000).unwrap());
        assert!(with_rates.fpir(t, 100_000) <= 3e-3 && with_rates.fpir(t.next_down(), 100_000) > 3e-3);
        let table_end = *rates.scores().last().unwrap();
        assert!(with_rates.is_extrapolated(table_end.next_up()) && !with_rates.is_extrapolated(table_end));
        spec.statistic = "margin".into();
        spec.margin_cohort = 5;
        assert!(matches!(Calibration::from_spec(&spec), Err(ServiceError::ComparisonsNeedTop1 { .. })));
    }
}
