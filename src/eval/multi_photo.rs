//! Several photos per subject: people with at least three photos enrolled with one photo and again with two (the
//! same first photo in both, in a seeded order), searched with each of their remaining photos, and by the photos
//! of people never enrolled; the subject's score is its best template (what the service does), the mean of its
//! template scores, or the score of the mean of its templates, and the shipped calibration's threshold is checked
//! with the gallery counted in templates (as the service counts it) and in subjects.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::Serialize;

use super::error::EvalError;
use super::holdout::{interval_cell, nonmated_alerts};
use super::identify::{fnir_cell, IdentifyOptions};
use super::interval::RateInterval;
use super::metrics::{
    fnir_at_threshold, rank_rates, score_percentiles, IdentOperatingPoint, Measurement, SearchOutcome,
};
use super::open_set::{fnir_points, NO_DECISION};
use super::report::{format_rate, ModelFact, Report, Table};
use super::run::Published;
use super::split_study::{folder_templates, FolderTemplates};
use super::templates::{similarity, AnalysisProgress, Templates};
use crate::config::Config;
use crate::embed::normalise;
use crate::manifest::ModelManifest;
use crate::service::Calibration;

/// Photos a subject needs: up to two enrolled, at least one left to search with.
const PHOTOS_NEEDED: usize = 3;
/// Alert targets of the calibration check.
const CHECK_FPIR_TARGETS: [f64; 2] = [1e-2, 3e-3];
/// Percentiles of the non-mated top scores: the upper ones are where the alert thresholds sit.
const TOP_PERCENTILES: [f64; 6] = [50.0, 90.0, 95.0, 99.0, 99.7, 100.0];

/// How a subject with several templates is scored against a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SubjectScore {
    /// Its best template's score: what the service's search does today.
    Max,
    /// The mean of its templates' scores.
    Mean,
    /// The score of one template, the normalised mean of its templates.
    Centroid,
}

impl SubjectScore {
    fn label(self) -> &'static str {
        match self {
            SubjectScore::Max => "best template (max)",
            SubjectScore::Mean => "mean of template scores",
            SubjectScore::Centroid => "mean template (centroid)",
        }
    }
}

/// A subject's score from its templates' scores: `None` for a subject without templates. `Centroid` is scored
/// against [`centroid`] instead and has no fusion of scores.
pub(crate) fn fuse(rule: SubjectScore, scores: &[f32]) -> Option<f32> {
    if scores.is_empty() {
        return None;
    }
    match rule {
        SubjectScore::Max => scores.iter().copied().reduce(f32::max),
        SubjectScore::Mean | SubjectScore::Centroid => Some(scores.iter().sum::<f32>() / scores.len() as f32),
    }
}

/// The mean of unit-length templates scaled back to unit length, so that its score is a cosine like any
/// template's; `None` without templates or when they cancel out.
pub(crate) fn centroid(templates: &[&[f32]]) -> Option<Vec<f32>> {
    let first = templates.first()?;
    let mut mean = vec![0f32; first.len()];
    for template in templates {
        mean.iter_mut().zip(*template).for_each(|(m, x)| *m += x);
    }
    normalise(&mut mean).then_some(mean)
}

/// 1-based rank of subject `mate` among `scores`, every other subject scoring at least as high counted ahead of
/// it (ties go against the mate, as in the harness's exact search).
pub(crate) fn mate_rank(scores: &[f32], mate: usize) -> usize {
    let own = scores[mate];
    1 + scores.iter().enumerate().filter(|&(i, &s)| i != mate && s >= own).count()
}

/// One enrolled person: their identity's photos in the seeded order.
struct Person {
    photos: Vec<usize>,
}

/// One arm's gallery: per subject, its templates (and their centroid), `None` when none of its photos had a face.
struct ArmGallery {
    templates: Vec<Vec<Vec<f32>>>,
    centroids: Vec<Option<Vec<f32>>>,
}

