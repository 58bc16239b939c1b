//! Open-set 1:N identification on a labelled photo folder: rank-k, FNIR at FPIR for the deployed decision
//! statistic and every attempt, the effect of gallery size (synthetic and held-out real distractors), CMC, DET,
//! the per-comparison impostor rates, and optionally the FPIR calibration table for a manifest.
//!
//! A mated search whose probe has no face is a miss at every threshold; a non-mated one never alarms.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::Serialize;

use super::attempts::{Attempt, ADAPTIVE_COHORT};
use super::calibration::write_calibration;
use super::error::EvalError;
use super::impostors::{impostor_scores, impostor_section, ImpostorSummary};
use super::metrics::{
    cmc_curve, det_curve, fnir_at_fpir, rank_rates, score_percentiles, IdentOperatingPoint, Measurement,
    STANDARD_PERCENTILES,
};
use super::open_set::{
    base_run, decision_scores, fnir_points, measured_fnir, outcomes_of, search_probes, BaseRun, Gallery, ProbeSearch,
    CMC_MAX_RANK,
};
use super::plot::{plot_cmc, plot_det, plot_score_histograms, CmcSeries, DetSeries};
use super::protocol::{open_set_protocol, split_identities, GaussianFaceModel, PhotoSet, TemplateMatrix};
use super::report::{format_rate, ModelFact, Report, Table};
use super::run::{Published, RunOptions};
use super::templates::{photo_templates, AnalysisProgress, ModelSetup, Templates, SUBJECT_RULE};
use crate::config::Config;
use crate::manifest::ModelManifest;
use crate::score::decision::DecisionStatistic;

/// Ranks of the identification report.
const REPORTED_RANKS: [usize; 4] = [1, 5, 10, 50];

/// Which decision statistic identification thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StatisticName {
    Top1,
    Margin,
}

/// Which identities an identification run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SplitPart {
    All,
    Tuning,
    Test,
}

impl SplitPart {
    /// The part's name in reports and file names.
    pub fn label(self) -> &'static str {
        match self {
            SplitPart::All => "all",
            SplitPart::Tuning => "tuning",
            SplitPart::Test => "test",
        }
    }
}

/// What an identification run (or a split study) searches, and how it decides.
#[derive(Debug, Clone)]
pub struct IdentifyOptions {
    /// Folder of `<identity>/<photo>`.
    pub dir: PathBuf,
    /// Seed of the synthetic distractors.
    pub seed: u64,
    /// Synthetic distractors to add, as multiples of the base gallery size (0: none).
    pub distractors: Vec<usize>,
    /// Decision statistic of the figures; `None`: the one the recognizer manifest's `[calibration]` names, else
    /// top1.
    pub statistic: Option<StatisticName>,
    /// Runner-up scores averaged by the margin statistic; `None`: the manifest's `margin_cohort`, else 10.
    pub margin_cohort: Option<usize>,
    /// Identities to use: all, or one half of a seeded stratified split.
    pub split: SplitPart,
    /// Seed of the tuning/test identity split (the first of a split study's).
    pub split_seed: u64,
    /// Where to write the FPIR calibration table of the decision statistic, if anywhere.
    pub calibration_out: Option<PathBuf>,
    pub run: RunOptions,
}

/// One attempt's figures, machine-readable.
#[derive(Debug, Serialize)]
pub struct AttemptSummary {
    statistic: String,
    fnir_at_fpir: Vec<Measurement<IdentOperatingPoint>>,
}

/// Figures at one gallery size, machine-readable.
#[derive(Debug, Serialize)]
pub struct GallerySizeSummary {
    label: String,
    distractors: usize,
    gallery_size: usize,
    rank_rates: Vec<(usize, f64)>,
    fnir_at_fpir_top1: Measurement<IdentOperatingPoint>,
    fnir_at_fpir_statistic: Measurement<IdentOperatingPoint>,
}

