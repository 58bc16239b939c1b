//! `facematch eval verify | identify`: accuracy figures on labelled photo folders (owned by the eval harness).
//!
//! Both commands run the face pipeline once per photo (its subject: the most central of its large faces), cache the
//! subject's template per (models, photo sha256) under `--cache`, apply a fixed protocol from
//! [`crate::eval::protocol`], and write a report (terminal, JSON, Markdown, HTML, figures) plus a
//! `<stem>.summary.json` with the headline numbers in machine-readable form. A photo in which no face is found is a
//! failure to acquire (FTA): in verification its pairs score −1 (the lowest cosine, so they are never accepted); in
//! identification a mated search without a face is a miss and a non-mated one never alarms.

use std::collections::{BTreeSet, HashMap};
use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use parking_lot::Mutex;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::eval::metrics::{
    assign_folds, auc, cmc_curve, det_curve, fnir_at_fpir, fnir_at_threshold, fpir_calibration_table, kfold_accuracy, rank_rates, roc,
    score_percentiles, tar_at_far, threshold_table, DetPoint, IdentOperatingPoint, KFoldAccuracy, Measurement,
    OperatingPoint, ScoredPair, SearchOutcome, STANDARD_PERCENTILES,
};
use crate::eval::plot::{plot_cmc, plot_det, plot_score_histograms, CmcSeries, DetSeries};
use crate::eval::protocol::{
    generate_pairs, open_set_protocol, read_pairs, search_exact, split_identities, template_neighbour_scores,
    GaussianFaceModel, OpenSetProtocol, PairList, PairSource, PhotoSet, SearchResult, TemplateMatrix,
};
use crate::eval::report::{format_rate, ModelFact, Report, ReportFiles, Table};
use crate::manifest::{CalibrationSpec, ModelManifest};
use crate::pipeline::{AnalyzeOptions, FacePipeline};
use crate::score::decision::{
    centre, cohort_stats, margin, s_norm, symmetric_margin, t_norm, z_norm, CohortStats, DecisionStatistic,
};
use crate::score::impostors::{impostor_rates, tail_check, ImpostorRates, TailCheck};
use crate::score::ScoreError;
use crate::quality::FaceQuality;

/// The source of every stage that shapes a template, part of the template cache key.
const PIPELINE_SOURCES: [&str; 9] = [
    include_str!("../decode.rs"),
    include_str!("../detect/mod.rs"),
    include_str!("../detect/passes.rs"),
    include_str!("../detect/rescale.rs"),
    include_str!("../detect/yunet.rs"),
    include_str!("../align.rs"),
    include_str!("../quality.rs"),
    include_str!("../embed.rs"),
    include_str!("../pipeline.rs"),
];
/// Target FARs of the verification report.
const VERIFY_FAR_TARGETS: [f64; 3] = [1e-2, 1e-3, 1e-4];
/// Target FPIRs of the identification report.
const IDENTIFY_FPIR_TARGETS: [f64; 2] = [1e-2, 3e-3];
/// Ranks of the identification report and the CMC's length.
const REPORTED_RANKS: [usize; 4] = [1, 5, 10, 50];
const CMC_MAX_RANK: usize = 50;
/// Cohort of the adaptive S-norm attempt (top scores of the probe and of the template against the gallery).
const ADAPTIVE_COHORT: usize = 200;
/// Decision score of a search that cannot alarm: no face in the probe, or a statistic undefined for it. The
/// lowest finite f32, so the metrics (which refuse non-finite scores) accept it and no threshold in use reaches it.
const NO_DECISION: f32 = f32::MIN;
/// How the harness picks a photo's face, for the reports' notes ([`crate::pipeline::Analysis::subject`]).
const SUBJECT_RULE: &str =
    "the subject of a photo is its most central face among those at least half the largest's size";
/// Score of a verification pair with a photo lacking a face: the lowest cosine similarity.
const NO_FACE_PAIR_SCORE: f32 = -1.0;

#[derive(Debug, clap::Subcommand)]
pub enum EvalCommand {
    /// 1:1 verification on a folder of `<identity>/<photo>`: 10-fold accuracy, TAR at FAR, AUC, DET.
    Verify(VerifyArgs),
    /// Open-set 1:N identification on a folder of `<identity>/<photo>`: rank-k, FNIR at FPIR, CMC, DET,
    /// decision statistics and the effect of gallery size.
    Identify(IdentifyArgs),
}

/// Options shared by both commands.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Folder for the report files and figures.
    #[arg(long, default_value = "reports/eval")]
    pub out: PathBuf,
    /// Folder for cached templates (one file per model set-up, keyed by photo sha256).
    #[arg(long, default_value = "reports/cache")]
    pub cache: PathBuf,
    /// Photos analysed (and searches run) in parallel.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// Folder of `<identity>/<photo>`.
    pub dir: PathBuf,
    /// Pair list: LFW `pairs.txt` (3- and 4-field lines) or `file_x,file_y,same` CSV. Default: every mated pair
    /// plus `--nonmated` seeded non-mated pairs.
    #[arg(long)]
    pub pairs: Option<PathBuf>,
    /// Seed of the non-mated pair sample and of the cross-validation folds.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Non-mated pairs to sample when no pair list is given (1e-4 FAR needs at least 10,000).
    #[arg(long, default_value_t = 100_000)]
    pub nonmated: usize,
    #[command(flatten)]
    pub run: RunArgs,
}

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
    fn label(self) -> &'static str {
        match self {
            SplitPart::All => "all",
            SplitPart::Tuning => "tuning",
            SplitPart::Test => "test",
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct IdentifyArgs {
    /// Folder of `<identity>/<photo>`.
    pub dir: PathBuf,
    /// Seed of the synthetic distractors.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Synthetic distractors to add, as comma-separated multiples of the base gallery size (0: none).
    #[arg(long, value_delimiter = ',', default_value = "1,10,100")]
    pub distractors: Vec<usize>,
    /// Decision statistic the FNIR/FPIR figures, DET and calibration table are for (default: the one the
    /// recognizer manifest's `[calibration]` names, so figures describe what the service deploys; top1 without one).
    #[arg(long, value_enum)]
    pub statistic: Option<StatisticName>,
    /// Runner-up scores averaged by the margin statistic (default: the manifest's `margin_cohort`, else 10).
    #[arg(long)]
    pub margin_cohort: Option<usize>,
    /// Identities to use: all, or one half of a seeded stratified split (tune on `tuning`, report on `test`).
    #[arg(long, value_enum, default_value = "all")]
    pub split: SplitPart,
    /// Seed of the tuning/test identity split.
    #[arg(long, default_value_t = 1)]
    pub split_seed: u64,
    /// Instead of one run: this many tuning/test splits (split seeds `--split-seed` onwards), every attempt measured
    /// on both halves of each, and the statistic picked on each tuning half reported on its test half.
    #[arg(long)]
    pub split_study: Option<usize>,
    /// Write the FPIR calibration table of the decision statistic here, as a manifest `[calibration]` table.
    #[arg(long)]
    pub calibration_out: Option<PathBuf>,
    #[command(flatten)]
    pub run: RunArgs,
}

pub fn run(config: &Config, command: &EvalCommand) -> anyhow::Result<ExitCode> {
    match command {
        EvalCommand::Verify(args) => verify(config, args),
        EvalCommand::Identify(args) => identify(config, args),
    }
}

// ---------------------------------------------------------------------------------------------
// Templates: pipeline runs with a cache
// ---------------------------------------------------------------------------------------------

/// What the pipeline made of one photo: its subject's template (most central large face), or why there is none.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PhotoTemplate {
    photo_sha256: String,
    faces: usize,
    embedding: Option<Vec<f32>>,
    quality: Option<FaceQuality>,
    /// Pipeline error code when the photo could not be analysed.
    error: Option<String>,
}

/// The models a run used, and the cache key their set-up gives.
struct ModelSetup {
    recognizer: ModelFact,
    detector: ModelFact,
    dimension: usize,
    verify_threshold: Option<f32>,
    cache_key: String,
}