impl ArmGallery {
    fn enrol(people: &[Person], templates: &Templates, photos_per_subject: usize) -> ArmGallery {
        let per_subject: Vec<Vec<Vec<f32>>> = people
            .iter()
            .map(|p| {
                p.photos[..photos_per_subject]
                    .iter()
                    .filter_map(|&i| templates.embedding(i).map(<[f32]>::to_vec))
                    .collect()
            })
            .collect();
        let centroids =
            per_subject.iter().map(|t| centroid(&t.iter().map(Vec::as_slice).collect::<Vec<_>>())).collect();
        ArmGallery { templates: per_subject, centroids }
    }

    fn template_count(&self) -> usize {
        self.templates.iter().map(Vec::len).sum()
    }

    fn subject_count(&self) -> usize {
        self.templates.iter().filter(|t| !t.is_empty()).count()
    }

    /// Every subject's score for `probe` under `rule`; a subject without templates can never be a candidate.
    fn subject_scores(&self, probe: &[f32], rule: SubjectScore) -> Vec<f32> {
        match rule {
            SubjectScore::Centroid => {
                self.centroids.iter().map(|c| c.as_ref().map_or(NO_DECISION, |c| similarity(c, probe))).collect()
            }
            _ => self
                .templates
                .iter()
                .map(|t| {
                    let scores: Vec<f32> = t.iter().map(|t| similarity(t, probe)).collect();
                    fuse(rule, &scores).unwrap_or(NO_DECISION)
                })
                .collect(),
        }
    }

    /// The search outcome of `probe` (`mate`: the searched person's subject, `None` for a non-mated search).
    fn outcome(&self, probe: Option<&[f32]>, mate: Option<usize>, rule: SubjectScore) -> SearchOutcome {
        let Some(probe) = probe else {
            return SearchOutcome {
                mated: mate.is_some(),
                mate_rank: None,
                decision_score: NO_DECISION,
                top_is_mate: false,
            };
        };
        let scores = self.subject_scores(probe, rule);
        let top = scores.iter().copied().fold(NO_DECISION, f32::max);
        let rank = mate.filter(|&m| !self.templates[m].is_empty()).map(|m| mate_rank(&scores, m));
        SearchOutcome { mated: mate.is_some(), mate_rank: rank, decision_score: top, top_is_mate: rank == Some(1) }
    }
}

/// The shipped calibration's threshold for one target with the gallery counted one way, against the count.
#[derive(Debug, Serialize)]
pub struct CalibrationCheck {
    fpir_target: f64,
    /// `templates` (what the service counts) or `subjects`.
    counted_as: &'static str,
    gallery_size: usize,
    threshold: f32,
    predicted_fpir: f64,
    measured: RateInterval,
    fnir: f64,
}

/// One arm under one scoring rule.
#[derive(Debug, Serialize)]
pub struct RuleFigures {
    rule: SubjectScore,
    rank1: f64,
    fnir_at_fpir: Vec<Measurement<IdentOperatingPoint>>,
    nonmated_top_percentiles: Vec<(f64, f32)>,
    calibration: Vec<CalibrationCheck>,
}

/// One arm: photos enrolled per subject, and every rule's figures.
#[derive(Debug, Serialize)]
pub struct ArmFigures {
    photos_per_subject: usize,
    subjects: usize,
    templates: usize,
    failures_to_enrol: usize,
    rules: Vec<RuleFigures>,
}

/// The study's numbers, machine-readable.
#[derive(Debug, Serialize)]
pub struct MultiPhotoSummary {
    dataset: String,
    recognizer: ModelFact,
    detector: ModelFact,
    seed: u64,
    people: usize,
    mated_searches: usize,
    nonmated_searches: usize,
    failures_to_acquire_mated: usize,
    failures_to_acquire_nonmated: usize,
    arms: Vec<ArmFigures>,
}