/// Headline identification numbers, machine-readable.
#[derive(Debug, Serialize)]
pub struct IdentifySummary {
    dataset: String,
    split: String,
    split_seed: u64,
    seed: u64,
    recognizer: ModelFact,
    detector: ModelFact,
    statistic: DecisionStatistic,
    gallery_size: usize,
    enrolments: usize,
    distractors: usize,
    mated_searches: usize,
    nonmated_searches: usize,
    failures_to_enrol: usize,
    failures_to_acquire_mated: usize,
    failures_to_acquire_nonmated: usize,
    rank_rates: Vec<(usize, f64)>,
    fnir_at_fpir: Vec<Measurement<IdentOperatingPoint>>,
    fnir_at_fpir_top1: Vec<Measurement<IdentOperatingPoint>>,
    attempts: Vec<AttemptSummary>,
    gallery_sizes: Vec<GallerySizeSummary>,
    /// `None` when the folder has too few impostor comparisons for a tail fit.
    impostor_rates: Option<ImpostorSummary>,
    calibration: Option<PathBuf>,
}

/// The decision statistic of a run: the options', else the recognizer manifest's calibration's, else top1.
pub(crate) fn chosen_statistic(config: &Config, options: &IdentifyOptions) -> Result<DecisionStatistic, EvalError> {
    let manifest = ModelManifest::load(&config.models.resolve_dir()?, &config.models.recognizer)?;
    let deployed = manifest.calibration.as_ref();
    let cohort = options.margin_cohort.or(deployed.map(|c| c.margin_cohort).filter(|&c| c > 0)).unwrap_or(10);
    Ok(match (options.statistic, deployed) {
        (Some(StatisticName::Top1), _) => DecisionStatistic::Top1,
        (Some(StatisticName::Margin), _) => DecisionStatistic::from_manifest("margin", cohort)?,
        (None, Some(spec)) => DecisionStatistic::from_manifest(&spec.statistic, cohort)
            .map_err(|source| EvalError::ManifestStatistic { id: manifest.id.clone(), source })?,
        (None, None) => DecisionStatistic::Top1,
    })
}

