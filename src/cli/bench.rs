//! `facematch bench pipeline | index | http`: speed figures printed as tables and written as JSON.
//!
//! `bench pipeline` measures the face pipeline the way `scripts/reference_pipeline.py` measures the Python
//! reference, so `scripts/bench_pipeline.sh` can put the two side by side: one session per model at one intra-op
//! thread, an untimed warm-up, every photo read from disk inside the timed region, and align/embed figures taken
//! over the photos that yielded a face.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;

use crate::config::Config;
use crate::eval::metrics::{latency_summary, LatencySummary};
use crate::eval::report::{ModelFact, Report, Table};
use crate::loadgen::process_cpu_seconds;
use crate::pipeline::{AnalyzeOptions, FacePipeline};

#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Per-stage latency of the face pipeline on real photos, at one thread.
    Pipeline(PipelineBenchArgs),
    /// Pipeline throughput with several threads on one photo (the "pipeline alone" baseline of `bench http`).
    PipelineThroughput(crate::loadgen::PipelineThroughputArgs),
    /// Load generator against a running server: throughput, latency percentiles, errors, per-stage latency.
    Http(crate::loadgen::HttpBenchArgs),
    /// Fill a data directory with synthetic templates (gallery-size benchmarks).
    Seed(crate::loadgen::SeedArgs),
    /// ANN index: recall@k against exact search, queries/s per ef, build time, memory, load time.
    Index(IndexBenchArgs),
    /// Re-renders an index benchmark's report from DIR/report.json, with hnswlib's figures when
    /// scripts/ann_side_by_side.py has written DIR/hnswlib_report.json.
    IndexReport {
        /// The `--out` folder of `facematch bench index`.
        dir: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
pub struct IndexBenchArgs {
    /// Vectors in the index.
    #[arg(long, default_value_t = 100_000)]
    pub n: usize,
    /// Vector dimension (256: face-reid-retail-0095, 128: dlib).
    #[arg(long, default_value_t = 256)]
    pub dim: usize,
    #[arg(long, default_value_t = 1_000)]
    pub queries: usize,
    /// Search efforts to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "16,32,64,128")]
    pub ef: Vec<usize>,
    /// Where the vectors (for scripts/ann_side_by_side.py) and the report go.
    #[arg(long, default_value = "reports/index")]
    pub out: PathBuf,
    /// Also measure hnsw_rs on the same vectors.
    #[arg(long)]
    pub compare_hnsw_rs: bool,
    /// Only the build, load and ef sweep: skip the deletion and filter studies (at 1M they take longer than the
    /// sweep).
    #[arg(long)]
    pub sweep_only: bool,
}

fn bench_index(args: &IndexBenchArgs) -> anyhow::Result<ExitCode> {
    let cfg = crate::index::bench::IndexBenchConfig {
        n: args.n,
        dim: args.dim,
        queries: args.queries,
        ef: args.ef.clone(),
        out_dir: args.out.clone(),
        compare_hnsw_rs: args.compare_hnsw_rs,
        deletion: !args.sweep_only,
        filter: !args.sweep_only,
        ..Default::default()
    };
    let started = Instant::now();
    let mut progress = |phase: &str| eprintln!("[{:>7.1} s] {phase}", started.elapsed().as_secs_f64());
    let bench = crate::index::bench::run_index_bench_with_progress(&cfg, &mut progress)?;
    render_index_report(&bench, &args.out)
}

fn bench_index_report(dir: &Path) -> anyhow::Result<ExitCode> {
    let path = dir.join("report.json");
    let text = std::fs::read_to_string(&path).with_context(|| format!("bench index-report: read {}", path.display()))?;
    let bench: crate::index::bench::IndexBenchReport =
        serde_json::from_str(&text).with_context(|| format!("bench index-report: parse {}", path.display()))?;
    render_index_report(&bench, dir)
}

/// Prints the readable tables and writes index.{json,md,html} and the recall-vs-QPS figure next to report.json.
fn render_index_report(bench: &crate::index::bench::IndexBenchReport, dir: &Path) -> anyhow::Result<ExitCode> {
    let hnswlib = crate::eval::index_report::read_hnswlib_report(dir)?;
    let report = crate::eval::index_report::write_index_report(bench, hnswlib.as_ref(), dir)?;
    println!("{}", report.render_terminal());
    eprintln!("report: {}", dir.join("index.md").display());
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, clap::Args)]
pub struct PipelineBenchArgs {
    /// Photo files, or folders searched recursively for .jpg/.jpeg/.png (sorted, so runs are repeatable).
    #[arg(required = true)]
    pub photos: Vec<PathBuf>,
    /// Use only the first N photos (0: all).
    #[arg(long, default_value_t = 0)]
    pub limit: usize,
    /// Timed passes over the photos.
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// Untimed photos run first (from the start of the list) so session start-up is not billed.
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Detector manifest id (overrides `models.detector`).
    #[arg(long)]
    pub detector: Option<String>,
    /// Align and embed at most this many faces per photo, best score first (default: every face found). The
    /// reference script embeds one face per photo, so the side-by-side passes 1.
    #[arg(long)]
    pub max_faces: Option<usize>,
    /// Write the figures here as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

pub fn run(config: &Config, command: &BenchCommand) -> anyhow::Result<ExitCode> {
    match command {
        BenchCommand::Pipeline(args) => bench_pipeline(config, args),
        BenchCommand::PipelineThroughput(args) => crate::loadgen::run_pipeline_throughput_cli(config, args),
        BenchCommand::Http(args) => crate::loadgen::run_http_bench_cli(config, args),
        BenchCommand::Seed(args) => crate::loadgen::run_seed_cli(config, args),
        BenchCommand::Index(args) => bench_index(args),
        BenchCommand::IndexReport { dir } => bench_index_report(dir),
    }
}

/// Stage names in pipeline order; `total` is the wall time of read + decode + detect + align + embed.
const STAGES: [&str; 5] = ["decode", "detect", "align", "embed", "total"];

/// What `bench pipeline --json` writes: per-stage summaries in milliseconds plus the run's provenance.
#[derive(Debug, Serialize)]
struct PipelineBenchResult {
    detector: String,
    recognizer: String,
    photos: usize,
    photos_with_face: usize,
    faces_per_photo: f64,
    repeat: usize,
    threads: BTreeMap<&'static str, usize>,
    /// Mean and median per stage, the same keys `reference_pipeline.py --json` writes.
    mean_ms: BTreeMap<&'static str, f64>,
    median_ms: BTreeMap<&'static str, f64>,
    /// User + system processor time of the timed passes per photo: on a loaded machine wall time includes the time
    /// other processes held the CPU, this does not. `None` where `/proc/self/stat` is unavailable.
    cpu_ms_per_photo: Option<f64>,
    stages: BTreeMap<&'static str, LatencySummary>,
    report: Report,
}

fn bench_pipeline(config: &Config, args: &PipelineBenchArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.repeat >= 1, "bench pipeline: --repeat must be at least 1");
    let mut photos = collect_photos(&args.photos)?;
    if args.limit > 0 {
        photos.truncate(args.limit);
    }
    anyhow::ensure!(!photos.is_empty(), "bench pipeline: no .jpg/.jpeg/.png photos in the given paths");