/// Runs the study (`options.seed` orders each person's photos) and writes its report and summary.
pub fn multi_photo_study(
    config: &Config,
    options: &IdentifyOptions,
    progress: &dyn AnalysisProgress,
) -> Result<Published<MultiPhotoSummary>, EvalError> {
    let manifest = ModelManifest::load(&config.models.resolve_dir()?, &config.models.recognizer)?;
    let spec = manifest.calibration.as_ref().ok_or_else(|| EvalError::NoShippedCalibration {
        dataset: options.dir.display().to_string(),
        id: manifest.id.clone(),
    })?;
    let calibration = Calibration::from_spec(spec).map_err(|source| EvalError::InvalidCalibration {
        path: manifest.id.clone().into(),
        source: Box::new(source),
    })?;
    let FolderTemplates { set, setup, pool, templates } = folder_templates(config, options, progress)?;
    let dataset = set.name();
    let run = &options.run;

    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    let mut people = Vec::new();
    let mut nonmated = Vec::new();
    for photos in set.by_identity().into_values() {
        if photos.len() >= PHOTOS_NEEDED {
            let mut photos = photos;
            photos.shuffle(&mut rng);
            people.push(Person { photos });
        } else {
            nonmated.extend(photos);
        }
    }
    if people.is_empty() {
        return Err(EvalError::TooFewPhotosPerSubject { dataset, needed: PHOTOS_NEEDED, enrolled: 2 });
    }
    // (photo, subject) of every search: each person's photos after the first two, then the never-enrolled people.
    let probes: Vec<(usize, Option<usize>)> = people
        .iter()
        .enumerate()
        .flat_map(|(subject, p)| p.photos[2..].iter().map(move |&photo| (photo, Some(subject))))
        .chain(nonmated.iter().map(|&photo| (photo, None)))
        .collect();
    let fta =
        |mated: bool| probes.iter().filter(|(p, m)| m.is_some() == mated && templates.embedding(*p).is_none()).count();

    let mut arms = Vec::new();
    for (photos_per_subject, rules) in
        [(1, &[SubjectScore::Max][..]), (2, &[SubjectScore::Max, SubjectScore::Mean, SubjectScore::Centroid][..])]
    {
        let gallery = ArmGallery::enrol(&people, &templates, photos_per_subject);
        let mut figures = Vec::new();
        for &rule in rules {
            let outcomes: Vec<SearchOutcome> = pool.install(|| {
                probes
                    .par_iter()
                    .map(|&(photo, mate)| gallery.outcome(templates.embedding(photo), mate, rule))
                    .collect()
            });
            figures.push(rule_figures(&outcomes, rule, &gallery, &calibration)?);
        }
        arms.push(ArmFigures {
            photos_per_subject,
            subjects: gallery.subject_count(),
            templates: gallery.template_count(),
            failures_to_enrol: people.len() * photos_per_subject - gallery.template_count(),
            rules: figures,
        });
    }

    let summary = MultiPhotoSummary {
        dataset: dataset.clone(),
        recognizer: setup.recognizer.clone(),
        detector: setup.detector.clone(),
        seed: options.seed,
        people: people.len(),
        mated_searches: probes.iter().filter(|(_, m)| m.is_some()).count(),
        nonmated_searches: nonmated.len(),
        failures_to_acquire_mated: fta(true),
        failures_to_acquire_nonmated: fta(false),
        arms,
    };
    let stem = format!("identify-{dataset}-multi-photo-{}", setup.recognizer.id);
    let mut report = Report::new(format!("one and two photos per subject, {dataset}, {}", setup.recognizer.id));
    report.seeds = vec![options.seed];
    report.models = vec![setup.recognizer, setup.detector];
    report.tables.extend([protocol_table(&summary)?, accuracy_table(&summary)?, percentile_table(&summary)?]);
    report.tables.push(calibration_table(&summary)?);
    report.notes.extend([
        format!(
            "people with at least {PHOTOS_NEEDED} photos are enrolled; each person's photos are shuffled with the \
             seed, the first (one photo) or first two (two photos) enrolled, the rest searched in both arms; every \
             photo of people with fewer photos is a non-mated search in both arms; no other gallery templates"
        ),
        "the subject score ranks subjects (rank-1) and its top value is the decision score (top1 statistic); FNIR \
         at FPIR takes its threshold from these non-mated searches' top scores, as the harness does"
            .to_owned(),
        format!(
            "calibration check: the recognizer manifest's shipped calibration ({}), thresholded by the service's \
             own code (Calibration::threshold) with the gallery counted in templates, as the service counts it, \
             and in subjects; it was made from all of this folder's impostor comparisons, so this checks the \
             gallery count, not the calibration's generalisation",
            spec.source.split(';').next().unwrap_or_default()
        ),
    ]);
    run.create_out_folder()?;
    run.publish(&stem, report, summary)
}