/// Runs an identification evaluation and writes its report, summary and (if asked) calibration table.
pub fn identify(
    config: &Config,
    options: &IdentifyOptions,
    progress: &dyn AnalysisProgress,
) -> Result<Published<IdentifySummary>, EvalError> {
    let statistic = chosen_statistic(config, options)?;
    let set = PhotoSet::load(&options.dir)?;
    let dataset = set.name();
    let split = split_identities(&set, options.split_seed);
    let (included, held_out): (Option<&BTreeSet<String>>, Option<&BTreeSet<String>>) = match options.split {
        SplitPart::All => (None, None),
        SplitPart::Tuning => (Some(&split.tuning), Some(&split.test)),
        SplitPart::Test => (Some(&split.test), Some(&split.tuning)),
    };
    let protocol = open_set_protocol(&set, |id| included.is_none_or(|ids| ids.contains(id)));
    if protocol.mated_probes.is_empty() {
        return Err(EvalError::NoMatedSearch { dataset });
    }
    // The other half's photos are real distractors nobody searches for (split runs only).
    let held_out_photos: Vec<usize> = held_out.map_or_else(Vec::new, |ids| {
        (0..set.photos.len()).filter(|&i| ids.contains(&set.photos[i].identity)).collect()
    });
    let setup = ModelSetup::load(config)?;
    let run = &options.run;
    let pool = run.thread_pool()?;
    let needed: BTreeSet<usize> = protocol
        .enrolments
        .iter()
        .chain(&protocol.distractors)
        .chain(&protocol.mated_probes)
        .chain(&protocol.nonmated_probes)
        .chain(&held_out_photos)
        .copied()
        .collect();
    let templates = photo_templates(config, &setup, &set, &needed, &run.cache, &pool, progress)?;

    let base = base_run(&set, &templates, &protocol, statistic, setup.dimension, &pool)
        .map_err(|source| EvalError::OpenSet { run: dataset.clone(), source })?;
    let base_size = base.gallery.templates.len();
    let ranks = rank_rates(&base.primary, &REPORTED_RANKS)?;
    let primary_points = fnir_points(&base.primary)?;
    let top1_points = fnir_points(&base.top1)?;
    let nonmated_searches = protocol.nonmated_probes.len();

    let stem = match options.split {
        SplitPart::All => format!("identify-{dataset}-{}", setup.recognizer.id),
        part => format!("identify-{dataset}-{}-{}", part.label(), setup.recognizer.id),
    };
    let mut report = Report::new(format!(
        "open-set 1:N identification, {dataset} ({} identities), {}",
        options.split.label(),
        setup.recognizer.id
    ));
    report.seeds = vec![options.seed, options.split_seed];
    report.models = vec![setup.recognizer.clone(), setup.detector.clone()];
    report.gallery_sizes = vec![base_size];

    let mut protocol_table = Table::new("Protocol", ["role", "count"]);
    for (role, count) in [
        ("enrolled identities (first photo of each identity with >= 2 photos)", protocol.enrolments.len()),
        ("gallery distractors (single-photo identities, 1st, 3rd, ...)", protocol.distractors.len()),
        ("gallery size (templates with a face)", base_size),
        ("failures to enrol (no face)", base.failures_to_enrol),
        ("mated searches (other photos of enrolled identities)", protocol.mated_probes.len()),
        ("non-mated searches (single-photo identities, 2nd, 4th, ...)", nonmated_searches),
        ("failures to acquire, mated searches (counted as misses)", base.fta_mated),
        ("failures to acquire, non-mated searches (never alarm)", base.fta_nonmated),
    ] {
        protocol_table.push_row([role.to_owned(), count.to_string()])?;
    }
    report.tables.push(protocol_table);
    report.tables.push(Table::rank_rates(&ranks));
    let mut primary_table = Table::identification_operating_points(&primary_points);
    primary_table.name = format!("FNIR at FPIR, decision statistic {statistic}");
    report.tables.push(primary_table);
    if statistic != DecisionStatistic::Top1 {
        let mut top1_table = Table::identification_operating_points(&top1_points);
        top1_table.name = "FNIR at FPIR, decision statistic top1 (raw top-1 score)".into();
        report.tables.push(top1_table);
    }
    let (attempt_table, attempt_summaries) = attempts_table(&base.attempts, &top1_points)?;
    report.tables.push(attempt_table);
    report.tables.push(percentile_table(&base, statistic)?);

    let identify_run = IdentifyRun { options, statistic, set: &set, templates: &templates, pool: &pool };
    let extra = identify_run.distractor_sets(&mut report, &base.gallery, &held_out_photos, setup.dimension)?;
    let sizes = identify_run.gallery_sizes(&mut report, &base, extra)?;
    let GallerySizes { summaries: size_summaries, cmc: cmc_series, det: mut det_series } = sizes;

    run.create_out_folder()?;
    report.figures.push(plot_cmc(
        &format!("CMC, {dataset} ({}), {}", options.split.label(), setup.recognizer.id),
        &cmc_series,
        &run.figure_path(&stem, "cmc"),
    )?);
    if let Ok(points) = det_curve(&base.top1) {
        if statistic != DecisionStatistic::Top1 {
            det_series.insert(1, DetSeries { label: format!("top1, gallery {base_size}"), points });
        }
    }
    if det_series.is_empty() {
        report.notes.push("no DET: the protocol gives no non-mated searches on this folder".into());
    } else {
        report.figures.push(plot_det(
            &format!("identification DET, {dataset} ({}), {}", options.split.label(), setup.recognizer.id),
            &det_series,
            &run.figure_path(&stem, "det"),
        )?);
    }
    report.figures.push(plot_score_histograms(
        &format!("decision statistic {statistic}, {dataset} ({}), {}", options.split.label(), setup.recognizer.id),
        &decision_scores(&base.primary, true),
        &decision_scores(&base.primary, false),
        &run.figure_path(&stem, "scores"),
    )?);

    let (comparisons, pair_stride) = impostor_scores(&set, &templates, &needed, &pool);
    let impostors = impostor_section(&mut report, &dataset, comparisons, pair_stride, &base.top1, base_size)?;

    let calibration = match &options.calibration_out {
        Some(path) => {
            let nonmated = decision_scores(&base.primary, false);
            let source = format!(
                "{dataset}, open-set protocol of `facematch eval identify` (split {}, split seed {}), {} non-mated \
                 searches with a face against a gallery of {base_size}; recognizer sha256 {}, detector {} sha256 {}",
                options.split.label(),
                options.split_seed,
                nonmated.len(),
                setup.recognizer.sha256,
                setup.detector.id,
                setup.detector.sha256
            );
            let comparisons = if statistic == DecisionStatistic::Top1 { impostors.rates } else { None };
            let source = match &comparisons {
                Some(rates) => format!(
                    "{source}; per-comparison rates: {} pair of its photos of different identities ({} \
                     comparisons)",
                    if pair_stride > 1 { format!("every {pair_stride}th") } else { "every".to_owned() },
                    rates.comparisons()
                ),
                None => source,
            };
            write_calibration(path, statistic, &nonmated, base_size, comparisons, source)?;
            Some(path.clone())
        }
        None => None,
    };

    report.notes.extend([
        format!(
            "{SUBJECT_RULE}; search is exact (cosine against every gallery template); ranks come from the raw \
             similarity, so every decision statistic has the same rank-k rates"
        ),
        "a mated search without a face, or whose identity failed to enrol, is a miss at every threshold; a \
         non-mated search without a face never alarms (it still counts in the FPIR denominator)"
            .into(),
        "synthetic distractors are samples of a Gaussian fitted (mean, full covariance) to the base gallery's \
         templates, scaled to unit length; real faces have heavier tails, so they flatter large galleries — \
         split runs compare them with real held-out photos"
            .into(),
        format!(
            "attempts use the base gallery as the cohort: T-norm the probe's other scores, Z-norm the top \
             candidate's scores with the other templates, adaptive S-norm the top {ADAPTIVE_COHORT} of both, the \
             symmetric margin the top candidate's nearest other templates; centred attempts subtract the gallery's \
             mean template from every template and probe"
        ),
    ]);
    if let Some(ids) = included {
        report.notes.push(format!(
            "identities: the {} half ({} identities) of a stratified split with seed {}",
            options.split.label(),
            ids.len(),
            options.split_seed
        ));
    }

    let summary = IdentifySummary {
        dataset,
        split: options.split.label().into(),
        split_seed: options.split_seed,
        seed: options.seed,
        recognizer: setup.recognizer,
        detector: setup.detector,
        statistic,
        gallery_size: base_size,
        enrolments: protocol.enrolments.len(),
        distractors: protocol.distractors.len(),
        mated_searches: protocol.mated_probes.len(),
        nonmated_searches,
        failures_to_enrol: base.failures_to_enrol,
        failures_to_acquire_mated: base.fta_mated,
        failures_to_acquire_nonmated: base.fta_nonmated,
        rank_rates: ranks,
        fnir_at_fpir: primary_points,
        fnir_at_fpir_top1: top1_points,
        attempts: attempt_summaries,
        gallery_sizes: size_summaries,
        impostor_rates: impostors.summary,
        calibration,
    };
    run.publish(&stem, report, summary)
}