    // The comparison with the reference is per core: one session per model, one intra-op thread.
    let mut config = config.clone();
    config.runtime.intra_threads = 1;
    config.runtime.sessions = 1;
    if let Some(detector) = &args.detector {
        config.models.detector = Some(detector.clone());
    }
    let pipeline = FacePipeline::load(&config.pipeline()).context("bench pipeline: loading the face pipeline")?;
    let options = AnalyzeOptions { min_face_px: None, max_faces: args.max_faces };

    for path in photos.iter().cycle().take(args.warmup.min(photos.len())) {
        time_photo(&pipeline, path, options)?;
    }
    let mut samples: BTreeMap<&'static str, Vec<f64>> = STAGES.iter().map(|s| (*s, Vec::new())).collect();
    let (mut photos_with_face, mut faces) = (0, 0);
    let cpu_start = process_cpu_seconds();
    for _ in 0..args.repeat {
        (photos_with_face, faces) = (0, 0);
        for path in &photos {
            let timed = time_photo(&pipeline, path, options)?;
            let mut push = |stage: &'static str, ms: f64| samples.entry(stage).or_default().push(ms);
            push("decode", timed.decode_ms);
            push("detect", timed.detect_ms);
            push("total", timed.total_ms);
            if timed.faces > 0 {
                photos_with_face += 1;
                faces += timed.faces;
                push("align", timed.align_ms);
                push("embed", timed.embed_ms);
            }
        }
    }