fn rule_figures(
    outcomes: &[SearchOutcome],
    rule: SubjectScore,
    gallery: &ArmGallery,
    calibration: &Calibration,
) -> Result<RuleFigures, EvalError> {
    let tops: Vec<f32> =
        outcomes.iter().filter(|o| !o.mated && o.decision_score != NO_DECISION).map(|o| o.decision_score).collect();
    let mut checks = Vec::new();
    for fpir_target in CHECK_FPIR_TARGETS {
        for (counted_as, gallery_size) in
            [("templates", gallery.template_count()), ("subjects", gallery.subject_count())]
        {
            let threshold = calibration.threshold(fpir_target, gallery_size);
            checks.push(CalibrationCheck {
                fpir_target,
                counted_as,
                gallery_size,
                threshold,
                predicted_fpir: calibration.fpir(threshold, gallery_size),
                measured: nonmated_alerts(outcomes, threshold),
                fnir: fnir_at_threshold(outcomes, threshold)?,
            });
        }
    }
    Ok(RuleFigures {
        rule,
        rank1: rank_rates(outcomes, &[1])?.first().map_or(0.0, |r| r.1),
        fnir_at_fpir: fnir_points(outcomes)?,
        nonmated_top_percentiles: score_percentiles(&tops, &TOP_PERCENTILES)?,
        calibration: checks,
    })
}

fn arm_label(arm: &ArmFigures, rule: &RuleFigures) -> [String; 2] {
    let photos =
        if arm.photos_per_subject == 1 { "one photo".to_owned() } else { format!("{} photos", arm.photos_per_subject) };
    let rule = if arm.photos_per_subject == 1 { "(all rules agree)".to_owned() } else { rule.rule.label().to_owned() };
    [photos, rule]
}

fn protocol_table(s: &MultiPhotoSummary) -> Result<Table, EvalError> {
    let mut table = Table::new("Protocol", ["role", "count"]);
    let mut rows = vec![
        (format!("people with >= {PHOTOS_NEEDED} photos (subjects)"), s.people),
        ("mated searches (their photos after the first two)".to_owned(), s.mated_searches),
        ("non-mated searches (every photo of people with fewer photos)".to_owned(), s.nonmated_searches),
        ("failures to acquire, mated searches (misses)".to_owned(), s.failures_to_acquire_mated),
        ("failures to acquire, non-mated searches (never alert)".to_owned(), s.failures_to_acquire_nonmated),
    ];
    for arm in &s.arms {
        rows.push((format!("templates, {} photo(s) per subject", arm.photos_per_subject), arm.templates));
        rows.push((
            format!("failures to enrol, {} photo(s) per subject", arm.photos_per_subject),
            arm.failures_to_enrol,
        ));
    }
    for (role, count) in rows {
        table.push_row([role, count.to_string()])?;
    }
    Ok(table)
}

fn accuracy_table(s: &MultiPhotoSummary) -> Result<Table, EvalError> {
    let mut table = Table::new(
        "Rank-1 and FNIR at FPIR",
        ["enrolled", "subject score", "rank-1", "FNIR at FPIR 1e-2", "FNIR at FPIR 3e-3"],
    );
    for arm in &s.arms {
        for rule in &arm.rules {
            let [photos, label] = arm_label(arm, rule);
            table.push_row([
                photos,
                label,
                format_rate(rule.rank1),
                fnir_cell(rule.fnir_at_fpir.first()),
                fnir_cell(rule.fnir_at_fpir.get(1)),
            ])?;
        }
    }
    Ok(table)
}

fn percentile_table(s: &MultiPhotoSummary) -> Result<Table, EvalError> {
    let mut header = vec!["enrolled".to_owned(), "subject score".to_owned()];
    header.extend(TOP_PERCENTILES.iter().map(|p| format!("p{p}")));
    let mut table = Table::new("Top subject score of the non-mated searches (percentiles)", header);
    for arm in &s.arms {
        for rule in &arm.rules {
            let mut row: Vec<String> = arm_label(arm, rule).into();
            row.extend(rule.nonmated_top_percentiles.iter().map(|(_, v)| format!("{v:.4}")));
            table.push_row(row)?;
        }
    }
    Ok(table)
}