/// An FNIR at FPIR operating point as a table cell: the rate, its threshold and false positives.
pub(crate) fn fnir_cell(point: Option<&Measurement<IdentOperatingPoint>>) -> String {
    match point {
        Some(Measurement::Measured(p)) => {
            format!("{} (t = {:.4}, {} FP)", format_rate(p.fnir), p.threshold, p.false_positives)
        }
        Some(Measurement::NotMeasurable(s)) => {
            format!("not measurable: {} non-mated searches, needs {}", s.available, s.required)
        }
        None => "-".into(),
    }
}

/// Every statistic on the same searches, against top1.
fn attempts_table(
    tried: &[(Attempt, Vec<Measurement<IdentOperatingPoint>>)],
    top1_points: &[Measurement<IdentOperatingPoint>],
) -> Result<(Table, Vec<AttemptSummary>), EvalError> {
    let top1_fnir = measured_fnir(top1_points.first());
    let mut table = Table::new(
        "Decision statistics tried (same searches; ranks unchanged)",
        ["statistic", "FNIR at FPIR 1e-2", "FNIR at FPIR 3e-3", "change at 1e-2 vs top1"],
    );
    let mut summaries = Vec::new();
    for (attempt, points) in tried {
        let change = match (measured_fnir(points.first()), top1_fnir) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:+.1} %", 100.0 * (a - b) / b),
            _ => "-".into(),
        };
        table.push_row([attempt.label(), fnir_cell(points.first()), fnir_cell(points.get(1)), change])?;
        summaries.push(AttemptSummary { statistic: attempt.label(), fnir_at_fpir: points.clone() });
    }
    Ok((table, summaries))
}

