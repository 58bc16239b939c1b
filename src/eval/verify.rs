//! 1:1 verification on a labelled photo folder: every pair of a pair list scored, then 10-fold accuracy, TAR at
//! FAR, AUC, EER, score percentiles, error rates at fixed thresholds, the DET and the score histograms.
//!
//! A pair with a photo in which no face is found (a failure to acquire) scores the lowest cosine, so it is never
//! accepted.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::Serialize;

use super::error::EvalError;
use super::metrics::{
    assign_folds, auc, kfold_accuracy, roc, score_percentiles, tar_at_far, threshold_table, DetPoint, KFoldAccuracy,
    Measurement, OperatingPoint, ScoredPair, STANDARD_PERCENTILES,
};
use super::plot::{plot_det, plot_score_histograms, DetSeries};
use super::protocol::{generate_pairs, read_pairs, PairList, PairSource, PhotoSet};
use super::report::{format_rate, ModelFact, Report, Table};
use super::run::{Published, RunOptions};
use super::templates::{photo_templates, similarity, AnalysisProgress, ModelSetup, SUBJECT_RULE};
use crate::config::Config;

/// Target FARs of the verification report.
const VERIFY_FAR_TARGETS: [f64; 3] = [1e-2, 1e-3, 1e-4];
/// Score of a verification pair with a photo lacking a face: the lowest cosine similarity.
const NO_FACE_PAIR_SCORE: f32 = -1.0;

/// What a verification run compares.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// Folder of `<identity>/<photo>`.
    pub dir: PathBuf,
    /// Pair list (LFW `pairs.txt` or `file_x,file_y,same` CSV); `None`: every mated pair plus `nonmated` seeded
    /// non-mated pairs.
    pub pairs: Option<PathBuf>,
    /// Seed of the non-mated pair sample and of the cross-validation folds.
    pub seed: u64,
    /// Non-mated pairs to sample when no pair list is given.
    pub nonmated: usize,
    pub run: RunOptions,
}

/// Headline verification numbers, machine-readable.
#[derive(Debug, Serialize)]
pub struct VerifySummary {
    dataset: String,
    recognizer: ModelFact,
    detector: ModelFact,
    pairs_source: String,
    seed: u64,
    photos: usize,
    failures_to_acquire: usize,
    mated_pairs: usize,
    nonmated_pairs: usize,
    pairs_with_fta: usize,
    accuracy: KFoldAccuracy,
    auc: f64,
    eer: f64,
    tar_at_far: Vec<Measurement<OperatingPoint>>,
}

