//! Does a calibration hold on identities it was not made on: for each seeded identity split of the split study,
//! a `top1` calibration with per-comparison rates is made from the tuning half alone (as `--calibration-out` makes
//! it from all identities), the service's own threshold code sets the alert threshold for the test half's gallery
//! size, and the FPIR it predicts is set against the false positives counted on the test half's non-mated searches.

use std::collections::BTreeSet;

use serde::Serialize;

use super::calibration::calibration_spec;
use super::error::EvalError;
use super::identify::IdentifyOptions;
use super::impostors::impostor_scores;
use super::interval::RateInterval;
use super::metrics::{fnir_at_threshold, SearchOutcome};
use super::open_set::{base_run, decision_scores, BaseRun};
use super::protocol::{open_set_protocol, split_identities, PhotoSet};
use super::report::{format_rate, ModelFact, Report, Table};
use super::run::Published;
use super::split_study::{folder_templates, split_seeds, FolderTemplates};
use super::templates::{AnalysisProgress, Templates};
use crate::config::Config;
use crate::score::decision::DecisionStatistic;
use crate::score::impostors::impostor_rates;
use crate::service::Calibration;

/// Alert targets checked: the harness's 1 %, the service's default 0.3 %, and 0.1 %.
pub(crate) const HOLDOUT_FPIR_TARGETS: [f64; 3] = [1e-2, 3e-3, 1e-3];

/// One target on one split's test half.
#[derive(Debug, Clone, Serialize)]
pub struct HoldoutPoint {
    fpir_target: f64,
    /// The alert threshold the service sets for the test half's gallery size from the tuning half's calibration.
    threshold: f32,
    /// Whether that threshold lies in the fitted tail (beyond the tuning half's counted comparisons).
    extrapolated: bool,
    /// The FPIR the service reports at that threshold for that gallery size.
    predicted_fpir: f64,
    /// Non-mated searches of the test half at or above the threshold, with the 95 % Wilson interval.
    measured: RateInterval,
    /// `measured / predicted` (above 1: more false alerts than promised).
    ratio: f64,
    /// Mated searches of the test half the threshold misses (mate not at rank 1, or below the threshold).
    fnir: f64,
    /// The non-mated probes that alert (`<identity>/<photo>`) and their top-1 score: whether the excess over a
    /// prediction is a few look-alikes or label errors rather than the tail.
    alerts: Vec<(String, f32)>,
}

/// One split: what the tuning half's calibration rests on and how it did on the test half.
#[derive(Debug, Clone, Serialize)]
pub struct HoldoutSplit {
    split_seed: u64,
    tuning_comparisons: u64,
    tuning_tail_scale: f64,
    test_gallery_size: usize,
    test_nonmated_searches: usize,
    points: Vec<HoldoutPoint>,
}

/// One target over every split.
#[derive(Debug, Clone, Serialize)]
pub struct HoldoutAcross {
    fpir_target: f64,
    mean_predicted: f64,
    mean_measured: f64,
    /// Mean over the splits of measured / predicted.
    mean_ratio: f64,
    /// The highest measured / predicted of any split.
    worst_ratio: f64,
    /// False positives expected on one test half if the prediction held (predicted FPIR × its searches).
    expected_events_per_split: f64,
    /// Every split's searches counted together. Test halves of different seeds share identities, so this is not
    /// independent evidence; its interval is narrower than the data can support.
    pooled: RateInterval,
    splits_with_no_event: usize,
}

/// The hold-out study's numbers, machine-readable.
#[derive(Debug, Serialize)]
pub struct CalibrationHoldoutSummary {
    dataset: String,
    recognizer: ModelFact,
    detector: ModelFact,
    split_seeds: Vec<u64>,
    splits: Vec<HoldoutSplit>,
    across: Vec<HoldoutAcross>,
}

/// Measured over predicted, with nothing predicted reading as no excess when nothing was measured either.
pub(crate) fn rate_ratio(measured: f64, predicted: f64) -> f64 {
    if predicted > 0.0 {
        measured / predicted
    } else if measured > 0.0 {
        f64::INFINITY
    } else {
        1.0
    }
}