fn percentile_table(base: &BaseRun, statistic: DecisionStatistic) -> Result<Table, EvalError> {
    let mate_scores: Vec<f32> = base.searches.iter().filter_map(|s| s.result.as_ref()?.mate_score).collect();
    let mut rows = Vec::new();
    for (label, sample) in [
        ("mated searches, top1".to_owned(), decision_scores(&base.top1, true)),
        ("non-mated searches, top1".to_owned(), decision_scores(&base.top1, false)),
        ("mated searches, score of the mate".to_owned(), mate_scores),
        (format!("mated searches, {statistic}"), decision_scores(&base.primary, true)),
        (format!("non-mated searches, {statistic}"), decision_scores(&base.primary, false)),
    ] {
        if !sample.is_empty() {
            rows.push((label, score_percentiles(&sample, &STANDARD_PERCENTILES)?));
        }
    }
    Ok(Table::percentiles("Decision score percentiles", &rows))
}

/// What the gallery-size study of a run reads.
struct IdentifyRun<'a> {
    options: &'a IdentifyOptions,
    statistic: DecisionStatistic,
    set: &'a PhotoSet,
    templates: &'a Templates,
    pool: &'a rayon::ThreadPool,
}

/// The gallery-size study's figures: a summary, a CMC and (where measurable) a DET series per gallery size.
struct GallerySizes {
    summaries: Vec<GallerySizeSummary>,
    cmc: Vec<CmcSeries>,
    det: Vec<DetSeries>,
}