/// Runs a verification evaluation and writes its report and summary to `options.run.out`.
pub fn verify(
    config: &Config,
    options: &VerifyOptions,
    progress: &dyn AnalysisProgress,
) -> Result<Published<VerifySummary>, EvalError> {
    let set = PhotoSet::load(&options.dir)?;
    let dataset = set.name();
    let list: PairList = match &options.pairs {
        Some(path) => read_pairs(path, &set)?,
        None => generate_pairs(&set, options.nonmated, options.seed),
    };
    let setup = ModelSetup::load(config)?;
    let run = &options.run;
    let pool = run.thread_pool()?;
    let needed: BTreeSet<usize> = list.pairs.iter().flat_map(|p| [p.a, p.b]).collect();
    let templates = photo_templates(config, &setup, &set, &needed, &run.cache, &pool, progress)?;
    let failures_to_acquire = needed.iter().filter(|&&i| templates.embedding(i).is_none()).count();

    let mut pairs_with_fta = 0;
    let scored: Vec<ScoredPair> = list
        .pairs
        .iter()
        .map(|p| {
            let score = match (templates.embedding(p.a), templates.embedding(p.b)) {
                (Some(a), Some(b)) => similarity(a, b),
                _ => {
                    pairs_with_fta += 1;
                    NO_FACE_PAIR_SCORE
                }
            };
            ScoredPair { score, mated: p.mated }
        })
        .collect();
    let mated: Vec<f32> = scored.iter().filter(|p| p.mated).map(|p| p.score).collect();
    let nonmated: Vec<f32> = scored.iter().filter(|p| !p.mated).map(|p| p.score).collect();
    if mated.is_empty() || nonmated.is_empty() {
        return Err(EvalError::MissingPairClass { dataset, mated: mated.len(), nonmated: nonmated.len() });
    }
    let folds = match &list.folds {
        Some(folds) => folds.clone(),
        None => assign_folds(scored.len(), 10, options.seed)?,
    };
    let accuracy = kfold_accuracy(&scored, &folds)?;
    let operating_points =
        VERIFY_FAR_TARGETS.iter().map(|&far| tar_at_far(&scored, far)).collect::<Result<Vec<_>, _>>()?;
    let area = auc(&scored)?;
    let curve = roc(&scored)?;
    let eer = curve
        .iter()
        .min_by(|a, b| (a.far - a.frr).abs().total_cmp(&(b.far - b.frr).abs()))
        .map_or(f64::NAN, |p| (p.far + p.frr) / 2.0);

    let stem = format!("verify-{dataset}-{}", setup.recognizer.id);
    let mut report = Report::new(format!("1:1 verification, {dataset}, {}", setup.recognizer.id));
    report.seeds = vec![options.seed];
    report.models = vec![setup.recognizer.clone(), setup.detector.clone()];
    let pairs_source = match &options.pairs {
        Some(path) => format!(
            "{} ({})",
            path.display(),
            match list.source {
                PairSource::LfwPairsTxt => "LFW pairs.txt",
                PairSource::Csv => "csv",
                PairSource::Generated => "generated",
            }
        ),
        None => format!("every mated pair + {} seeded non-mated pairs", nonmated.len()),
    };
    let mut summary_table = Table::new("Summary", ["quantity", "value"]);
    for (key, value) in [
        ("data set", format!("{dataset} ({} photos in pairs)", needed.len())),
        ("pairs", pairs_source.clone()),
        ("mated pairs", mated.len().to_string()),
        ("non-mated pairs", nonmated.len().to_string()),
        ("failures to acquire (photos without a face)", failures_to_acquire.to_string()),
        ("pairs scored -1 for a failure to acquire", pairs_with_fta.to_string()),
        ("accuracy, 10-fold cross-validated threshold", format!("{:.4} ± {:.4}", accuracy.mean, accuracy.std)),
        ("AUC", format!("{area:.5}")),
        ("EER", format_rate(eer)),
        (
            "folds",
            if list.folds.is_some() { "the pair list's own".into() } else { format!("seeded ({})", options.seed) },
        ),
    ] {
        summary_table.push_row([key.to_owned(), value])?;
    }
    report.tables.push(summary_table);
    report.tables.push(Table::verification_operating_points(&operating_points));
    report.tables.push(Table::kfold(&accuracy));
    let percentiles = vec![
        ("mated".to_owned(), score_percentiles(&mated, &STANDARD_PERCENTILES)?),
        ("non-mated".to_owned(), score_percentiles(&nonmated, &STANDARD_PERCENTILES)?),
    ];
    report.tables.push(Table::percentiles("Score percentiles", &percentiles));
    let thresholds = verification_thresholds(&percentiles, setup.verify_threshold);
    let mut threshold_rows = Table::thresholds(&threshold_table(&scored, &thresholds)?);
    threshold_rows.name = "Error rates at fixed thresholds (grid between the non-mated and mated medians, and the \
                           manifest's verify threshold)"
        .into();
    report.tables.push(threshold_rows);

    run.create_out_folder()?;
    // plot_det draws identification axes; FAR and FRR take the places of FPIR and FNIR.
    let det_points: Vec<DetPoint> =
        curve.iter().map(|p| DetPoint { threshold: p.threshold, fpir: p.far, fnir: p.frr }).collect();
    report.figures.push(plot_det(
        &format!("verification DET, {dataset}, {} (x: FAR, y: FRR)", setup.recognizer.id),
        &[DetSeries { label: format!("{} (FRR against FAR)", setup.recognizer.id), points: det_points }],
        &run.figure_path(&stem, "det"),
    )?);
    report.figures.push(plot_score_histograms(
        &format!("verification scores, {dataset}, {}", setup.recognizer.id),
        &mated,
        &nonmated,
        &run.figure_path(&stem, "scores"),
    )?);
    report.notes.push(format!(
        "{SUBJECT_RULE}; a photo without one is a failure to acquire and its pairs score {NO_FACE_PAIR_SCORE} \
         (never accepted)"
    ));
    report.notes.push(
        "TAR at FAR rests on the impostor pair count in its row; a FAR target below 1/impostor pairs is not \
         measurable"
            .into(),
    );
    report.notes.push("the DET figure plots FRR against FAR on the identification chart's axes".into());

    let summary = VerifySummary {
        dataset,
        recognizer: setup.recognizer,
        detector: setup.detector,
        pairs_source,
        seed: options.seed,
        photos: needed.len(),
        failures_to_acquire,
        mated_pairs: mated.len(),
        nonmated_pairs: nonmated.len(),
        pairs_with_fta,
        accuracy,
        auc: area,
        eer,
        tar_at_far: operating_points,
    };
    run.publish(&stem, report, summary)
}

/// Eleven thresholds from the non-mated to the mated median, plus the manifest's verify threshold.
fn verification_thresholds(percentiles: &[(String, Vec<(f64, f32)>)], manifest: Option<f32>) -> Vec<f32> {
    let median = |row: usize| {
        percentiles.get(row).and_then(|(_, values)| values.iter().find(|(p, _)| *p == 50.0)).map(|(_, v)| *v)
    };
    let mut thresholds: Vec<f32> = match (median(1), median(0)) {
        (Some(low), Some(high)) if high > low => {
            (0..=10).map(|i| low + (high - low) * i as f32 / 10.0).map(|t| (t * 1000.0).round() / 1000.0).collect()
        }
        _ => Vec::new(),
    };
    thresholds.extend(manifest);
    thresholds.sort_by(f32::total_cmp);
    thresholds.dedup();
    thresholds
}