fn model_setup(config: &Config) -> anyhow::Result<ModelSetup> {
    let dir = config.models.resolve_dir()?;
    let recognizer = ModelManifest::load(&dir, &config.models.recognizer)?;
    let detector = ModelManifest::load(&dir, &config.models.detector_id(&dir))?;
    let dimension = recognizer
        .recognizer
        .as_ref()
        .map(|r| r.dimension)
        .with_context(|| format!("model {}: not a recognizer", recognizer.id))?;
    // Everything that changes a template: both manifests (hashes, template, normalisation), the detection and
    // decoding settings, and the pipeline's own source code, so a changed alignment never reuses stale templates.
    let key_material =
        serde_json::to_string(&(&recognizer, &detector, &config.detection, &config.limits, PIPELINE_SOURCES))?;
    let cache_key = hex::encode(&Sha256::digest(key_material.as_bytes())[..6]);
    Ok(ModelSetup {
        recognizer: ModelFact { id: recognizer.id.clone(), sha256: recognizer.sha256.clone() },
        detector: ModelFact { id: detector.id.clone(), sha256: detector.sha256.clone() },
        dimension,
        verify_threshold: recognizer.thresholds.as_ref().map(|t| t.verify),
        cache_key,
    })
}

fn read_cache(path: &Path) -> anyhow::Result<HashMap<String, PhotoTemplate>> {
    let mut cache = HashMap::new();
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(cache),
        Err(e) => return Err(e).with_context(|| format!("template cache {}: cannot be read", path.display())),
    };
    for line in BufReader::new(file).lines() {
        let line = line.with_context(|| format!("template cache {}: cannot be read", path.display()))?;
        // A run killed mid-write leaves a partial last line; that photo is simply analysed again.
        if let Ok(entry) = serde_json::from_str::<PhotoTemplate>(&line) {
            cache.insert(entry.photo_sha256.clone(), entry);
        }
    }
    Ok(cache)
}

/// Templates of the given photos (indexed like `set.photos`; `None` for photos not asked for), from the cache
/// where present and from the pipeline otherwise, `threads` photos at a time with a progress bar on stderr.
fn photo_templates(
    config: &Config,
    setup: &ModelSetup,
    set: &PhotoSet,
    photos: &BTreeSet<usize>,
    run: &RunArgs,
    pool: &rayon::ThreadPool,
) -> anyhow::Result<Vec<Option<PhotoTemplate>>> {
    let cache_path = run.cache.join(format!("{}-{}.jsonl", setup.recognizer.id, setup.cache_key));
    let mut cache = read_cache(&cache_path)?;
    let hashed: Vec<(usize, String)> = pool.install(|| {
        photos
            .par_iter()
            .map(|&index| {
                let path = set.path(index);
                let bytes =
                    std::fs::read(&path).with_context(|| format!("photo {}: cannot be read", path.display()))?;
                Ok((index, hex::encode(Sha256::digest(&bytes))))
            })
            .collect::<anyhow::Result<_>>()
    })?;
    let missing: Vec<(usize, &String)> =
        hashed.iter().filter(|(_, sha)| !cache.contains_key(sha.as_str())).map(|(i, sha)| (*i, sha)).collect();
    if !missing.is_empty() {
        std::fs::create_dir_all(&run.cache)
            .with_context(|| format!("template cache folder {}: cannot be created", run.cache.display()))?;
        let pipeline = FacePipeline::load(&config.pipeline())?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&cache_path)
            .with_context(|| format!("template cache {}: cannot be opened", cache_path.display()))?;
        let writer = Mutex::new(BufWriter::new(file));
        let bar = ProgressBar::new(missing.len() as u64);
        bar.set_style(ProgressStyle::with_template(
            "{msg} {wide_bar} {pos}/{len} [{elapsed_precise}, ETA {eta_precise}]",
        )?);
        bar.set_message(format!("{}: analysing {} photos", setup.recognizer.id, missing.len()));
        let fresh: Vec<PhotoTemplate> = pool.install(|| {
            missing
                .par_iter()
                .map(|&(index, sha)| {
                    let template = analyse_photo(&pipeline, &set.path(index), sha)?;
                    let line = serde_json::to_string(&template)?;
                    writeln!(writer.lock(), "{line}")
                        .with_context(|| format!("template cache {}: cannot be written", cache_path.display()))?;
                    bar.inc(1);
                    Ok(template)
                })
                .collect::<anyhow::Result<_>>()
        })?;
        bar.finish_and_clear();
        writer
            .into_inner()
            .flush()
            .with_context(|| format!("template cache {}: cannot be written", cache_path.display()))?;
        for template in fresh {
            cache.insert(template.photo_sha256.clone(), template);
        }
    }
    let mut out = vec![None; set.photos.len()];
    for (index, sha) in hashed {
        out[index] = cache.get(&sha).cloned();
    }
    Ok(out)
}

fn analyse_photo(pipeline: &FacePipeline, path: &Path, sha: &str) -> anyhow::Result<PhotoTemplate> {
    let bytes = std::fs::read(path).with_context(|| format!("photo {}: cannot be read", path.display()))?;
    let analysis = match pipeline.analyze_bytes(&bytes, AnalyzeOptions::default()) {
        Ok(analysis) => analysis,
        // A photo the pipeline refuses is a failure to acquire, recorded like a photo without a face.
        Err(err) => {
            return Ok(PhotoTemplate {
                photo_sha256: sha.to_owned(),
                faces: 0,
                embedding: None,
                quality: None,
                error: Some(err.code().to_owned()),
            })
        }
    };
    let subject = analysis.subject();
    Ok(PhotoTemplate {
        photo_sha256: sha.to_owned(),
        faces: analysis.faces.len(),
        embedding: subject.map(|f| f.embedding.values.clone()),
        quality: subject.map(|f| f.quality),
        error: None,
    })
}

fn embedding_of(templates: &[Option<PhotoTemplate>], index: usize) -> Option<&[f32]> {
    templates.get(index)?.as_ref()?.embedding.as_deref()
}