impl IdentifyRun<'_> {
    /// The distractor sets added to the base gallery, labelled: in split runs the other half's real photos (and as
    /// many synthetic ones), then the synthetic multiples of the base gallery.
    fn distractor_sets(
        &self,
        report: &mut Report,
        gallery: &Gallery,
        held_out_photos: &[usize],
        dimension: usize,
    ) -> Result<Vec<(String, TemplateMatrix)>, EvalError> {
        let model = GaussianFaceModel::fit(&gallery.templates);
        let seed = self.options.seed;
        let mut sets = Vec::new();
        if !held_out_photos.is_empty() {
            let mut real = TemplateMatrix::new(dimension);
            for &photo in held_out_photos {
                if let Some(template) = self.templates.embedding(photo) {
                    real.push(template)?;
                }
            }
            if let Ok(model) = &model {
                let synthetic = model.sample(real.len(), seed.wrapping_add(0x5eed));
                sets.push(("synthetic, as many as the real held-out photos".into(), synthetic));
            }
            sets.push(("real: every photo of the other split's identities".into(), real));
        }
        match &model {
            Ok(model) => {
                for &multiple in self.options.distractors.iter().filter(|&&m| m > 0) {
                    let count = multiple * gallery.templates.len();
                    let seed = seed ^ 0x9E37_79B9_7F4A_7C15u64.wrapping_mul(multiple as u64);
                    sets.push((format!("synthetic, {multiple}x the base gallery"), model.sample(count, seed)));
                }
            }
            Err(err) => report.notes.push(format!("no synthetic distractors: {err}")),
        }
        Ok(sets)
    }

    /// Searches the probes again against the base gallery with each distractor set added, and adds the table of
    /// rank-k and FNIR by gallery size to the report.
    fn gallery_sizes(
        &self,
        report: &mut Report,
        base: &BaseRun,
        extra: Vec<(String, TemplateMatrix)>,
    ) -> Result<GallerySizes, EvalError> {
        let statistic = self.statistic;
        let base_size = base.gallery.templates.len();
        let keep = statistic.candidates_needed().max(CMC_MAX_RANK);
        let mut rows: Vec<(String, usize, Vec<ProbeSearch>)> = Vec::new();
        for (label, extra) in extra {
            let mut extended =
                Gallery { templates: base.gallery.templates.clone(), mate_rows: base.gallery.mate_rows.clone() };
            extended.templates.extend(&extra)?;
            let found = search_probes(&extended, self.set, self.templates, &base.probes, keep, self.pool);
            rows.push((label, extra.len(), found));
        }
        let mut header: Vec<String> =
            ["distractors", "added", "gallery size", "rank-1", "rank-10", "FNIR at FPIR 1e-2, top1"]
                .map(String::from)
                .into();
        // A second FNIR column only when the decision statistic is not top1 itself.
        let second_column = statistic != DecisionStatistic::Top1;
        if second_column {
            header.push(format!("FNIR at FPIR 1e-2, {statistic}"));
        }
        let mut table = Table::new("Effect of gallery size (distractors added to the base gallery)", header);
        let mut sizes = GallerySizes { summaries: Vec::new(), cmc: Vec::new(), det: Vec::new() };
        let base_row = std::iter::once(("none (base gallery)".to_owned(), 0usize, None));
        let all_rows = base_row.chain(rows.iter().map(|(l, n, s)| (l.clone(), *n, Some(s))));
        for (label, added, found) in all_rows {
            let (stat_outcomes, top1_outcomes) = match found {
                None => (base.primary.clone(), base.top1.clone()),
                Some(found) => (outcomes_of(found, statistic), outcomes_of(found, DecisionStatistic::Top1)),
            };
            let size = base_size + added;
            let rates = rank_rates(&stat_outcomes, &[1, 5, 10, 50])?;
            let fnir_top1 = fnir_at_fpir(&top1_outcomes, 1e-2)?;
            let fnir_stat = fnir_at_fpir(&stat_outcomes, 1e-2)?;
            let mut row = vec![
                label.clone(),
                added.to_string(),
                size.to_string(),
                format_rate(rates[0].1),
                format_rate(rates[2].1),
                fnir_cell(Some(&fnir_top1)),
            ];
            if second_column {
                row.push(fnir_cell(Some(&fnir_stat)));
            }
            table.push_row(row)?;
            sizes.cmc.push(CmcSeries {
                label: format!("gallery {size}: {label}"),
                points: cmc_curve(&stat_outcomes, CMC_MAX_RANK)?,
            });
            if let Ok(points) = det_curve(&stat_outcomes) {
                sizes.det.push(DetSeries { label: format!("{statistic}, gallery {size}: {label}"), points });
            }
            if added > 0 {
                report.gallery_sizes.push(size);
            }
            sizes.summaries.push(GallerySizeSummary {
                label,
                distractors: added,
                gallery_size: size,
                rank_rates: rates,
                fnir_at_fpir_top1: fnir_top1,
                fnir_at_fpir_statistic: fnir_stat,
            });
        }
        report.tables.push(table);
        Ok(sizes)
    }
}