/// Non-mated searches of `outcomes` (with or without a face) and those whose decision score reaches `threshold`.
pub(crate) fn nonmated_alerts(outcomes: &[SearchOutcome], threshold: f32) -> RateInterval {
    let nonmated: Vec<&SearchOutcome> = outcomes.iter().filter(|o| !o.mated).collect();
    let alerts = nonmated.iter().filter(|o| o.decision_score >= threshold).count();
    RateInterval::wilson_95(alerts, nonmated.len())
}

/// The figures over the splits of one target (column `index` of every split's points).
fn across_splits(splits: &[HoldoutSplit], index: usize, target: f64) -> HoldoutAcross {
    let points: Vec<&HoldoutPoint> = splits.iter().filter_map(|s| s.points.get(index)).collect();
    let n = points.len().max(1) as f64;
    let events: usize = points.iter().map(|p| p.measured.events).sum();
    let trials: usize = points.iter().map(|p| p.measured.trials).sum();
    HoldoutAcross {
        fpir_target: target,
        mean_predicted: points.iter().map(|p| p.predicted_fpir).sum::<f64>() / n,
        mean_measured: points.iter().map(|p| p.measured.rate).sum::<f64>() / n,
        mean_ratio: points.iter().map(|p| p.ratio).sum::<f64>() / n,
        worst_ratio: points.iter().map(|p| p.ratio).fold(0.0, f64::max),
        expected_events_per_split: points.iter().map(|p| p.predicted_fpir * p.measured.trials as f64).sum::<f64>() / n,
        pooled: RateInterval::wilson_95(events, trials),
        splits_with_no_event: points.iter().filter(|p| p.measured.events == 0).count(),
    }
}

/// Runs the study over `splits` splits (split seeds `options.split_seed` onwards, the split study's) and writes its
/// report and summary; of `options`, only the folder, the split seed and the run options play a part.
pub fn calibration_holdout(
    config: &Config,
    options: &IdentifyOptions,
    splits: usize,
    progress: &dyn AnalysisProgress,
) -> Result<Published<CalibrationHoldoutSummary>, EvalError> {
    let seeds = split_seeds(options.split_seed, splits)?;
    let FolderTemplates { set, setup, pool, templates } = folder_templates(config, options, progress)?;
    let dataset = set.name();
    let run = &options.run;
    let study = Study { set: &set, templates: &templates, dimension: setup.dimension, pool: &pool, dataset: &dataset };
    let results = seeds.iter().map(|&seed| study.split(seed)).collect::<Result<Vec<_>, _>>()?;
    let across: Vec<HoldoutAcross> =
        HOLDOUT_FPIR_TARGETS.iter().enumerate().map(|(i, &t)| across_splits(&results, i, t)).collect();

    let stem = format!("identify-{dataset}-calibration-holdout-{}", setup.recognizer.id);
    let mut report = Report::new(format!(
        "top1 calibration made on the tuning half, alert thresholds checked on the test half, {splits} identity \
         splits, {dataset}, {}",
        setup.recognizer.id
    ));
    report.seeds = seeds.clone();
    report.models = vec![setup.recognizer.clone(), setup.detector.clone()];
    report.tables.push(splits_table(&results)?);
    report.tables.push(across_table(&across)?);
    report.tables.push(alerts_table(&results)?);
    report.notes.extend([
        "each split is the split study's (same seeds, stratified halves of the identities); the tuning half's \
         calibration is what --calibration-out writes for it: every pair of its photos of different identities \
         counted, the exponential tail fitted to the highest 1,000, beside its non-mated search table"
            .to_owned(),
        "the threshold and the predicted FPIR come from the service's own calibration code (Calibration::threshold \
         and Calibration::fpir) at the test half's gallery size in templates, as the service counts it"
            .to_owned(),
        "measured FPIR: the test half's non-mated searches whose top-1 score reaches the threshold (a search without \
         a face never alerts and still counts); 95 % Wilson intervals. At 0.1 % a test half of about 320 searches \
         expects a third of a false alert, so single splits cannot confirm or refute that target; the pooled row \
         counts searches of overlapping halves more than once"
            .to_owned(),
    ]);
    run.create_out_folder()?;
    let summary = CalibrationHoldoutSummary {
        dataset,
        recognizer: setup.recognizer,
        detector: setup.detector,
        split_seeds: seeds,
        splits: results,
        across,
    };
    run.publish(&stem, report, summary)
}

/// What every split of the study reads.
struct Study<'a> {
    set: &'a PhotoSet,
    templates: &'a Templates,
    dimension: usize,
    pool: &'a rayon::ThreadPool,
    dataset: &'a str,
}