fn thread_pool(threads: usize) -> anyhow::Result<rayon::ThreadPool> {
    Ok(rayon::ThreadPoolBuilder::new().num_threads(threads.max(1)).build()?)
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Writes the summary next to the report files, prints the report and says where everything went.
fn publish<T: Serialize>(
    out: &Path,
    stem: &str,
    summary: &T,
    report: &Report,
    files: &ReportFiles,
) -> anyhow::Result<ExitCode> {
    let summary_path = write_summary(out, stem, summary)?;
    print!("{}", report.render_terminal());
    println!(
        "\nreport: {} ({}, {}); summary: {}",
        files.json.display(),
        files.markdown.display(),
        files.html.display(),
        summary_path.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn write_summary<T: Serialize>(out: &Path, stem: &str, summary: &T) -> anyhow::Result<PathBuf> {
    let path = out.join(format!("{stem}.summary.json"));
    std::fs::write(&path, serde_json::to_string_pretty(summary)?)
        .with_context(|| format!("summary {}: cannot be written", path.display()))?;
    Ok(path)
}

fn figure_path(out: &Path, stem: &str, what: &str) -> PathBuf {
    out.join(format!("{stem}-{what}.svg"))
}

// ---------------------------------------------------------------------------------------------
// Verification
// ---------------------------------------------------------------------------------------------

/// Headline verification numbers, machine-readable.
#[derive(Debug, Serialize)]
struct VerifySummary {
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

fn verify(config: &Config, args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    let set = PhotoSet::load(&args.dir)?;
    let dataset = set.name();
    let list: PairList = match &args.pairs {
        Some(path) => read_pairs(path, &set)?,
        None => generate_pairs(&set, args.nonmated, args.seed),
    };
    let setup = model_setup(config)?;
    let pool = thread_pool(args.run.threads)?;
    let needed: BTreeSet<usize> = list.pairs.iter().flat_map(|p| [p.a, p.b]).collect();
    let templates = photo_templates(config, &setup, &set, &needed, &args.run, &pool)?;
    let failures_to_acquire = needed.iter().filter(|&&i| embedding_of(&templates, i).is_none()).count();

    let mut pairs_with_fta = 0;
    let scored: Vec<ScoredPair> = list
        .pairs
        .iter()
        .map(|p| {
            let score = match (embedding_of(&templates, p.a), embedding_of(&templates, p.b)) {
                (Some(a), Some(b)) => dot(a, b),
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
        bail!("eval verify {}: needs mated and non-mated pairs ({} and {})", dataset, mated.len(), nonmated.len());
    }
    let folds = match &list.folds {
        Some(folds) => folds.clone(),
        None => assign_folds(scored.len(), 10, args.seed)?,
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
    report.seeds = vec![args.seed];
    report.models = vec![setup.recognizer.clone(), setup.detector.clone()];
    let pairs_source = match &args.pairs {
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
        ("folds", if list.folds.is_some() { "the pair list's own".into() } else { format!("seeded ({})", args.seed) }),
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

    std::fs::create_dir_all(&args.run.out)
        .with_context(|| format!("report folder {}: cannot be created", args.run.out.display()))?;
    // plot_det draws identification axes; FAR and FRR take the places of FPIR and FNIR.
    let det_points: Vec<DetPoint> =
        curve.iter().map(|p| DetPoint { threshold: p.threshold, fpir: p.far, fnir: p.frr }).collect();
    report.figures.push(plot_det(
        &format!("verification DET, {dataset}, {} (x: FAR, y: FRR)", setup.recognizer.id),
        &[DetSeries { label: format!("{} (FRR against FAR)", setup.recognizer.id), points: det_points }],
        &figure_path(&args.run.out, &stem, "det"),
    )?);
    report.figures.push(plot_score_histograms(
        &format!("verification scores, {dataset}, {}", setup.recognizer.id),
        &mated,
        &nonmated,
        &figure_path(&args.run.out, &stem, "scores"),
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

    let files = report.write_files(&args.run.out, &stem)?;
    let summary = VerifySummary {
        dataset,
        recognizer: setup.recognizer,
        detector: setup.detector,
        pairs_source,
        seed: args.seed,
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
    publish(&args.run.out, &stem, &summary, &report, &files)
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

// ---------------------------------------------------------------------------------------------
// Identification
// ---------------------------------------------------------------------------------------------

/// A decision statistic tried in the attempts table. Only [`DecisionStatistic`]s are deployable today (the service
/// and the manifest know them); the others are measured so that a change is backed by figures.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Attempt {
    Statistic(DecisionStatistic),
    /// [`symmetric_margin`] with the top candidate's `cohort` nearest gallery neighbours.
    SymmetricMargin {
        cohort: usize,
    },
    /// Margin divided by the probe's detector score: low-confidence detections (poor photos) get their evidence
    /// scaled up rather than being judged on the same scale as clean ones.
    QualityWeightedMargin {
        cohort: usize,
    },
    /// A statistic on centred templates (gallery mean subtracted, see [`centre`]); ranks
    /// still come from the raw similarity.
    Centred(DecisionStatistic),
    CentredSymmetricMargin {
        cohort: usize,
    },
    /// (top-1 − mean of the next `cohort`) / their standard deviation.
    RunnerUpZ {
        cohort: usize,
    },
    /// T-norm of the top-1 score against all the probe's other gallery scores.
    TNorm,
    /// Z-norm of the top-1 score against the top candidate's scores with the rest of the gallery.
    ZNorm,
    /// S-norm with both full cohorts.
    SNorm,
    /// S-norm with the top-`cohort` scores of both sides.
    AdaptiveSNorm {
        cohort: usize,
    },
}

/// What the attempts read besides a probe's raw search.
struct AttemptInputs<'a> {
    /// The same probes searched with centred templates, in the same order.
    centred: &'a [ProbeSearch],
    /// Each gallery row's similarities to the other rows, highest first (raw and centred).
    neighbours: &'a [Vec<f32>],
    centred_neighbours: &'a [Vec<f32>],
    /// Each probe's detector score, in search order.
    detector_scores: &'a [Option<f32>],
}

impl Attempt {
    fn label(&self) -> String {
        match self {
            Attempt::Statistic(s) => s.to_string(),
            Attempt::SymmetricMargin { cohort } => format!("symmetric margin({cohort})"),
            Attempt::QualityWeightedMargin { cohort } => format!("margin({cohort}) / probe detector score"),
            Attempt::Centred(s) => format!("centred {s}"),
            Attempt::CentredSymmetricMargin { cohort } => format!("centred symmetric margin({cohort})"),
            Attempt::RunnerUpZ { cohort } => format!("runner-up z({cohort})"),
            Attempt::TNorm => "T-norm (gallery cohort)".into(),
            Attempt::ZNorm => "Z-norm (gallery cohort)".into(),
            Attempt::SNorm => "S-norm (gallery cohort)".into(),
            Attempt::AdaptiveSNorm { cohort } => format!("adaptive S-norm (top-{cohort})"),
        }
    }

    /// The statistic of search `index` (whose raw result is `search`).
    fn decide(&self, inputs: &AttemptInputs, index: usize, search: &SearchResult) -> Option<f32> {
        let scores = search.scores();
        let top = search.candidates.first()?;
        let neighbours = |row: usize, size: usize| Some(cohort_stats(inputs.neighbours.get(row)?, size));
        match self {
            Attempt::Statistic(s) => s.decide(&scores),
            Attempt::SymmetricMargin { cohort } => {
                symmetric_margin(&scores, *cohort, neighbour_mean(inputs.neighbours.get(top.row)?, *cohort)?)
            }
            Attempt::QualityWeightedMargin { cohort } => {
                let detector = inputs.detector_scores.get(index).copied().flatten().filter(|d| *d > 0.0)?;
                Some(margin(&scores, *cohort)? / detector)
            }
            Attempt::Centred(s) => {
                let centred = inputs.centred.get(index)?.result.as_ref()?;
                s.decide(&centred.scores())
            }
            Attempt::CentredSymmetricMargin { cohort } => {
                let centred = inputs.centred.get(index)?.result.as_ref()?;
                let row = centred.candidates.first()?.row;
                symmetric_margin(
                    &centred.scores(),
                    *cohort,
                    neighbour_mean(inputs.centred_neighbours.get(row)?, *cohort)?,
                )
            }
            Attempt::RunnerUpZ { cohort } => Some(t_norm(top.score, cohort_stats(scores.get(1..)?, *cohort)?)),
            Attempt::TNorm => Some(t_norm(top.score, search.others?)),
            Attempt::ZNorm => Some(z_norm(top.score, neighbours(top.row, usize::MAX)??)),
            Attempt::SNorm => Some(s_norm(top.score, search.others?, neighbours(top.row, usize::MAX)??)),
            Attempt::AdaptiveSNorm { cohort } => {
                let probe: CohortStats = cohort_stats(scores.get(1..)?, *cohort)?;
                Some(s_norm(top.score, probe, neighbours(top.row, *cohort)??))
            }
        }
    }
}

/// Mean of the first `cohort` neighbour scores (all of them when fewer); `None` when there are none.
fn neighbour_mean(neighbours_desc: &[f32], cohort: usize) -> Option<f32> {
    let used = &neighbours_desc[..cohort.min(neighbours_desc.len())];
    (!used.is_empty()).then(|| (used.iter().map(|&s| f64::from(s)).sum::<f64>() / used.len() as f64) as f32)
}

/// Every attempt of the report, in table order.
fn attempts(primary: DecisionStatistic) -> Vec<Attempt> {
    let mut list = vec![Attempt::Statistic(DecisionStatistic::Top1)];
    list.extend([1, 3, 5, 10, 20, 50].map(|cohort| Attempt::Statistic(DecisionStatistic::Margin { cohort })));
    if !list.contains(&Attempt::Statistic(primary)) {
        list.push(Attempt::Statistic(primary));
    }
    list.extend([3, 5, 10].map(|cohort| Attempt::SymmetricMargin { cohort }));
    list.extend([
        Attempt::QualityWeightedMargin { cohort: 10 },
        Attempt::Centred(DecisionStatistic::Top1),
        Attempt::Centred(DecisionStatistic::Margin { cohort: 10 }),
        Attempt::CentredSymmetricMargin { cohort: 10 },
        Attempt::RunnerUpZ { cohort: 10 },
        Attempt::RunnerUpZ { cohort: 50 },
        Attempt::TNorm,
        Attempt::ZNorm,
        Attempt::SNorm,
        Attempt::AdaptiveSNorm { cohort: ADAPTIVE_COHORT },
    ]);
    list
}

/// The gallery of one run: templates in rows, and the row each enrolled identity's template sits in.
struct Gallery {
    templates: TemplateMatrix,
    mate_rows: HashMap<String, usize>,
}

/// One probe's search: `None` result when the probe had no face.
struct ProbeSearch {
    mated: bool,
    result: Option<SearchResult>,
}

fn search_probes(
    gallery: &Gallery,
    set: &PhotoSet,
    templates: &[Option<PhotoTemplate>],
    probes: &[(usize, bool)],
    keep: usize,
    pool: &rayon::ThreadPool,
) -> Vec<ProbeSearch> {
    pool.install(|| {
        probes
            .par_iter()
            .map(|&(photo, mated)| {
                let mate = if mated { gallery.mate_rows.get(&set.photos[photo].identity).copied() } else { None };
                let result =
                    embedding_of(templates, photo).map(|probe| search_exact(&gallery.templates, probe, keep, mate));
                ProbeSearch { mated, result }
            })
            .collect()
    })
}

/// Search outcomes for the metrics, with the decision score `decide(index, result)` gives each search that
/// reached the gallery.
fn outcomes(searches: &[ProbeSearch], decide: impl Fn(usize, &SearchResult) -> Option<f32>) -> Vec<SearchOutcome> {
    searches
        .iter()
        .enumerate()
        .map(|(index, search)| {
            let mate_rank = search.result.as_ref().and_then(|r| r.mate_rank);
            let decision = search.result.as_ref().and_then(|r| decide(index, r)).filter(|s| s.is_finite());
            SearchOutcome {
                mated: search.mated,
                mate_rank: if search.mated { mate_rank } else { None },
                decision_score: decision.unwrap_or(NO_DECISION),
                top_is_mate: search.mated && mate_rank == Some(1),
            }
        })
        .collect()
}

/// Decision scores of searches that reached the gallery (probe had a face), by mated-ness.
fn decision_scores(outcomes: &[SearchOutcome], mated: bool) -> Vec<f32> {
    outcomes.iter().filter(|o| o.mated == mated && o.decision_score != NO_DECISION).map(|o| o.decision_score).collect()
}

fn fnir_points(outcomes: &[SearchOutcome]) -> anyhow::Result<Vec<Measurement<IdentOperatingPoint>>> {
    Ok(IDENTIFY_FPIR_TARGETS.iter().map(|&t| fnir_at_fpir(outcomes, t)).collect::<Result<Vec<_>, _>>()?)
}

fn fnir_cell(point: Option<&Measurement<IdentOperatingPoint>>) -> String {
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

fn measured_fnir(point: Option<&Measurement<IdentOperatingPoint>>) -> Option<f64> {
    point.and_then(|p| p.measured()).map(|p| p.fnir)
}

/// One attempt's figures, machine-readable.
#[derive(Debug, Serialize)]
struct AttemptSummary {
    statistic: String,
    fnir_at_fpir: Vec<Measurement<IdentOperatingPoint>>,
}

/// Figures at one gallery size, machine-readable.
#[derive(Debug, Serialize)]
struct GallerySizeSummary {
    label: String,
    distractors: usize,
    gallery_size: usize,
    rank_rates: Vec<(usize, f64)>,
    fnir_at_fpir_top1: Measurement<IdentOperatingPoint>,
    fnir_at_fpir_statistic: Measurement<IdentOperatingPoint>,
}

/// Headline identification numbers, machine-readable.
#[derive(Debug, Serialize)]
struct IdentifySummary {
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

/// Per-comparison impostor rates of a run: what they rest on, the thresholds they give at larger galleries next
/// to the search table's, and how well their tail predicts counted rates.
#[derive(Debug, Serialize)]
struct ImpostorSummary {
    comparisons: u64,
    tail_fit: usize,
    tail_scale: f64,
    thresholds: Vec<ThresholdAtSize>,
    tail_check: Vec<TailCheck>,
}

/// The top-1 threshold for one FPIR target at one gallery size, from both calibrations.
#[derive(Debug, Serialize)]
struct ThresholdAtSize {
    gallery_size: usize,
    fpir: f64,
    from_comparisons: f32,
    /// Whether that threshold lies in the fitted tail.
    extrapolated: bool,
    /// Share of the run's mated searches whose rank-1 candidate is the mate and reaches the threshold.
    mated_reaching: f64,
    /// `None`: the search table cannot resolve the target at this size.
    from_searches: Option<f32>,
}

/// Gallery sizes the impostor section gives thresholds for, besides the run's own.
const PROJECTED_GALLERY_SIZES: [usize; 3] = [10_000, 100_000, 1_000_000];
/// FPIR targets of those thresholds: the harness's 1 % and the service's default alert target, 0.3 %.
const PROJECTED_FPIR_TARGETS: [f64; 2] = [1e-2, 3e-3];

/// A manifest-ready `[calibration]` table.
#[derive(Serialize)]
struct CalibrationFile<'a> {
    calibration: &'a CalibrationSpec,
}

/// The decision statistic of a run: the command line's, else the recognizer manifest's calibration's, else top1.
fn chosen_statistic(config: &Config, args: &IdentifyArgs) -> anyhow::Result<DecisionStatistic> {
    let manifest = ModelManifest::load(&config.models.resolve_dir()?, &config.models.recognizer)?;
    let deployed = manifest.calibration.as_ref();
    let cohort = args.margin_cohort.or(deployed.map(|c| c.margin_cohort).filter(|&c| c > 0)).unwrap_or(10);
    Ok(match (args.statistic, deployed) {
        (Some(StatisticName::Top1), _) => DecisionStatistic::Top1,
        (Some(StatisticName::Margin), _) => DecisionStatistic::from_manifest("margin", cohort)?,
        (None, Some(spec)) => DecisionStatistic::from_manifest(&spec.statistic, cohort)
            .with_context(|| format!("model {}: [calibration] statistic", manifest.id))?,
        (None, None) => DecisionStatistic::Top1,
    })
}

/// The base-gallery part of an identification run: gallery, searches, and every attempt's FNIR at FPIR.
struct BaseRun {
    gallery: Gallery,
    failures_to_enrol: usize,
    /// (photo, mated) of every search, mated first.
    probes: Vec<(usize, bool)>,
    fta_mated: usize,
    fta_nonmated: usize,
    searches: Vec<ProbeSearch>,
    primary: Vec<SearchOutcome>,
    top1: Vec<SearchOutcome>,
    attempts: Vec<(Attempt, Vec<Measurement<IdentOperatingPoint>>)>,
}

fn base_run(
    set: &PhotoSet,
    templates: &[Option<PhotoTemplate>],
    protocol: &OpenSetProtocol,
    statistic: DecisionStatistic,
    dimension: usize,
    pool: &rayon::ThreadPool,
) -> anyhow::Result<BaseRun> {
    let mut gallery = Gallery { templates: TemplateMatrix::new(dimension), mate_rows: HashMap::new() };
    let mut failures_to_enrol = 0;
    let roles = protocol.enrolments.iter().map(|&p| (p, true)).chain(protocol.distractors.iter().map(|&p| (p, false)));
    for (photo, enrolled) in roles {
        match embedding_of(templates, photo) {
            Some(template) => {
                if enrolled {
                    gallery.mate_rows.insert(set.photos[photo].identity.clone(), gallery.templates.len());
                }
                gallery.templates.push(template)?;
            }
            None => failures_to_enrol += 1,
        }
    }
    let Some(gallery_mean) = gallery.templates.mean() else {
        bail!("no gallery photo has a face");
    };
    let probes: Vec<(usize, bool)> = protocol
        .mated_probes
        .iter()
        .map(|&p| (p, true))
        .chain(protocol.nonmated_probes.iter().map(|&p| (p, false)))
        .collect();
    let fta_mated = protocol.mated_probes.iter().filter(|&&p| embedding_of(templates, p).is_none()).count();
    let fta_nonmated = protocol.nonmated_probes.iter().filter(|&&p| embedding_of(templates, p).is_none()).count();

    let keep = (ADAPTIVE_COHORT + 1).max(statistic.candidates_needed()).max(CMC_MAX_RANK);
    let searches = search_probes(&gallery, set, templates, &probes, keep, pool);
    // Centring uses the gallery's own mean: known at enrolment, no labels, nothing from the probes.
    let centred_gallery =
        Gallery { templates: gallery.templates.centred(&gallery_mean), mate_rows: gallery.mate_rows.clone() };
    let centred_templates: Vec<Option<PhotoTemplate>> = templates
        .iter()
        .map(|t| {
            t.as_ref().map(|t| PhotoTemplate {
                embedding: t.embedding.as_ref().map(|e| centre(e, &gallery_mean)),
                ..t.clone()
            })
        })
        .collect();
    let centred_searches = search_probes(&centred_gallery, set, &centred_templates, &probes, keep, pool);
    let (neighbours, centred_neighbours) = pool.install(|| {
        rayon::join(
            || template_neighbour_scores(&gallery.templates, usize::MAX),
            || template_neighbour_scores(&centred_gallery.templates, ADAPTIVE_COHORT),
        )
    });
    let detector_scores: Vec<Option<f32>> = probes
        .iter()
        .map(|&(photo, _)| templates[photo].as_ref().and_then(|t| t.quality.map(|q| q.detector_score)))
        .collect();
    let inputs = AttemptInputs {
        centred: &centred_searches,
        neighbours: &neighbours,
        centred_neighbours: &centred_neighbours,
        detector_scores: &detector_scores,
    };
    let primary = outcomes(&searches, |_, r| statistic.decide(&r.scores()));
    let top1 = outcomes(&searches, |_, r| DecisionStatistic::Top1.decide(&r.scores()));
    let attempts = attempts(statistic)
        .into_iter()
        .map(|attempt| Ok((attempt, fnir_points(&outcomes(&searches, |i, r| attempt.decide(&inputs, i, r)))?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(BaseRun { gallery, failures_to_enrol, probes, fta_mated, fta_nonmated, searches, primary, top1, attempts })
}

fn identify(config: &Config, args: &IdentifyArgs) -> anyhow::Result<ExitCode> {
    let statistic = chosen_statistic(config, args)?;
    let set = PhotoSet::load(&args.dir)?;
    let dataset = set.name();
    if let Some(splits) = args.split_study {
        return split_study(config, args, statistic, &set, splits);
    }
    let split = split_identities(&set, args.split_seed);
    let (included, held_out): (Option<&BTreeSet<String>>, Option<&BTreeSet<String>>) = match args.split {
        SplitPart::All => (None, None),
        SplitPart::Tuning => (Some(&split.tuning), Some(&split.test)),
        SplitPart::Test => (Some(&split.test), Some(&split.tuning)),
    };
    let protocol = open_set_protocol(&set, |id| included.is_none_or(|ids| ids.contains(id)));
    if protocol.mated_probes.is_empty() {
        bail!("eval identify {dataset}: no identity has two photos, so there is no mated search");
    }
    // The other half's photos are real distractors nobody searches for (split runs only).
    let held_out_photos: Vec<usize> = held_out.map_or_else(Vec::new, |ids| {
        (0..set.photos.len()).filter(|&i| ids.contains(&set.photos[i].identity)).collect()
    });
    let setup = model_setup(config)?;
    let pool = thread_pool(args.run.threads)?;
    let needed: BTreeSet<usize> = protocol
        .enrolments
        .iter()
        .chain(&protocol.distractors)
        .chain(&protocol.mated_probes)
        .chain(&protocol.nonmated_probes)
        .chain(&held_out_photos)
        .copied()
        .collect();
    let templates = photo_templates(config, &setup, &set, &needed, &args.run, &pool)?;

    let run = base_run(&set, &templates, &protocol, statistic, setup.dimension, &pool)
        .with_context(|| format!("eval identify {dataset}"))?;
    let BaseRun {
        gallery,
        failures_to_enrol,
        probes,
        fta_mated,
        fta_nonmated,
        searches,
        primary,
        top1,
        attempts: tried,
    } = run;
    let base_size = gallery.templates.len();
    let ranks = rank_rates(&primary, &REPORTED_RANKS)?;
    let primary_points = fnir_points(&primary)?;
    let top1_points = fnir_points(&top1)?;
    let nonmated_searches = protocol.nonmated_probes.len();

    let stem = match args.split {
        SplitPart::All => format!("identify-{dataset}-{}", setup.recognizer.id),
        part => format!("identify-{dataset}-{}-{}", part.label(), setup.recognizer.id),
    };
    let mut report = Report::new(format!(
        "open-set 1:N identification, {dataset} ({} identities), {}",
        args.split.label(),
        setup.recognizer.id
    ));
    report.seeds = vec![args.seed, args.split_seed];
    report.models = vec![setup.recognizer.clone(), setup.detector.clone()];
    report.gallery_sizes = vec![base_size];

    let mut protocol_table = Table::new("Protocol", ["role", "count"]);
    for (role, count) in [
        ("enrolled identities (first photo of each identity with >= 2 photos)", protocol.enrolments.len()),
        ("gallery distractors (single-photo identities, 1st, 3rd, ...)", protocol.distractors.len()),
        ("gallery size (templates with a face)", base_size),
        ("failures to enrol (no face)", failures_to_enrol),
        ("mated searches (other photos of enrolled identities)", protocol.mated_probes.len()),
        ("non-mated searches (single-photo identities, 2nd, 4th, ...)", nonmated_searches),
        ("failures to acquire, mated searches (counted as misses)", fta_mated),
        ("failures to acquire, non-mated searches (never alarm)", fta_nonmated),
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

    // Attempts table: every statistic on the same searches.
    let top1_fnir = measured_fnir(top1_points.first());
    let mut attempt_table = Table::new(
        "Decision statistics tried (same searches; ranks unchanged)",
        ["statistic", "FNIR at FPIR 1e-2", "FNIR at FPIR 3e-3", "change at 1e-2 vs top1"],
    );
    let mut attempt_summaries = Vec::new();
    for (attempt, points) in tried {
        let change = match (measured_fnir(points.first()), top1_fnir) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:+.1} %", 100.0 * (a - b) / b),
            _ => "-".into(),
        };
        attempt_table.push_row([attempt.label(), fnir_cell(points.first()), fnir_cell(points.get(1)), change])?;
        attempt_summaries.push(AttemptSummary { statistic: attempt.label(), fnir_at_fpir: points });
    }
    report.tables.push(attempt_table);

    let mate_scores: Vec<f32> = searches.iter().filter_map(|s| s.result.as_ref()?.mate_score).collect();
    let mut percentile_rows = Vec::new();
    for (label, sample) in [
        ("mated searches, top1".to_owned(), decision_scores(&top1, true)),
        ("non-mated searches, top1".to_owned(), decision_scores(&top1, false)),
        ("mated searches, score of the mate".to_owned(), mate_scores),
        (format!("mated searches, {statistic}"), decision_scores(&primary, true)),
        (format!("non-mated searches, {statistic}"), decision_scores(&primary, false)),
    ] {
        if !sample.is_empty() {
            percentile_rows.push((label, score_percentiles(&sample, &STANDARD_PERCENTILES)?));
        }
    }
    report.tables.push(Table::percentiles("Decision score percentiles", &percentile_rows));

    // Gallery size: synthetic distractors (and, in split runs, the other half's real photos).
    let mut size_rows: Vec<(String, usize, Vec<ProbeSearch>)> = Vec::new();
    let model = GaussianFaceModel::fit(&gallery.templates);
    let size_keep = statistic.candidates_needed().max(CMC_MAX_RANK);
    let mut extra_sets: Vec<(String, TemplateMatrix)> = Vec::new();
    if !held_out_photos.is_empty() {
        let mut real = TemplateMatrix::new(setup.dimension);
        for &photo in &held_out_photos {
            if let Some(template) = embedding_of(&templates, photo) {
                real.push(template)?;
            }
        }
        if let Ok(model) = &model {
            let synthetic = model.sample(real.len(), args.seed.wrapping_add(0x5eed));
            extra_sets.push(("synthetic, as many as the real held-out photos".into(), synthetic));
        }
        extra_sets.push(("real: every photo of the other split's identities".into(), real));
    }
    match &model {
        Ok(model) => {
            for &multiple in args.distractors.iter().filter(|&&m| m > 0) {
                let count = multiple * base_size;
                let seed = args.seed ^ 0x9E37_79B9_7F4A_7C15u64.wrapping_mul(multiple as u64);
                extra_sets.push((format!("synthetic, {multiple}x the base gallery"), model.sample(count, seed)));
            }
        }
        Err(err) => report.notes.push(format!("no synthetic distractors: {err}")),
    }
    for (label, extra) in extra_sets {
        let mut extended = Gallery { templates: gallery.templates.clone(), mate_rows: gallery.mate_rows.clone() };
        extended.templates.extend(&extra)?;
        let found = search_probes(&extended, &set, &templates, &probes, size_keep, &pool);
        size_rows.push((label, extra.len(), found));
    }
    let mut size_header: Vec<String> =
        ["distractors", "added", "gallery size", "rank-1", "rank-10", "FNIR at FPIR 1e-2, top1"]
            .map(String::from)
            .into();
    // A second FNIR column only when the decision statistic is not top1 itself.
    let second_column = statistic != DecisionStatistic::Top1;
    if second_column {
        size_header.push(format!("FNIR at FPIR 1e-2, {statistic}"));
    }
    let mut size_table = Table::new("Effect of gallery size (distractors added to the base gallery)", size_header);
    let mut size_summaries = Vec::new();
    let mut cmc_series = Vec::new();
    let mut det_series = Vec::new();
    let base_rows = std::iter::once(("none (base gallery)".to_owned(), 0usize, None));
    let all_rows = base_rows.chain(size_rows.iter().map(|(l, n, s)| (l.clone(), *n, Some(s))));
    for (label, added, found) in all_rows {
        let (stat_outcomes, top1_outcomes) = match found {
            None => (primary.clone(), top1.clone()),
            Some(found) => (
                outcomes(found, |_, r| statistic.decide(&r.scores())),
                outcomes(found, |_, r| DecisionStatistic::Top1.decide(&r.scores())),
            ),
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
        size_table.push_row(row)?;
        cmc_series.push(CmcSeries {
            label: format!("gallery {size}: {label}"),
            points: cmc_curve(&stat_outcomes, CMC_MAX_RANK)?,
        });
        if let Ok(points) = det_curve(&stat_outcomes) {
            det_series.push(DetSeries { label: format!("{statistic}, gallery {size}: {label}"), points });
        }
        if added > 0 {
            report.gallery_sizes.push(size);
        }
        size_summaries.push(GallerySizeSummary {
            label,
            distractors: added,
            gallery_size: size,
            rank_rates: rates,
            fnir_at_fpir_top1: fnir_top1,
            fnir_at_fpir_statistic: fnir_stat,
        });
    }
    report.tables.push(size_table);

    std::fs::create_dir_all(&args.run.out)
        .with_context(|| format!("report folder {}: cannot be created", args.run.out.display()))?;
    report.figures.push(plot_cmc(
        &format!("CMC, {dataset} ({}), {}", args.split.label(), setup.recognizer.id),
        &cmc_series,
        &figure_path(&args.run.out, &stem, "cmc"),
    )?);
    if let Ok(points) = det_curve(&top1) {
        if statistic != DecisionStatistic::Top1 {
            det_series.insert(1, DetSeries { label: format!("top1, gallery {base_size}"), points });
        }
    }
    if det_series.is_empty() {
        report.notes.push("no DET: the protocol gives no non-mated searches on this folder".into());
    } else {
        report.figures.push(plot_det(
            &format!("identification DET, {dataset} ({}), {}", args.split.label(), setup.recognizer.id),
            &det_series,
            &figure_path(&args.run.out, &stem, "det"),
        )?);
    }
    report.figures.push(plot_score_histograms(
        &format!("decision statistic {statistic}, {dataset} ({}), {}", args.split.label(), setup.recognizer.id),
        &decision_scores(&primary, true),
        &decision_scores(&primary, false),
        &figure_path(&args.run.out, &stem, "scores"),
    )?);

    let (mut comparisons, pair_stride) = impostor_scores(&set, &templates, &needed, &pool);
    if pair_stride > 1 {
        report.notes.push(format!(
            "impostor rates: every {pair_stride}th photo pair is scored, to keep at most {MAX_IMPOSTOR_PAIRS} pairs"
        ));
    }
    // The tail check fits a tenth of the comparisons, so it needs ten times what the rates need.
    let check = tail_check(&comparisons, 10, &[1000, 300, 100, 30, 10, 3]).ok();
    let rates = match impostor_rates(&mut comparisons) {
        Ok(rates) => Some(rates),
        Err(ScoreError::TooFewImpostorComparisons { found, needed }) => {
            report.notes.push(format!(
                "no per-comparison impostor rates: {found} comparisons between photos of different identities, a \
                 tail fit needs {needed}"
            ));
            None
        }
        Err(e) => return Err(e).with_context(|| format!("eval identify {dataset}: impostor rates")),
    };
    drop(comparisons);
    let impostor_summary = match &rates {
        Some(rates) => Some(impostor_section(&mut report, rates, check, &top1, base_size)?),
        None => None,
    };

    let calibration = match &args.calibration_out {
        Some(path) => {
            let source = format!(
                "{dataset}, open-set protocol of `facematch eval identify` (split {}, split seed {}), {} non-mated \
                 searches with a face against a gallery of {base_size}; recognizer sha256 {}, detector {} sha256 {}",
                args.split.label(),
                args.split_seed,
                decision_scores(&primary, false).len(),
                setup.recognizer.sha256,
                setup.detector.id,
                setup.detector.sha256
            );
            let comparisons = if statistic == DecisionStatistic::Top1 { rates } else { None };
            let source = match &comparisons {
                Some(rates) => format!(
                    "{source}; per-comparison rates: {} pair of its photos of different identities ({} \
                     comparisons)",
                    if pair_stride > 1 { format!("every {pair_stride}th") } else { "every".to_owned() },
                    rates.comparisons()
                ),
                None => source,
            };
            write_calibration(path, statistic, &decision_scores(&primary, false), base_size, comparisons, source)?;
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
            args.split.label(),
            ids.len(),
            args.split_seed
        ));
    }

    let files = report.write_files(&args.run.out, &stem)?;
    let summary = IdentifySummary {
        dataset,
        split: args.split.label().into(),
        split_seed: args.split_seed,
        seed: args.seed,
        recognizer: setup.recognizer,
        detector: setup.detector,
        statistic,
        gallery_size: base_size,
        enrolments: protocol.enrolments.len(),
        distractors: protocol.distractors.len(),
        mated_searches: protocol.mated_probes.len(),
        nonmated_searches,
        failures_to_enrol,
        failures_to_acquire_mated: fta_mated,
        failures_to_acquire_nonmated: fta_nonmated,
        rank_rates: ranks,
        fnir_at_fpir: primary_points,
        fnir_at_fpir_top1: top1_points,
        attempts: attempt_summaries,
        gallery_sizes: size_summaries,
        impostor_rates: impostor_summary,
        calibration,
    };
    publish(&args.run.out, &stem, &summary, &report, &files)
}

/// Photo pairs the impostor rates may score in one run: 50 million scores take 200 MB (twice, with the tail
/// check), and lfw-dev's 7 million all fit. A larger folder gets every `stride`-th pair instead.
const MAX_IMPOSTOR_PAIRS: u64 = 50_000_000;

/// Keep every `stride`-th of the `photos·(photos−1)/2` pairs so that at most `cap` remain (1: every pair).
fn pair_stride(photos: u64, cap: u64) -> u64 {
    let pairs = photos * photos.saturating_sub(1) / 2;
    pairs.div_ceil(cap.max(1)).max(1)
}

/// The comparisons between the subjects of two photos of different identities among `photos` (every `stride`-th
/// pair of the photo-by-photo order, see [`pair_stride`]), in that order, which does not follow the scores.
/// Returns the scores and the stride.
fn impostor_scores(
    set: &PhotoSet,
    templates: &[Option<PhotoTemplate>],
    photos: &BTreeSet<usize>,
    pool: &rayon::ThreadPool,
) -> (Vec<f32>, u64) {
    let faces: Vec<(&str, &[f32])> = photos
        .iter()
        .filter_map(|&i| Some((set.photos[i].identity.as_str(), embedding_of(templates, i)?)))
        .collect();
    let n = faces.len() as u64;
    let stride = pair_stride(n, MAX_IMPOSTOR_PAIRS);
    let scores = pool.install(|| {
        faces
            .par_iter()
            .enumerate()
            .flat_map_iter(|(i, &(identity, a))| {
                // Index of the pair (i, i + 1) in the photo-by-photo order of all pairs.
                let first = i as u64 * n - i as u64 * (i as u64 + 1) / 2;
                faces[i + 1..]
                    .iter()
                    .enumerate()
                    .filter(move |&(offset, (other, _))| (first + offset as u64).is_multiple_of(stride) && *other != identity)
                    .map(move |(_, (_, b))| dot(a, b))
            })
            .collect()
    });
    (scores, stride)
}

/// Adds the per-comparison impostor tables to the report: what the rates rest on, top-1 thresholds at larger
/// galleries from them and from the search table, and the tail check.
fn impostor_section(
    report: &mut Report,
    rates: &ImpostorRates,
    check: Option<Vec<TailCheck>>,
    top1: &[SearchOutcome],
    base_size: usize,
) -> anyhow::Result<ImpostorSummary> {
    let nonmated_top1 = decision_scores(top1, false);
    let searches =
        if nonmated_top1.is_empty() { None } else { Some(fpir_calibration_table(&nonmated_top1, base_size)?) };
    let mut thresholds = Vec::new();
    let mut table = Table::new(
        format!(
            "Top-1 thresholds by gallery size: per-comparison rates ({} impostor comparisons, tail scale {:.5} fitted \
             on the highest {}) against the non-mated search table ({} searches at gallery {base_size})",
            rates.comparisons(),
            rates.tail_scale(),
            rates.tail_fit(),
            nonmated_top1.len()
        ),
        ["gallery size", "FPIR target", "from comparisons", "mated searches reaching it", "from searches"],
    );
    for gallery_size in std::iter::once(base_size).chain(PROJECTED_GALLERY_SIZES) {
        for fpir in PROJECTED_FPIR_TARGETS {
            let from_comparisons = rates.threshold_for_fpir_at_gallery_size(fpir, gallery_size)?;
            let extrapolated = rates.is_extrapolated(from_comparisons);
            let from_searches = searches.as_ref().and_then(|s| s.threshold_for_fpir_at_gallery_size(fpir, gallery_size).ok());
            // Of this run's mated searches (gallery `base_size`), those that would alert at the threshold.
            let mated_reaching = 1.0 - fnir_at_threshold(top1, from_comparisons)?;
            table.push_row([
                gallery_size.to_string(),
                format_rate(fpir),
                format!("{from_comparisons:.4}{}", if extrapolated { " (fitted tail)" } else { "" }),
                format_rate(mated_reaching),
                from_searches.map_or_else(|| "beyond the table".to_owned(), |t| format!("{t:.4}")),
            ])?;
            thresholds.push(ThresholdAtSize {
                gallery_size,
                fpir,
                from_comparisons,
                extrapolated,
                mated_reaching,
                from_searches,
            });
        }
    }
    report.tables.push(table);
    match &check {
        Some(rows) => report.tables.push(tail_check_table(rows)?),
        None => report.notes.push("no tail check: a tenth of the impostor comparisons is too few for a tail fit".into()),
    }
    Ok(ImpostorSummary {
        comparisons: rates.comparisons(),
        tail_fit: rates.tail_fit(),
        tail_scale: rates.tail_scale(),
        thresholds,
        tail_check: check.unwrap_or_default(),
    })
}

fn tail_check_table(rows: &[TailCheck]) -> anyhow::Result<Table> {
    let mut table = Table::new(
        "Tail check: rates fitted on every 10th comparison against the counts of all of them",
        [
            "counted comparisons",
            "score",
            "counted rate",
            "predicted rate",
            "predicted / counted",
            "from",
            "anchored at the fit threshold / counted",
        ],
    );
    for row in rows {
        table.push_row([
            row.counted.to_string(),
            format!("{:.4}", row.score),
            format_rate(row.counted_rate),
            format_rate(row.predicted_rate),
            format!("{:.2}", row.predicted_rate / row.counted_rate),
            if row.extrapolated { "fitted tail" } else { "counted" }.to_owned(),
            format!("{:.2}", row.predicted_from_fit_threshold / row.counted_rate),
        ])?;
    }
    Ok(table)
}

/// Writes the FPIR calibration table of `statistic` as a manifest `[calibration]` table, with the per-comparison
/// rates for `top1`, and reads it back through the same checks the service applies.
fn write_calibration(
    path: &Path,
    statistic: DecisionStatistic,
    nonmated_scores: &[f32],
    gallery_size: usize,
    comparisons: Option<ImpostorRates>,
    source: String,
) -> anyhow::Result<()> {
    if nonmated_scores.is_empty() {
        bail!("calibration {}: the protocol gives no non-mated search with a face on this folder", path.display());
    }
    let table = fpir_calibration_table(nonmated_scores, gallery_size)?;
    let spec = CalibrationSpec {
        statistic: statistic.manifest_name().into(),
        margin_cohort: statistic.margin_cohort(),
        gallery_size: table.gallery_size(),
        searches: table.searches(),
        source,
        scores: table.scores().to_vec(),
        fpir: table.fpir().to_vec(),
        comparisons,
    };
    let text = format!(
        "# FPIR calibration of decision statistic {statistic}: paste into the model manifest.\n{}",
        toml::to_string(&CalibrationFile { calibration: &spec })?
    );
    // The written numbers must survive the round trip through TOML and the table's invariants.
    #[derive(Deserialize)]
    struct Check {
        calibration: CalibrationSpec,
    }
    let back: Check = toml::from_str(&text)?;
    crate::service::Calibration::from_spec(&back.calibration)?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("calibration folder {}: cannot be created", parent.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("calibration {}: cannot be written", path.display()))?;
    Ok(())
}

/// One attempt's FNIR at FPIR 1e-2 on the tuning and test halves of each split (`None`: not measurable).
#[derive(Debug, Serialize)]
struct AttemptAcrossSplits {
    statistic: String,
    deployable: bool,
    tuning: Vec<Option<f64>>,
    test: Vec<Option<f64>>,
}

/// What was picked on one tuning half and how it did on the test half.
#[derive(Debug, Serialize)]
struct SplitPick {
    split_seed: u64,
    top1_tuning: Option<f64>,
    top1_test: Option<f64>,
    rank1_tuning: f64,
    rank1_test: f64,
    deployable: String,
    deployable_tuning: Option<f64>,
    deployable_test: Option<f64>,
    any: String,
    any_tuning: Option<f64>,
    any_test: Option<f64>,
}

#[derive(Debug, Serialize)]
struct SplitStudySummary {
    dataset: String,
    recognizer: ModelFact,
    detector: ModelFact,
    split_seeds: Vec<u64>,
    attempts: Vec<AttemptAcrossSplits>,
    picks: Vec<SplitPick>,
}

fn mean_of(values: &[Option<f64>]) -> Option<f64> {
    let measured: Vec<f64> = values.iter().flatten().copied().collect();
    (measured.len() == values.len() && !values.is_empty()).then(|| measured.iter().sum::<f64>() / measured.len() as f64)
}

fn rate_cell(value: Option<f64>) -> String {
    value.map_or_else(|| "not measurable".into(), format_rate)
}

/// Lowest FNIR among the candidates (the first on ties, so simpler statistics win them); `None` when none is
/// measurable.
fn pick(candidates: &[(String, Option<f64>)]) -> Option<&(String, Option<f64>)> {
    candidates
        .iter()
        .filter(|(_, fnir)| fnir.is_some())
        .min_by(|a, b| a.1.unwrap_or(f64::INFINITY).total_cmp(&b.1.unwrap_or(f64::INFINITY)))
}

/// `--split-study N`: every attempt on both halves of N seeded identity splits; the statistic with the lowest
/// FNIR at FPIR 1e-2 on each tuning half (among deployable statistics, and among all attempts) is reported on the
/// test half of the same split, which it never saw.
fn split_study(
    config: &Config,
    args: &IdentifyArgs,
    statistic: DecisionStatistic,
    set: &PhotoSet,
    splits: usize,
) -> anyhow::Result<ExitCode> {
    if splits == 0 {
        bail!("eval identify: --split-study needs at least one split");
    }
    let dataset = set.name();
    let setup = model_setup(config)?;
    let pool = thread_pool(args.run.threads)?;
    let everything: BTreeSet<usize> = (0..set.photos.len()).collect();
    let templates = photo_templates(config, &setup, set, &everything, &args.run, &pool)?;
    let seeds: Vec<u64> = (0..splits as u64).map(|i| args.split_seed.wrapping_add(i)).collect();
    let mut across: Vec<AttemptAcrossSplits> = attempts(statistic)
        .iter()
        .map(|a| AttemptAcrossSplits {
            statistic: a.label(),
            deployable: matches!(a, Attempt::Statistic(_)),
            tuning: Vec::new(),
            test: Vec::new(),
        })
        .collect();
    let mut picks = Vec::new();
    for &seed in &seeds {
        let split = split_identities(set, seed);
        let mut rank1 = [0.0; 2];
        for (part, ids) in [&split.tuning, &split.test].into_iter().enumerate() {
            let protocol = open_set_protocol(set, |id| ids.contains(id));
            let run = base_run(set, &templates, &protocol, statistic, setup.dimension, &pool)
                .with_context(|| format!("eval identify {dataset}, split seed {seed}"))?;
            rank1[part] = rank_rates(&run.top1, &[1])?.first().map_or(0.0, |r| r.1);
            for (slot, (_, points)) in across.iter_mut().zip(&run.attempts) {
                let fnir = measured_fnir(points.first());
                if part == 0 {
                    slot.tuning.push(fnir)
                } else {
                    slot.test.push(fnir)
                }
            }
        }
        let latest = |a: &AttemptAcrossSplits| (a.statistic.clone(), a.tuning.last().copied().flatten());
        let deployable: Vec<_> = across.iter().filter(|a| a.deployable).map(latest).collect();
        let any: Vec<_> = across.iter().map(latest).collect();
        let test_of =
            |label: &str| across.iter().find(|a| a.statistic == label).and_then(|a| a.test.last().copied().flatten());
        let (deployable_pick, any_pick) = (pick(&deployable).cloned(), pick(&any).cloned());
        picks.push(SplitPick {
            split_seed: seed,
            top1_tuning: across[0].tuning.last().copied().flatten(),
            top1_test: across[0].test.last().copied().flatten(),
            rank1_tuning: rank1[0],
            rank1_test: rank1[1],
            deployable_test: deployable_pick.as_ref().and_then(|(l, _)| test_of(l)),
            deployable: deployable_pick.as_ref().map_or_else(|| "-".into(), |(l, _)| l.clone()),
            deployable_tuning: deployable_pick.and_then(|(_, f)| f),
            any_test: any_pick.as_ref().and_then(|(l, _)| test_of(l)),
            any: any_pick.as_ref().map_or_else(|| "-".into(), |(l, _)| l.clone()),
            any_tuning: any_pick.and_then(|(_, f)| f),
        });
    }

    let stem = format!("identify-{dataset}-splits-{}", setup.recognizer.id);
    let mut report = Report::new(format!(
        "decision statistics over {splits} tuning/test identity splits, {dataset}, {}",
        setup.recognizer.id
    ));
    report.seeds = seeds.clone();
    report.models = vec![setup.recognizer.clone(), setup.detector.clone()];
    let top1_test_mean = mean_of(&across[0].test);
    let mut table = Table::new(
        "FNIR at FPIR 1e-2 over the splits (mean of the halves; ranks and rank-1 are the same for every statistic)",
        [
            "statistic",
            "deployable",
            "tuning mean",
            "test mean",
            "test min",
            "test max",
            "test vs top1",
            "test wins vs top1",
        ],
    );
    for attempt in &across {
        let test: Vec<f64> = attempt.test.iter().flatten().copied().collect();
        let wins = attempt
            .test
            .iter()
            .zip(&across[0].test)
            .filter(|(a, t)| matches!((a, t), (Some(a), Some(t)) if a < t))
            .count();
        let change = match (mean_of(&attempt.test), top1_test_mean) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:+.1} %", 100.0 * (a - b) / b),
            _ => "-".into(),
        };
        table.push_row([
            attempt.statistic.clone(),
            if attempt.deployable { "yes".into() } else { "no".into() },
            rate_cell(mean_of(&attempt.tuning)),
            rate_cell(mean_of(&attempt.test)),
            rate_cell(test.iter().copied().min_by(f64::total_cmp)),
            rate_cell(test.iter().copied().max_by(f64::total_cmp)),
            change,
            format!("{wins}/{}", attempt.test.len()),
        ])?;
    }
    report.tables.push(table);
    let mut pick_table = Table::new(
        "Picked on the tuning half (lowest FNIR at FPIR 1e-2), reported on the test half",
        [
            "split seed",
            "rank-1 tuning / test",
            "top1 tuning / test",
            "deployable pick",
            "its tuning / test",
            "any pick",
            "its tuning / test",
        ],
    );
    for p in &picks {
        pick_table.push_row([
            p.split_seed.to_string(),
            format!("{} / {}", format_rate(p.rank1_tuning), format_rate(p.rank1_test)),
            format!("{} / {}", rate_cell(p.top1_tuning), rate_cell(p.top1_test)),
            p.deployable.clone(),
            format!("{} / {}", rate_cell(p.deployable_tuning), rate_cell(p.deployable_test)),
            p.any.clone(),
            format!("{} / {}", rate_cell(p.any_tuning), rate_cell(p.any_test)),
        ])?;
    }
    let column_mean = |f: &dyn Fn(&SplitPick) -> Option<f64>| mean_of(&picks.iter().map(f).collect::<Vec<_>>());
    let relative = |picked: Option<f64>| match (picked, column_mean(&|p| p.top1_test)) {
        (Some(a), Some(b)) if b > 0.0 => format!(" ({:+.1} % vs top1)", 100.0 * (a - b) / b),
        _ => String::new(),
    };
    let deployable_test = column_mean(&|p| p.deployable_test);
    let any_test = column_mean(&|p| p.any_test);
    pick_table.push_row([
        "mean".to_owned(),
        format!(
            "{} / {}",
            format_rate(picks.iter().map(|p| p.rank1_tuning).sum::<f64>() / picks.len() as f64),
            format_rate(picks.iter().map(|p| p.rank1_test).sum::<f64>() / picks.len() as f64)
        ),
        format!("{} / {}", rate_cell(column_mean(&|p| p.top1_tuning)), rate_cell(column_mean(&|p| p.top1_test))),
        "-".into(),
        format!(
            "{} / {}{}",
            rate_cell(column_mean(&|p| p.deployable_tuning)),
            rate_cell(deployable_test),
            relative(deployable_test)
        ),
        "-".into(),
        format!("{} / {}{}", rate_cell(column_mean(&|p| p.any_tuning)), rate_cell(any_test), relative(any_test)),
    ])?;
    report.tables.push(pick_table);
    report.notes.extend([
        "each split halves the identities (stratified: identities with several photos and single-photo identities \
         are halved separately); each half runs the full open-set protocol on its own identities"
            .to_owned(),
        "deployable statistics are the ones a manifest's [calibration] can name (top1, margin); a pick is the \
         lowest tuning FNIR, ties going to the simpler statistic listed first"
            .to_owned(),
        "FNIR at FPIR 1e-2 on a half rests on half the set's non-mated searches (about 320 on lfw-dev, where the \
         threshold is then the 4th-highest non-mated decision score), so single-split figures move by several \
         points from split to split; read the means"
            .to_owned(),
    ]);
    std::fs::create_dir_all(&args.run.out)
        .with_context(|| format!("report folder {}: cannot be created", args.run.out.display()))?;
    let files = report.write_files(&args.run.out, &stem)?;
    let summary = SplitStudySummary {
        dataset,
        recognizer: setup.recognizer,
        detector: setup.detector,
        split_seeds: seeds,
        attempts: across,
        picks,
    };
    let summary_path = write_summary(&args.run.out, &stem, &summary)?;
    print!("{}", report.render_terminal());
    println!("\nreport: {}; summary: {}", files.json.display(), summary_path.display());
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pair_stride_caps_the_impostor_pairs() {
        // lfw-dev: 3,769 photos, 7,100,796 pairs, all kept.
        assert_eq!(pair_stride(3769, MAX_IMPOSTOR_PAIRS), 1);
        // 100,000 photos: 4,999,950,000 pairs, every 100th kept (49,999,500).
        assert_eq!(pair_stride(100_000, MAX_IMPOSTOR_PAIRS), 100);
        // 10 photos, 45 pairs, at most 10 kept: every 5th (9 pairs).
        assert_eq!(pair_stride(10, 10), 5);
        assert_eq!(pair_stride(0, 10), 1);
        assert_eq!(pair_stride(1, 10), 1);
    }
}