fn calibration_table(s: &MultiPhotoSummary) -> Result<Table, EvalError> {
    let mut table = Table::new(
        "The shipped calibration's alert threshold, gallery counted in templates or in subjects",
        [
            "enrolled",
            "subject score",
            "target",
            "gallery counted as",
            "threshold",
            "predicted FPIR",
            "measured FPIR (events/searches; 95 % CI)",
            "FNIR at it",
        ],
    );
    for arm in &s.arms {
        for rule in &arm.rules {
            for c in &rule.calibration {
                let [photos, label] = arm_label(arm, rule);
                table.push_row([
                    photos,
                    label,
                    format_rate(c.fpir_target),
                    format!("{} {}", c.gallery_size, c.counted_as),
                    format!("{:.4}", c.threshold),
                    format_rate(c.predicted_fpir),
                    interval_cell(&c.measured),
                    format_rate(c.fnir),
                ])?;
            }
        }
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fusion_takes_the_best_or_the_mean_of_the_template_scores() {
        assert_eq!(fuse(SubjectScore::Max, &[0.2, 0.7, 0.4]), Some(0.7));
        assert!((fuse(SubjectScore::Mean, &[0.2, 0.7, 0.3]).unwrap() - 0.4).abs() < 1e-7);
        assert_eq!(fuse(SubjectScore::Max, &[0.5]), fuse(SubjectScore::Mean, &[0.5]));
        assert_eq!(fuse(SubjectScore::Mean, &[]), None);
    }

    #[test]
    fn the_centroid_is_the_unit_mean_and_its_score_is_the_mean_score_over_its_length() {
        let a = [1.0f32, 0.0];
        let b = [0.0f32, 1.0];
        let c = centroid(&[&a, &b]).unwrap();
        let half = std::f32::consts::FRAC_1_SQRT_2;
        assert!((c[0] - half).abs() < 1e-6 && (c[1] - half).abs() < 1e-6);
        // For a probe p: p·c = mean(p·a, p·b) / |mean(a, b)|, so the centroid scores above the mean score when the
        // templates differ; here |mean| = 1/√2.
        let p = [0.6f32, 0.8];
        let mean = fuse(SubjectScore::Mean, &[similarity(&a, &p), similarity(&b, &p)]).unwrap();
        assert!((similarity(&c, &p) - mean / half).abs() < 1e-6);
        assert_eq!(centroid(&[&a]).unwrap(), a.to_vec());
        assert_eq!(centroid(&[&a, &[-1.0, 0.0]]), None, "opposite templates cancel");
        assert_eq!(centroid(&[]), None);
    }

    #[test]
    fn mate_rank_counts_ties_against_the_mate() {
        assert_eq!(mate_rank(&[0.3, 0.9, 0.5], 1), 1);
        assert_eq!(mate_rank(&[0.3, 0.9, 0.5], 0), 3);
        assert_eq!(mate_rank(&[0.5, 0.9, 0.5], 2), 3);
    }

    #[test]
    fn an_arm_ranks_subjects_by_their_fused_score() {
        let people = [Person { photos: vec![0, 1, 2] }, Person { photos: vec![3, 4, 5] }];
        let gallery = ArmGallery {
            templates: vec![vec![vec![1.0, 0.0], vec![0.0, 1.0]], vec![vec![0.8, 0.6]]],
            centroids: vec![centroid(&[&[1.0, 0.0], &[0.0, 1.0]]), Some(vec![0.8, 0.6])],
        };
        assert_eq!((gallery.template_count(), gallery.subject_count(), people.len()), (3, 2, 2));
        let probe = [1.0f32, 0.0];
        // Max: subject 0 scores 1.0 (its first template) against 0.8; mean: 0.5 against 0.8.
        let max = gallery.outcome(Some(&probe), Some(0), SubjectScore::Max);
        assert_eq!((max.mate_rank, max.decision_score), (Some(1), 1.0));
        let mean = gallery.outcome(Some(&probe), Some(0), SubjectScore::Mean);
        assert_eq!(mean.mate_rank, Some(2));
        assert!((mean.decision_score - 0.8).abs() < 1e-6);
        let none = gallery.outcome(None, None, SubjectScore::Max);
        assert_eq!((none.mated, none.decision_score), (false, NO_DECISION));
    }
}
