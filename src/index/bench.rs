//! The index benchmark behind `facematch bench index` (lab only): raw f32 dumps of synthetic templates
//! ([`super::synthetic`]) for the Python side-by-side (`scripts/ann_side_by_side.py`), and the measurements of our
//! HNSW (build on N threads, recall@k and single-thread queries/s per ef, memory, save/load, deletion, filtering)
//! plus, optionally, `hnsw_rs`.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::synthetic::{clustered_unit_vectors, mix, recall_at_k, ClusterSpec};
use super::{
    AnnIndex, ExactIndex, HnswConfig, HnswIndex, IndexError, Int8Prefilter, LabelFilter, Neighbour, SearchParams,
    SimdLevel,
};

/// Percentiles of the top-1 similarity shortfall of a sweep point.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Shortfall {
    pub p99: f64,
    pub max: f64,
}

/// For each query, the true top-1 similarity minus the best similarity found (0 when the nearest was found; the
/// whole true top-1 similarity when nothing was returned), summarised as its 99th percentile (nearest rank) and max.
pub fn top1_shortfall(got: &[Vec<Neighbour>], truth: &[Vec<Neighbour>]) -> Shortfall {
    let mut gaps: Vec<f64> = got
        .iter()
        .zip(truth)
        .filter_map(|(g, t)| {
            let want = t.first()?.similarity;
            let found = g.iter().map(|n| n.similarity).reduce(f32::max).unwrap_or(0.0);
            Some(f64::from((want - found).max(0.0)))
        })
        .collect();
    if gaps.is_empty() {
        return Shortfall { p99: 0.0, max: 0.0 };
    }
    gaps.sort_by(f64::total_cmp);
    let rank = ((0.99 * gaps.len() as f64).ceil() as usize).clamp(1, gaps.len());
    Shortfall { p99: gaps[rank - 1], max: gaps[gaps.len() - 1] }
}

/// What `run_index_bench` measures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexBenchConfig {
    pub n: usize,
    pub dim: usize,
    pub queries: usize,
    pub k: usize,
    pub ef: Vec<usize>,
    pub m: usize,
    pub ef_construction: usize,
    pub build_threads: usize,
    pub seed: u64,
    pub clusters: usize,
    pub spread: f32,
    /// Where the raw vectors, ground truth, saved index and `report.json` go.
    pub out_dir: PathBuf,
    /// Also build and query `hnsw_rs` 0.3 with the same parameters (slow beyond ~100k).
    pub compare_hnsw_rs: bool,
    /// Measure recall after deleting 10 % and 50 % (tombstones, consolidated, and rebuilt when `rebuild` is set).
    pub deletion: bool,
    /// Rebuild from the survivors for comparison in the deletion study (costs about a build of that size).
    pub rebuild: bool,
    /// Measure filtered search at several selectivities, graph walk vs exact scan.
    pub filter: bool,
    /// Queries used for the deletion and filter studies (a prefix of the query set).
    pub study_queries: usize,
    /// Timed passes per ef in the main sweep; the best rate is reported (the machine may be shared).
    pub repeats: usize,
}

impl Default for IndexBenchConfig {
    fn default() -> Self {
        Self {
            n: 100_000,
            dim: 128,
            queries: 1_000,
            k: 10,
            ef: vec![16, 32, 64, 128],
            m: 16,
            ef_construction: 200,
            build_threads: 2,
            seed: 42,
            clusters: 1_000,
            spread: 1.0,
            out_dir: PathBuf::from("target/bench-index"),
            compare_hnsw_rs: false,
            deletion: true,
            rebuild: true,
            filter: true,
            study_queries: 200,
            repeats: 3,
        }
    }
}