    let cpu_ms_per_photo = cpu_start
        .zip(process_cpu_seconds())
        .map(|(start, end)| (end - start) * 1000.0 / (args.repeat * photos.len()) as f64);
    let mut stages = BTreeMap::new();
    for stage in STAGES {
        let values = &samples[stage];
        if !values.is_empty() {
            stages.insert(stage, latency_summary(values).with_context(|| format!("bench pipeline: {stage} summary"))?);
        }
    }
    let mut result = summarise(&pipeline, &photos, args.repeat, photos_with_face, faces, stages);
    result.cpu_ms_per_photo = cpu_ms_per_photo;
    if let Some(cpu) = cpu_ms_per_photo {
        let note = format!("processor time {cpu:.3} ms per photo (user + system, 10 ms resolution over the run)");
        result.report.notes.push(note);
    }
    if let Some(max) = args.max_faces {
        result.report.notes.push(format!("at most {max} face(s) per photo aligned and embedded, best score first"));
    }
    print!("{}", result.report.render_terminal());
    if let Some(path) = &args.json {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("bench pipeline: creating {}", dir.display()))?;
        }
        let text = serde_json::to_string_pretty(&result).context("bench pipeline: serialising the result")?;
        std::fs::write(path, text + "\n").with_context(|| format!("bench pipeline: writing {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// One photo's stage times; `decode_ms` includes reading the file, as OpenCV's `imread` does in the reference.
struct PhotoTiming {
    decode_ms: f64,
    detect_ms: f64,
    align_ms: f64,
    embed_ms: f64,
    total_ms: f64,
    faces: usize,
}

fn time_photo(pipeline: &FacePipeline, path: &Path, options: AnalyzeOptions) -> anyhow::Result<PhotoTiming> {
    let start = Instant::now();
    let bytes = std::fs::read(path).with_context(|| format!("photo {}: cannot be read", path.display()))?;
    let read_ms = start.elapsed().as_secs_f64() * 1000.0;
    let analysis = pipeline
        .analyze_bytes(&bytes, options)
        .with_context(|| format!("photo {}", path.display()))?;
    let total_ms = start.elapsed().as_secs_f64() * 1000.0;
    let t = analysis.timings;
    Ok(PhotoTiming {
        decode_ms: read_ms + t.decode_ms,
        detect_ms: t.detect_ms,
        align_ms: t.align_ms,
        embed_ms: t.embed_ms,
        total_ms,
        faces: analysis.faces.len(),
    })
}

fn summarise(
    pipeline: &FacePipeline,
    photos: &[PathBuf],
    repeat: usize,
    photos_with_face: usize,
    faces: usize,
    stages: BTreeMap<&'static str, LatencySummary>,
) -> PipelineBenchResult {
    let detector = pipeline.detector().manifest();
    let recognizer = pipeline.recognizer().manifest();
    let mut report = Report::new("face pipeline latency (one thread)");
    report.models = [detector, recognizer]
        .iter()
        .map(|m| ModelFact { id: m.id.clone(), sha256: m.sha256.clone() })
        .collect();
    let rows: Vec<(String, LatencySummary)> = STAGES
        .iter()
        .filter_map(|s| stages.get(s).map(|summary| (s.to_string(), *summary)))
        .collect();
    report.tables.push(Table::latency("per-stage latency (ms)", &rows));
    report.notes.push(format!(
        "{} photos x {repeat} passes; {photos_with_face} with a face, {faces} faces in the last pass",
        photos.len()
    ));
    report.notes.push(
        "decode includes reading the file; align and embed are over photos with a face and cover every face found; \
         total is the wall time of the whole photo"
            .into(),
    );
    report.notes.push("one session per model, intra_threads = 1".into());
    PipelineBenchResult {
        detector: detector.id.clone(),
        recognizer: recognizer.id.clone(),
        photos: photos.len(),
        photos_with_face,
        faces_per_photo: if photos_with_face == 0 { 0.0 } else { faces as f64 / photos_with_face as f64 },
        repeat,
        threads: [("intra_op", 1), ("sessions", 1)].into_iter().collect(),
        mean_ms: stages.iter().map(|(k, s)| (*k, s.mean)).collect(),
        median_ms: stages.iter().map(|(k, s)| (*k, s.p50)).collect(),
        cpu_ms_per_photo: None,
        stages,
        report,
    }
}

/// Files as given, folders walked recursively; each folder's photos sorted so repeated runs see the same order
/// as the reference script.
fn collect_photos(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut photos = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut found = Vec::new();
            walk(path, &mut found)?;
            found.sort();
            photos.extend(found);
        } else if path.is_file() {
            photos.push(path.clone());
        } else {
            anyhow::bail!("bench pipeline: {} does not exist", path.display());
        }
    }
    Ok(photos)
}

fn walk(dir: &Path, found: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("bench pipeline: listing {}", dir.display()))? {
        let path = entry.with_context(|| format!("bench pipeline: listing {}", dir.display()))?.path();
        if path.is_dir() {
            walk(&path, found)?;
        } else if is_photo(&path) {
            found.push(path);
        }
    }
    Ok(())
}

fn is_photo(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_are_walked_sorted_and_only_photos_kept() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("b_person");
        std::fs::create_dir(&nested).unwrap();
        for name in ["b_person/2.JPG", "b_person/1.png", "a.jpeg", "notes.txt", "b_person/pairs.csv"] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        let found = collect_photos(&[dir.path().to_path_buf()]).unwrap();
        let names: Vec<String> =
            found.iter().map(|p| p.strip_prefix(dir.path()).unwrap().display().to_string()).collect();
        assert_eq!(names, vec!["a.jpeg", "b_person/1.png", "b_person/2.JPG"]);
        assert!(collect_photos(&[dir.path().join("missing")]).is_err());
    }
}