impl Study<'_> {
    fn half(&self, ids: &BTreeSet<String>, seed: u64) -> Result<BaseRun, EvalError> {
        let protocol = open_set_protocol(self.set, |id| ids.contains(id));
        base_run(self.set, self.templates, &protocol, DecisionStatistic::Top1, self.dimension, self.pool)
            .map_err(|source| EvalError::OpenSet { run: format!("{}, split seed {seed}", self.dataset), source })
    }

    fn split(&self, seed: u64) -> Result<HoldoutSplit, EvalError> {
        let split = split_identities(self.set, seed);
        let tuning_photos: BTreeSet<usize> =
            (0..self.set.photos.len()).filter(|&i| split.tuning.contains(&self.set.photos[i].identity)).collect();
        let (mut comparisons, _) = impostor_scores(self.set, self.templates, &tuning_photos, self.pool);
        let rates = impostor_rates(&mut comparisons).map_err(|source| EvalError::ImpostorRates {
            dataset: format!("{}, tuning half of split seed {seed}", self.dataset),
            source,
        })?;
        drop(comparisons);
        let tuning = self.half(&split.tuning, seed)?;
        let tuning_nonmated = decision_scores(&tuning.top1, false);
        let (tuning_comparisons, tuning_tail_scale) = (rates.comparisons(), rates.tail_scale());
        let spec = calibration_spec(
            DecisionStatistic::Top1,
            &tuning_nonmated,
            tuning.gallery.templates.len(),
            Some(rates),
            format!("{}, tuning half of split seed {seed}", self.dataset),
        )?;
        let calibration = Calibration::from_spec(&spec)
            .map_err(|source| EvalError::HoldoutCalibration { split_seed: seed, source: Box::new(source) })?;

        let test = self.half(&split.test, seed)?;
        let gallery_size = test.gallery.templates.len();
        let points = HOLDOUT_FPIR_TARGETS
            .iter()
            .map(|&target| {
                let threshold = calibration.threshold(target, gallery_size);
                let predicted_fpir = calibration.fpir(threshold, gallery_size);
                let measured = nonmated_alerts(&test.top1, threshold);
                let alerts = test
                    .probes
                    .iter()
                    .zip(&test.top1)
                    .filter(|((_, mated), o)| !mated && o.decision_score >= threshold)
                    .map(|((photo, _), o)| (self.set.photos[*photo].relative_path(), o.decision_score))
                    .collect();
                Ok(HoldoutPoint {
                    fpir_target: target,
                    threshold,
                    extrapolated: calibration.is_extrapolated(threshold),
                    predicted_fpir,
                    ratio: rate_ratio(measured.rate, predicted_fpir),
                    measured,
                    fnir: fnir_at_threshold(&test.top1, threshold)?,
                    alerts,
                })
            })
            .collect::<Result<Vec<_>, EvalError>>()?;
        Ok(HoldoutSplit {
            split_seed: seed,
            tuning_comparisons,
            tuning_tail_scale,
            test_gallery_size: gallery_size,
            test_nonmated_searches: test.probes.iter().filter(|(_, mated)| !mated).count(),
            points,
        })
    }
}

/// A measured rate as a table cell: the rate, its events and trials, and its 95 % interval.
pub(crate) fn interval_cell(r: &RateInterval) -> String {
    format!("{} ({}/{}; {}–{})", format_rate(r.rate), r.events, r.trials, format_rate(r.low), format_rate(r.high))
}

/// Every split and target: threshold, predicted and measured FPIR.
fn splits_table(splits: &[HoldoutSplit]) -> Result<Table, EvalError> {
    let mut table = Table::new(
        "Per split: the tuning half's calibration at the test half's gallery size, against the test half's count",
        [
            "split seed",
            "test gallery",
            "target",
            "threshold",
            "predicted FPIR",
            "measured FPIR (events/searches; 95 % CI)",
            "measured / predicted",
            "FNIR at it",
        ],
    );
    for split in splits {
        for p in &split.points {
            table.push_row([
                split.split_seed.to_string(),
                split.test_gallery_size.to_string(),
                format_rate(p.fpir_target),
                format!("{:.4}{}", p.threshold, if p.extrapolated { " (tail)" } else { "" }),
                format_rate(p.predicted_fpir),
                interval_cell(&p.measured),
                format!("{:.2}", p.ratio),
                format_rate(p.fnir),
            ])?;
        }
    }
    Ok(table)
}