/// Recall and speed of one setting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EfPoint {
    pub ef: usize,
    pub recall: f64,
    /// Share of queries whose true nearest neighbour was found: what an identification search with a high threshold
    /// needs (absent from reports written before it was measured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recall_at_1: Option<f64>,
    /// How far below the true nearest similarity the best similarity found fell, over the queries: 99th percentile
    /// and maximum. Identification escalates from its short walk when the best found comes within a margin of the
    /// threshold; this is the figure that margin must exceed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top1_shortfall: Option<Shortfall>,
    /// Wall-clock rate of one thread.
    pub queries_per_second: f64,
    /// Queries per second of on-CPU time of that thread (Linux), which time-sharing with other processes does not
    /// dilute; the fairer comparison on a busy machine.
    pub cpu_queries_per_second: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OursReport {
    pub build_seconds: f64,
    /// CPU time of the whole process over the build (all threads; Linux).
    pub build_cpu_seconds: Option<f64>,
    /// `IndexStats::memory_bytes` after the build.
    pub memory_bytes: usize,
    /// Growth of the process's resident set over the build (Linux; `None` elsewhere).
    pub rss_bytes: Option<u64>,
    pub bytes_per_template: f64,
    pub record_bytes: usize,
    pub max_level: usize,
    pub search: Vec<EfPoint>,
    pub save_seconds: f64,
    pub load_seconds: f64,
    pub file_bytes: u64,
    /// The loaded index answered the study queries exactly like the built one.
    pub load_identical: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HnswRsReport {
    pub build_seconds: f64,
    pub build_cpu_seconds: Option<f64>,
    pub rss_bytes: Option<u64>,
    pub search: Vec<EfPoint>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeletionPoint {
    pub deleted_fraction: f64,
    /// "tombstones", "consolidated" or "rebuilt".
    pub stage: String,
    /// Cost of reaching this stage from the tombstones (consolidation or rebuild time).
    pub seconds: f64,
    pub live: usize,
    pub search: Vec<EfPoint>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FilterPoint {
    pub labels: usize,
    pub allowed: usize,
    pub selectivity: f64,
    pub ef: usize,
    pub graph: EfPoint,
    pub scan: EfPoint,
    /// What the index's rule picks for this case: "scan" or "graph".
    pub chosen: String,
}

/// The exact scan with the int8 pre-filter: speed and what the shortlist costs in recall.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExactInt8Report {
    /// Rows re-ranked exactly per query.
    pub shortlist: usize,
    pub ms_per_query: f64,
    pub recall: f64,
    pub queries: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexBenchReport {
    pub config: IndexBenchConfig,
    pub simd: SimdLevel,
    pub generator: ClusterSpec,
    pub generate_seconds: f64,
    pub ours: OursReport,
    pub exact_ms_per_query: f64,
    /// The exact scan with the int8 pre-filter (absent in reports from before it existed).
    #[serde(default)]
    pub exact_int8: Option<ExactInt8Report>,
    pub ground_truth_seconds: f64,
    pub hnsw_rs: Option<HnswRsReport>,
    pub deletion: Vec<DeletionPoint>,
    pub filter: Vec<FilterPoint>,
}

/// Resident set size of this process (Linux `/proc/self/status`).
fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// A CPU-time clock read with `clock_gettime` (glibc/musl are linked by std on Linux anyway; `/proc` counters only
/// advance at scheduler ticks, too coarse for a 50 ms search loop).
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
fn cpu_clock(clock: i32) -> Option<f64> {
    #[repr(C)]
    struct Timespec {
        tv_sec: i64,
        tv_nsec: i64,
    }
    extern "C" {
        fn clock_gettime(clock: i32, tp: *mut Timespec) -> i32;
    }
    let mut ts = Timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; the clock ids are the Linux constants.
    let rc = unsafe { clock_gettime(clock, &mut ts) };
    (rc == 0).then_some(ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9)
}

#[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
fn cpu_clock(_clock: i32) -> Option<f64> {
    None
}

/// On-CPU time of the calling thread (`CLOCK_THREAD_CPUTIME_ID`).
fn thread_cpu_seconds() -> Option<f64> {
    cpu_clock(3)
}

/// CPU time of the whole process, all threads (`CLOCK_PROCESS_CPUTIME_ID`).
fn process_cpu_seconds() -> Option<f64> {
    cpu_clock(2)
}

fn elapsed_cpu(before: Option<f64>, after: Option<f64>) -> Option<f64> {
    before.zip(after).map(|(b, a)| a - b)
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> IndexError + '_ {
    move |source| IndexError::Io { path: path.to_path_buf(), source }
}

fn write_f32(path: &Path, data: &[f32]) -> Result<(), IndexError> {
    let mut w = BufWriter::with_capacity(1 << 20, File::create(path).map_err(io_error(path))?);
    for chunk in data.chunks(1 << 16) {
        let bytes: Vec<u8> = chunk.iter().flat_map(|x| x.to_le_bytes()).collect();
        w.write_all(&bytes).map_err(io_error(path))?;
    }
    w.flush().map_err(io_error(path))
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<(), IndexError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|source| IndexError::Report { path: path.to_path_buf(), source })?;
    std::fs::write(path, text).map_err(io_error(path))
}

/// Results of a timed query pass and its rates.
struct Timed {
    results: Vec<Vec<Neighbour>>,
    queries_per_second: f64,
    cpu_queries_per_second: Option<f64>,
}

impl Timed {
    /// The pass as one point of a sweep: its rates and its recall@k against `truth`.
    fn point(&self, ef: usize, truth: &[Vec<Neighbour>], k: usize) -> EfPoint {
        EfPoint {
            ef,
            recall: recall_at_k(&self.results, truth, k),
            recall_at_1: Some(recall_at_k(&self.results, truth, 1)),
            top1_shortfall: Some(top1_shortfall(&self.results, truth)),
            queries_per_second: self.queries_per_second,
            cpu_queries_per_second: self.cpu_queries_per_second,
        }
    }
}

/// Single-thread passes over `queries`: results, wall-clock queries/s and on-CPU queries/s, each rate the best of
/// `repeats` passes (the machine is shared; the best pass is the least disturbed one).
fn timed_queries(
    index: &dyn AnnIndex,
    queries: &[f32],
    dim: usize,
    params: &SearchParams,
    repeats: usize,
) -> Result<Timed, IndexError> {
    let count = (queries.len() / dim) as f64;
    let mut results = Vec::new();
    let (mut best, mut best_cpu) = (0.0f64, None::<f64>);
    for pass in 0..repeats.max(1) {
        let cpu = thread_cpu_seconds();
        let started = Instant::now();
        let got = queries.chunks(dim).map(|q| index.search(q, params)).collect::<Result<Vec<_>, _>>()?;
        let seconds = started.elapsed().as_secs_f64();
        best = best.max(count / seconds.max(1e-9));
        if let Some(c) = elapsed_cpu(cpu, thread_cpu_seconds()) {
            best_cpu = Some(best_cpu.unwrap_or(0.0).max(count / c.max(1e-9)));
        }
        if pass == 0 {
            results = got;
        }
    }
    Ok(Timed { results, queries_per_second: best, cpu_queries_per_second: best_cpu })
}

fn sweep(
    index: &dyn AnnIndex,
    queries: &[f32],
    truth: &[Vec<Neighbour>],
    cfg: &IndexBenchConfig,
    repeats: usize,
) -> Result<Vec<EfPoint>, IndexError> {
    cfg.ef
        .iter()
        .map(|&ef| {
            let params = SearchParams { k: cfg.k, ef: Some(ef), filter: LabelFilter::All };
            Ok(timed_queries(index, queries, cfg.dim, &params, repeats)?.point(ef, truth, cfg.k))
        })
        .collect()
}

/// Runs the whole benchmark; see the module docs and docs/ann-index.md.
pub fn run_index_bench(cfg: &IndexBenchConfig) -> Result<IndexBenchReport, IndexError> {
    run_index_bench_with_progress(cfg, &mut |_| {})
}

/// `run_index_bench` reporting each phase to `progress` (also logged with `tracing`).
pub fn run_index_bench_with_progress(
    cfg: &IndexBenchConfig,
    progress: &mut dyn FnMut(&str),
) -> Result<IndexBenchReport, IndexError> {
    let mut say = |msg: String| {
        tracing::info!("{msg}");
        progress(&msg);
    };
    let dim = cfg.dim;
    let out = &cfg.out_dir;
    std::fs::create_dir_all(out).map_err(io_error(out))?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(cfg.build_threads.max(1))
        .build()
        .map_err(IndexError::ThreadPool)?;

    let spec = ClusterSpec { dim, clusters: cfg.clusters, spread: cfg.spread, seed: cfg.seed };
    say(format!("generating {} + {} vectors of dim {dim}", cfg.n, cfg.queries));
    let started = Instant::now();
    let base = pool.install(|| clustered_unit_vectors(&spec, cfg.n, 0));
    let queries = pool.install(|| clustered_unit_vectors(&spec, cfg.queries, 1));
    let generate_seconds = started.elapsed().as_secs_f64();
    write_f32(&out.join("base.f32"), &base)?;
    write_f32(&out.join("queries.f32"), &queries)?;
    let keys: Vec<u64> = (0..cfg.n as u64).collect();
    // Labels are independent of the clusters, like watchlists are of faces: 1000 labels of 0.1 % each.
    let labels: Vec<u32> = keys.iter().map(|&k| (mix(k ^ 0xfeed) % 1000) as u32).collect();

    say(format!("building our HNSW on {} threads", cfg.build_threads));
    let hnsw_config = HnswConfig {
        m: cfg.m,
        ef_construction: cfg.ef_construction,
        seed: cfg.seed,
        consolidate_fraction: None,
        ..HnswConfig::default()
    };
    let rss_before = rss_bytes();
    let cpu_before = process_cpu_seconds();
    let started = Instant::now();
    let hnsw = HnswIndex::new(dim, hnsw_config.clone());
    pool.install(|| hnsw.insert_flat(&keys, &labels, &base))?;
    let build_seconds = started.elapsed().as_secs_f64();
    let build_cpu_seconds = elapsed_cpu(cpu_before, process_cpu_seconds());
    let rss_after = rss_bytes();
    let stats = hnsw.stats();
    say(format!("built in {build_seconds:.1} s, {} bytes", stats.memory_bytes));

    say("exact ground truth".to_owned());
    let exact = ExactIndex::new(dim);
    exact.insert_flat(&keys, &labels, &base)?;
    let started = Instant::now();
    let truth = pool.install(|| exact.search_batch(&queries, &SearchParams::top(cfg.k)))?;
    let ground_truth_seconds = started.elapsed().as_secs_f64();
    let gt_path = out.join("gt.u32");
    {
        let mut w = BufWriter::new(File::create(&gt_path).map_err(io_error(&gt_path))?);
        for row in &truth {
            for i in 0..cfg.k {
                let key = row.get(i).map_or(u32::MAX, |n| n.key as u32);
                w.write_all(&key.to_le_bytes()).map_err(io_error(&gt_path))?;
            }
        }
        w.flush().map_err(io_error(&gt_path))?;
    }
    let exact_probe = cfg.queries.min(20);
    let exact_qps =
        timed_queries(&exact, &queries[..exact_probe * dim], dim, &SearchParams::top(cfg.k), 1)?.queries_per_second;
    say("exact scan with the int8 pre-filter".to_owned());
    let exact_int8 = {
        let prefilter = Int8Prefilter::default();
        let int8 = ExactIndex::new(dim).with_int8_prefilter(prefilter);
        int8.insert_flat(&keys, &labels, &base)?;
        let probe = cfg.queries.min(100);
        let t = timed_queries(&int8, &queries[..probe * dim], dim, &SearchParams::top(cfg.k), 1)?;
        let report = ExactInt8Report {
            shortlist: (cfg.k * prefilter.factor).max(cfg.k + prefilter.floor),
            ms_per_query: 1000.0 / t.queries_per_second,
            recall: recall_at_k(&t.results, &truth[..probe], cfg.k),
            queries: probe,
        };
        say(format!(
            "int8 pre-filter: {:.2} ms per query, recall@{} {:.4} (exact f32 scan {:.2} ms)",
            report.ms_per_query,
            cfg.k,
            report.recall,
            1000.0 / exact_qps
        ));
        report
    };
    drop(base);
    write_json(
        &out.join("meta.json"),
        &serde_json::json!({
            "n": cfg.n, "dim": dim, "queries": cfg.queries, "k": cfg.k, "ef": cfg.ef, "m": cfg.m,
            "ef_construction": cfg.ef_construction, "build_threads": cfg.build_threads, "seed": cfg.seed,
            "repeats": cfg.repeats,
            "base": "base.f32", "query_file": "queries.f32", "ground_truth": "gt.u32",
            "layout": "little-endian f32 row-major; ground truth u32 row ids, k per query, best first",
        }),
    )?;

    say("searching (one thread)".to_owned());
    let warm = &queries[..cfg.queries.min(200) * dim];
    timed_queries(&hnsw, warm, dim, &SearchParams::top(cfg.k), 1)?;
    let search = sweep(&hnsw, &queries, &truth, cfg, cfg.repeats)?;
    for p in &search {
        say(format!(
            "ef {}: recall@{} {:.4}, {:.0} q/s ({:.0} per CPU-second)",
            p.ef,
            cfg.k,
            p.recall,
            p.queries_per_second,
            p.cpu_queries_per_second.unwrap_or(f64::NAN)
        ));
    }

    say("save / load".to_owned());
    let index_path = out.join("index.hnsw");
    let started = Instant::now();
    hnsw.save(&index_path, crate::index::IndexStamp { generation: 1, ..Default::default() })?;
    let save_seconds = started.elapsed().as_secs_f64();
    let file_bytes = std::fs::metadata(&index_path).map_err(io_error(&index_path))?.len();
    let started = Instant::now();
    let (loaded, _) = HnswIndex::load(&index_path, dim)?;
    let load_seconds = started.elapsed().as_secs_f64();
    let study = &queries[..cfg.study_queries.min(cfg.queries) * dim];
    let params = SearchParams { k: cfg.k, ef: Some(64), filter: LabelFilter::All };
    let mut load_identical = true;
    for q in study.chunks(dim) {
        load_identical &= hnsw.search(q, &params)? == loaded.search(q, &params)?;
    }
    drop(hnsw);
    let mut hnsw = loaded;
    // Runtime knobs are not part of the file; the studies below call `consolidate` themselves.
    hnsw.set_consolidate_fraction(None);
    say(format!("saved in {save_seconds:.2} s, loaded in {load_seconds:.2} s ({file_bytes} bytes)"));

    let ours = OursReport {
        build_seconds,
        build_cpu_seconds,
        memory_bytes: stats.memory_bytes,
        rss_bytes: rss_before.zip(rss_after).map(|(b, a)| a.saturating_sub(b)),
        bytes_per_template: stats.memory_bytes as f64 / cfg.n.max(1) as f64,
        record_bytes: hnsw.record_bytes(),
        max_level: stats.max_level,
        search,
        save_seconds,
        load_seconds,
        file_bytes,
        load_identical,
    };

    // The forced graph walk at 0.1 % selectivity explores most of the graph per query; 100 queries suffice.
    let filter_queries = &study[..study.len().min(100 * dim)];
    let filter =
        if cfg.filter { filter_study(&mut hnsw, &exact, filter_queries, cfg, &pool, &mut say)? } else { Vec::new() };

    let hnsw_rs = if cfg.compare_hnsw_rs {
        say("building hnsw_rs".to_owned());
        Some(hnsw_rs_side(&exact, &keys, &queries, &truth, cfg, &pool)?)
    } else {
        None
    };

    let deletion = if cfg.deletion {
        deletion_study(&hnsw, &exact, study, cfg, &pool, &hnsw_config, &mut say)?
    } else {
        Vec::new()
    };

    let report = IndexBenchReport {
        config: cfg.clone(),
        simd: SimdLevel::detect(),
        generator: spec,
        generate_seconds,
        ours,
        exact_ms_per_query: 1000.0 / exact_qps,
        exact_int8: Some(exact_int8),
        ground_truth_seconds,
        hnsw_rs,
        deletion,
        filter,
    };
    write_json(&out.join("report.json"), &report)?;
    say(format!("report written to {}", out.join("report.json").display()));
    Ok(report)
}

fn filter_study(
    hnsw: &mut HnswIndex,
    exact: &ExactIndex,
    study: &[f32],
    cfg: &IndexBenchConfig,
    pool: &rayon::ThreadPool,
    say: &mut dyn FnMut(String),
) -> Result<Vec<FilterPoint>, IndexError> {
    let dim = cfg.dim;
    let factor = hnsw.config().filter_scan_factor;
    let live = hnsw.len();
    let mut points = Vec::new();
    for label_count in [1usize, 3, 10, 30, 100, 300] {
        let allowed_labels: Vec<u32> = (0..label_count as u32).collect();
        let filter = LabelFilter::Only(allowed_labels);
        let ef = 64;
        let params = SearchParams { k: cfg.k, ef: Some(ef), filter };
        let truth = pool.install(|| exact.search_batch(study, &params))?;
        hnsw.set_filter_scan_factor(0.0);
        let graph = timed_queries(&*hnsw, study, dim, &params, 1)?.point(ef, &truth, cfg.k);
        hnsw.set_filter_scan_factor(f64::INFINITY);
        let scan = timed_queries(&*hnsw, study, dim, &params, 1)?.point(ef, &truth, cfg.k);
        hnsw.set_filter_scan_factor(factor);
        let allowed = hnsw.count_labels(match &params.filter {
            LabelFilter::Only(l) => l,
            LabelFilter::All => &[],
        });
        let chosen = if (allowed as f64).powi(2) <= factor * ef as f64 * live as f64 { "scan" } else { "graph" };
        say(format!(
            "filter {label_count} labels ({allowed} allowed): graph {:.4} @ {:.0} q/s, scan {:.4} @ {:.0} q/s -> {chosen}",
            graph.recall, graph.queries_per_second, scan.recall, scan.queries_per_second
        ));
        points.push(FilterPoint {
            labels: label_count,
            allowed,
            selectivity: allowed as f64 / live.max(1) as f64,
            ef,
            graph,
            scan,
            chosen: chosen.to_owned(),
        });
    }
    Ok(points)
}

fn deletion_study(
    hnsw: &HnswIndex,
    exact: &ExactIndex,
    study: &[f32],
    cfg: &IndexBenchConfig,
    pool: &rayon::ThreadPool,
    hnsw_config: &HnswConfig,
    say: &mut dyn FnMut(String),
) -> Result<Vec<DeletionPoint>, IndexError> {
    let mut points = Vec::new();
    let n = cfg.n as u64;
    // Deletion order is a seeded shuffle of all keys so that both steps remove random templates.
    let mut order: Vec<u64> = (0..n).collect();
    order.sort_by_key(|&k| mix(k ^ cfg.seed ^ 0xde1e7e));
    let mut removed = 0usize;
    for fraction in [0.1f64, 0.5] {
        let target = (cfg.n as f64 * fraction) as usize;
        let started = Instant::now();
        for &key in &order[removed..target] {
            hnsw.remove(key)?;
            exact.remove(key)?;
        }
        removed = target;
        let remove_seconds = started.elapsed().as_secs_f64();
        let truth = pool.install(|| exact.search_batch(study, &SearchParams::top(cfg.k)))?;
        let live = hnsw.len();
        let tomb = sweep(hnsw, study, &truth, cfg, 1)?;
        say(format!(
            "deleted {:.0} %: tombstones recall {:?}",
            fraction * 100.0,
            tomb.iter().map(|p| p.recall).collect::<Vec<_>>()
        ));
        points.push(DeletionPoint {
            deleted_fraction: fraction,
            stage: "tombstones".into(),
            seconds: remove_seconds,
            live,
            search: tomb,
        });
        let report = pool.install(|| hnsw.consolidate())?;
        let consolidated = sweep(hnsw, study, &truth, cfg, 1)?;
        say(format!(
            "consolidated in {:.2} s ({} lists): recall {:?}",
            report.seconds,
            report.repaired_lists,
            consolidated.iter().map(|p| p.recall).collect::<Vec<_>>()
        ));
        points.push(DeletionPoint {
            deleted_fraction: fraction,
            stage: "consolidated".into(),
            seconds: report.seconds,
            live,
            search: consolidated,
        });
        if cfg.rebuild {
            let survivors: Vec<u64> = order[removed..].to_vec();
            let mut vectors = Vec::with_capacity(survivors.len() * cfg.dim);
            for &k in &survivors {
                vectors.extend(exact.vector(k).unwrap_or_default());
            }
            let started = Instant::now();
            let rebuilt = HnswIndex::new(cfg.dim, hnsw_config.clone());
            pool.install(|| rebuilt.insert_flat(&survivors, &vec![0; survivors.len()], &vectors))?;
            let seconds = started.elapsed().as_secs_f64();
            let search = sweep(&rebuilt, study, &truth, cfg, 1)?;
            say(format!("rebuilt in {seconds:.1} s: recall {:?}", search.iter().map(|p| p.recall).collect::<Vec<_>>()));
            points.push(DeletionPoint { deleted_fraction: fraction, stage: "rebuilt".into(), seconds, live, search });
        }
    }
    Ok(points)
}

fn hnsw_rs_side(
    exact: &ExactIndex,
    keys: &[u64],
    queries: &[f32],
    truth: &[Vec<Neighbour>],
    cfg: &IndexBenchConfig,
    pool: &rayon::ThreadPool,
) -> Result<HnswRsReport, IndexError> {
    use hnsw_rs::prelude::{DistDot, Hnsw};
    let vectors: Vec<Vec<f32>> = keys.iter().map(|&k| exact.vector(k).unwrap_or_default()).collect();
    let items: Vec<(&Vec<f32>, usize)> = vectors.iter().zip(keys).map(|(v, &k)| (v, k as usize)).collect();
    let rss_before = rss_bytes();
    let cpu_before = process_cpu_seconds();
    let started = Instant::now();
    let index = Hnsw::<f32, DistDot>::new(cfg.m, cfg.n, 16, cfg.ef_construction, DistDot {});
    pool.install(|| index.parallel_insert(&items));
    let build_seconds = started.elapsed().as_secs_f64();
    let build_cpu_seconds = elapsed_cpu(cpu_before, process_cpu_seconds());
    let rss_after = rss_bytes();
    let mut search = Vec::new();
    for &ef in &cfg.ef {
        let cpu = thread_cpu_seconds();
        let started = Instant::now();
        let got: Vec<Vec<Neighbour>> = queries
            .chunks(cfg.dim)
            .map(|q| {
                index
                    .search(q, cfg.k, ef)
                    .into_iter()
                    .map(|n| Neighbour { key: n.d_id as u64, similarity: 1.0 - n.distance })
                    .collect()
            })
            .collect();
        let count = (queries.len() / cfg.dim) as f64;
        let qps = count / started.elapsed().as_secs_f64().max(1e-9);
        let cpu_qps = elapsed_cpu(cpu, thread_cpu_seconds()).map(|c| count / c.max(1e-9));
        search.push(EfPoint {
            ef,
            recall: recall_at_k(&got, truth, cfg.k),
            recall_at_1: Some(recall_at_k(&got, truth, 1)),
            top1_shortfall: Some(top1_shortfall(&got, truth)),
            queries_per_second: qps,
            cpu_queries_per_second: cpu_qps,
        });
    }
    Ok(HnswRsReport {
        build_seconds,
        build_cpu_seconds,
        rss_bytes: rss_before.zip(rss_after).map(|(b, a)| a.saturating_sub(b)),
        search,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top1_shortfall_on_hand_computed_cases() {
        let n = |key, similarity| Neighbour { key, similarity };
        let truth = vec![vec![n(1, 0.9)], vec![n(2, 0.8)], vec![n(3, 0.7)]];
        // Found the nearest; found a runner-up 0.05 lower; found nothing.
        let got = vec![vec![n(1, 0.9), n(9, 0.5)], vec![n(8, 0.75)], vec![]];
        let s = top1_shortfall(&got, &truth);
        assert!((s.max - 0.7).abs() < 1e-6 && (s.p99 - 0.7).abs() < 1e-6, "{s:?}");
        // 200 queries falling short by 0.000, 0.001, …, 0.199: the 99th percentile is the 198th smallest.
        let truth: Vec<Vec<Neighbour>> = (0..200).map(|i| vec![n(i, 1.0)]).collect();
        let got: Vec<Vec<Neighbour>> = (0..200).map(|i| vec![n(i + 1000, 1.0 - i as f32 / 1000.0)]).collect();
        let s = top1_shortfall(&got, &truth);
        assert!((s.p99 - 0.197).abs() < 1e-5, "{s:?}");
        assert!((s.max - 0.199).abs() < 1e-5, "{s:?}");
    }

    #[test]
    fn small_bench_runs_end_to_end() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = IndexBenchConfig {
            n: 3000,
            dim: 32,
            queries: 50,
            ef: vec![16, 64],
            m: 8,
            ef_construction: 64,
            clusters: 20,
            out_dir: dir.path().to_path_buf(),
            compare_hnsw_rs: true,
            study_queries: 30,
            ..IndexBenchConfig::default()
        };
        let report = run_index_bench(&cfg).expect("bench");
        assert!(report.ours.load_identical);
        assert!(report.ours.search[1].recall > 0.9, "{:?}", report.ours.search);
        assert_eq!(report.deletion.len(), 6);
        assert_eq!(report.filter.len(), 6);
        assert!(report.hnsw_rs.as_ref().is_some_and(|r| r.search.len() == 2));
        let base = std::fs::metadata(dir.path().join("base.f32")).expect("base").len();
        assert_eq!(base, 3000 * 32 * 4);
        assert_eq!(std::fs::metadata(dir.path().join("gt.u32")).expect("gt").len(), 50 * 10 * 4);
        let back: IndexBenchReport =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).expect("report"))
                .expect("json");
        assert_eq!(back.config.n, 3000);
    }
}
