//! `facematch bench pipeline | index | http | soak`: the arguments of the speed benchmarks, their figures printed as
//! tables and written as JSON; the measuring lives in the lab ([`crate::eval::pipeline_bench`],
//! [`crate::index::bench`], [`crate::loadgen`]).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;

use crate::config::Config;
use crate::eval::pipeline_bench::{self, PipelineBenchOptions};

#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Per-stage latency of the face pipeline on real photos, at one thread.
    Pipeline(PipelineBenchArgs),
    /// Pipeline throughput with several threads on one photo (the "pipeline alone" baseline of `bench http`).
    PipelineThroughput(crate::loadgen::PipelineThroughputArgs),
    /// Load generator against a running server: throughput, latency percentiles, errors, per-stage latency.
    Http(crate::loadgen::HttpBenchArgs),
    /// Open-loop load at a fixed rate for a long, bounded time, reported per window (latency, errors, the server's
    /// memory and open files), optionally beside slow senders that trickle or idle on their connections.
    Soak(crate::loadgen::soak::SoakArgs),
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
        BenchCommand::PipelineThroughput(args) => crate::loadgen::throughput::run_pipeline_throughput_cli(config, args),
        BenchCommand::Http(args) => crate::loadgen::run_http_bench_cli(config, args),
        BenchCommand::Soak(args) => crate::loadgen::soak::run_soak_cli(args),
        BenchCommand::Seed(args) => crate::loadgen::seed::run_seed_cli(config, args),
        BenchCommand::Index(args) => bench_index(args),
        BenchCommand::IndexReport { dir } => bench_index_report(dir),
    }
}

fn bench_pipeline(config: &Config, args: &PipelineBenchArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.repeat >= 1, "bench pipeline: --repeat must be at least 1");
    let options = PipelineBenchOptions {
        photos: args.photos.clone(),
        limit: args.limit,
        repeat: args.repeat,
        warmup: args.warmup,
        detector: args.detector.clone(),
        max_faces: args.max_faces,
    };
    let result = pipeline_bench::bench_pipeline(config, &options)?;
    print!("{}", result.report().render_terminal());
    if let Some(path) = &args.json {
        result.write_json(path)?;
    }
    Ok(ExitCode::SUCCESS)
}