/// Each target over the splits.
fn across_table(across: &[HoldoutAcross]) -> Result<Table, EvalError> {
    let mut table = Table::new(
        "Over the splits",
        [
            "target",
            "mean predicted",
            "mean measured",
            "mean ratio",
            "worst ratio",
            "expected events per split",
            "splits with no event",
            "pooled (overlapping halves)",
        ],
    );
    for a in across {
        table.push_row([
            format_rate(a.fpir_target),
            format_rate(a.mean_predicted),
            format_rate(a.mean_measured),
            format!("{:.2}", a.mean_ratio),
            format!("{:.2}", a.worst_ratio),
            format!("{:.2}", a.expected_events_per_split),
            a.splits_with_no_event.to_string(),
            interval_cell(&a.pooled),
        ])?;
    }
    Ok(table)
}

/// The non-mated probes that alert at the lowest target, with the splits they alert in.
fn alerts_table(splits: &[HoldoutSplit]) -> Result<Table, EvalError> {
    let last = HOLDOUT_FPIR_TARGETS.len() - 1;
    let mut seen: std::collections::BTreeMap<&str, (f32, Vec<u64>)> = std::collections::BTreeMap::new();
    for split in splits {
        for (probe, score) in split.points.get(last).map_or(&[][..], |p| &p.alerts[..]) {
            let entry = seen.entry(probe.as_str()).or_insert((*score, Vec::new()));
            entry.1.push(split.split_seed);
        }
    }
    let mut table = Table::new(
        format!("Non-mated probes alerting at target {}", format_rate(HOLDOUT_FPIR_TARGETS[last])),
        ["probe", "top-1 score", "split seeds"],
    );
    for (probe, (score, seeds)) in seen {
        let seeds: Vec<String> = seeds.iter().map(u64::to_string).collect();
        table.push_row([probe.to_owned(), format!("{score:.4}"), seeds.join(", ")])?;
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(mated: bool, score: f32) -> SearchOutcome {
        SearchOutcome { mated, mate_rank: mated.then_some(1), decision_score: score, top_is_mate: mated }
    }

    #[test]
    fn alerts_count_nonmated_searches_at_or_above_the_threshold() {
        let outcomes = [outcome(false, 0.5), outcome(false, 0.4), outcome(true, 0.9), outcome(false, f32::MIN)];
        let r = nonmated_alerts(&outcomes, 0.4);
        assert_eq!((r.events, r.trials), (2, 3));
        assert_eq!(nonmated_alerts(&outcomes, 0.41).events, 1);
    }

    #[test]
    fn ratios_read_excess_over_the_prediction() {
        assert_eq!(rate_ratio(0.006, 0.003), 2.0);
        assert_eq!(rate_ratio(0.0, 0.003), 0.0);
        assert_eq!(rate_ratio(0.0, 0.0), 1.0);
        assert!(rate_ratio(0.01, 0.0).is_infinite());
    }

    #[test]
    fn the_summary_over_splits_takes_means_worst_and_pooled_counts() {
        let point = |events, predicted| HoldoutPoint {
            fpir_target: 0.01,
            threshold: 0.5,
            extrapolated: false,
            predicted_fpir: predicted,
            measured: RateInterval::wilson_95(events, 300),
            ratio: rate_ratio(events as f64 / 300.0, predicted),
            fnir: 0.1,
            alerts: Vec::new(),
        };
        let split = |events| HoldoutSplit {
            split_seed: 1,
            tuning_comparisons: 10,
            tuning_tail_scale: 0.1,
            test_gallery_size: 500,
            test_nonmated_searches: 300,
            points: vec![point(events, 0.01)],
        };
        let a = across_splits(&[split(0), split(3), split(6)], 0, 0.01);
        assert!((a.mean_measured - 0.01).abs() < 1e-12);
        assert!((a.mean_ratio - 1.0).abs() < 1e-12 && (a.worst_ratio - 2.0).abs() < 1e-12);
        assert!((a.expected_events_per_split - 3.0).abs() < 1e-12);
        assert_eq!((a.pooled.events, a.pooled.trials, a.splits_with_no_event), (9, 900, 1));
    }
}
