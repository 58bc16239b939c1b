//! The readable report of an ANN index benchmark: our HNSW's sweep, build, memory, load, deletion and filter
//! figures, side by side with hnswlib (from `scripts/ann_side_by_side.py`) and hnsw_rs when they were measured,
//! with the recall-vs-QPS curve.

use std::path::Path;

use serde::Deserialize;

use crate::index::bench::{EfPoint, IndexBenchReport};

use super::plot::{plot_recall_qps, RecallQps, RecallQpsSeries};
use super::report::{Report, ReportError, Table};

/// The recall the comparison is judged at (issue: queries/s at recall@10 ≥ 0.99).
pub const TARGET_RECALL: f64 = 0.99;

/// What `scripts/ann_side_by_side.py` writes to `hnswlib_report.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct HnswlibReport {
    pub version: String,
    pub build_seconds: f64,
    #[serde(default)]
    pub build_cpu_seconds: Option<f64>,
    pub bytes_per_template: f64,
    pub search: Vec<EfPoint>,
    #[serde(default)]
    pub load_seconds: Option<f64>,
}

/// Reads `dir/hnswlib_report.json` when the side-by-side script has run there.
pub fn read_hnswlib_report(dir: &Path) -> Result<Option<HnswlibReport>, ReportError> {
    let path = dir.join("hnswlib_report.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(ReportError::Io { path, source }),
    };
    serde_json::from_str(&text).map(Some).map_err(ReportError::Json)
}

/// The fastest point of a sweep that reaches `recall`; `None` when none does.
pub fn fastest_at_recall(points: &[EfPoint], recall: f64) -> Option<&EfPoint> {
    points.iter().filter(|p| p.recall >= recall).max_by(|a, b| a.queries_per_second.total_cmp(&b.queries_per_second))
}

fn rate(value: f64) -> String {
    format!("{value:.0}")
}

fn cpu_rate(point: &EfPoint) -> String {
    point.cpu_queries_per_second.map_or_else(|| "-".into(), rate)
}

fn sweep_table(name: &str, points: &[EfPoint]) -> Result<Table, ReportError> {
    let mut table = Table::new(
        name,
        ["ef", "recall@k", "recall@1", "top-1 shortfall p99 / max", "queries/s (wall, 1 thread)", "queries/s per CPU-second"],
    );
    for p in points {
        let at_1 = p.recall_at_1.map_or_else(|| "-".into(), |r| format!("{r:.4}"));
        let shortfall = p.top1_shortfall.map_or_else(|| "-".into(), |s| format!("{:.4} / {:.4}", s.p99, s.max));
        table.push_row([
            p.ef.to_string(),
            format!("{:.4}", p.recall),
            at_1,
            shortfall,
            rate(p.queries_per_second),
            cpu_rate(p),
        ])?;
    }
    Ok(table)
}

fn series(label: &str, points: &[EfPoint]) -> RecallQpsSeries {
    RecallQpsSeries {
        label: label.into(),
        points: points.iter().map(|p| RecallQps { recall: p.recall, qps: p.queries_per_second }).collect(),
    }
}

fn ratio(ours: f64, theirs: f64) -> String {
    if theirs > 0.0 {
        format!("{:.2}", ours / theirs)
    } else {
        "-".into()
    }
}

/// Builds the report and writes `index.{json,md,html}` and `recall-qps.svg` into `dir`.
pub fn write_index_report(
    bench: &IndexBenchReport,
    hnswlib: Option<&HnswlibReport>,
    dir: &Path,
) -> Result<Report, ReportError> {
    let cfg = &bench.config;
    let mut report = Report::new(format!("ANN index: {} clustered unit vectors of dimension {}", cfg.n, cfg.dim));
    report.seeds = vec![cfg.seed];
    report.gallery_sizes = vec![cfg.n];
    let ours = &bench.ours;

    let mut side = Table::new(
        format!("side by side at recall@{} >= {TARGET_RECALL}", cfg.k),
        ["index", "best queries/s at target (ef)", "per CPU-second", "build s (threads)", "bytes per template", "load s"],
    );
    let at_target = |points: &[EfPoint]| match fastest_at_recall(points, TARGET_RECALL) {
        Some(p) => (format!("{} (ef {}, recall {:.4})", rate(p.queries_per_second), p.ef, p.recall), cpu_rate(p)),
        None => ("target not reached".into(), "-".into()),
    };
    let (q, c) = at_target(&ours.search);
    side.push_row([
        "facematch HNSW".into(),
        q,
        c,
        format!("{:.1} ({})", ours.build_seconds, cfg.build_threads),
        format!("{:.0}", ours.bytes_per_template),
        format!("{:.2}", ours.load_seconds),
    ])?;
    if let Some(h) = hnswlib {
        let (q, c) = at_target(&h.search);
        side.push_row([
            format!("hnswlib {}", h.version),
            q,
            c,
            format!("{:.1} ({})", h.build_seconds, cfg.build_threads),
            format!("{:.0}", h.bytes_per_template),
            h.load_seconds.map_or_else(|| "-".into(), |s| format!("{s:.2}")),
        ])?;
        let ours_best = fastest_at_recall(&ours.search, TARGET_RECALL);
        let theirs_best = fastest_at_recall(&h.search, TARGET_RECALL);
        let qps_ratio = match (ours_best, theirs_best) {
            (Some(o), Some(t)) => ratio(o.queries_per_second, t.queries_per_second),
            _ => "-".into(),
        };
        let cpu_ratio = match (ours_best.and_then(|o| o.cpu_queries_per_second), theirs_best.and_then(|t| t.cpu_queries_per_second)) {
            (Some(o), Some(t)) => ratio(o, t),
            _ => "-".into(),
        };
        side.push_row([
            "ours / hnswlib".into(),
            qps_ratio,
            cpu_ratio,
            ratio(ours.build_seconds, h.build_seconds),
            ratio(ours.bytes_per_template, h.bytes_per_template),
            h.load_seconds.map_or_else(|| "-".into(), |s| ratio(ours.load_seconds, s)),
        ])?;
    }
    if let Some(r) = &bench.hnsw_rs {
        let (q, c) = at_target(&r.search);
        let per_template = r.rss_bytes.map_or_else(|| "-".into(), |b| format!("{:.0}", b as f64 / cfg.n as f64));
        side.push_row(["hnsw_rs".into(), q, c, format!("{:.1} ({})", r.build_seconds, cfg.build_threads), per_template, "-".into()])?;
    }
    report.tables.push(side);

    report.tables.push(sweep_table("facematch HNSW: ef sweep", &ours.search)?);
    let mut curves = vec![series("facematch HNSW", &ours.search)];
    if let Some(h) = hnswlib {
        report.tables.push(sweep_table(&format!("hnswlib {}: ef sweep", h.version), &h.search)?);
        curves.push(series(&format!("hnswlib {}", h.version), &h.search));
    }
    if let Some(r) = &bench.hnsw_rs {
        report.tables.push(sweep_table("hnsw_rs: ef sweep", &r.search)?);
        curves.push(series("hnsw_rs", &r.search));
    }

    if !bench.deletion.is_empty() {
        let mut table = Table::new(
            "deletion: recall after removing a fraction of the index",
            ["deleted", "stage", "seconds", "live", "best queries/s at target (ef)", "recall at largest ef"],
        );
        for d in &bench.deletion {
            let best = fastest_at_recall(&d.search, TARGET_RECALL)
                .map_or_else(|| "target not reached".into(), |p| format!("{} (ef {})", rate(p.queries_per_second), p.ef));
            let last = d.search.last().map_or_else(|| "-".into(), |p| format!("{:.4}", p.recall));
            table.push_row([
                format!("{:.0} %", d.deleted_fraction * 100.0),
                d.stage.clone(),
                format!("{:.2}", d.seconds),
                d.live.to_string(),
                best,
                last,
            ])?;
        }
        report.tables.push(table);
    }
    if !bench.filter.is_empty() {
        let mut table = Table::new(
            "filtered search: graph walk vs exact scan over the allowed templates",
            ["allowed", "selectivity", "ef", "graph recall", "graph q/s", "scan recall", "scan q/s", "index picks"],
        );
        for f in &bench.filter {
            table.push_row([
                f.allowed.to_string(),
                format!("{:.4}", f.selectivity),
                f.ef.to_string(),
                format!("{:.4}", f.graph.recall),
                rate(f.graph.queries_per_second),
                format!("{:.4}", f.scan.recall),
                rate(f.scan.queries_per_second),
                f.chosen.clone(),
            ])?;
        }
        report.tables.push(table);
    }

    std::fs::create_dir_all(dir).map_err(|source| ReportError::Io { path: dir.to_path_buf(), source })?;
    let figure = plot_recall_qps(
        &format!("recall@{} vs queries/s, n = {}, dim = {}", cfg.k, cfg.n, cfg.dim),
        &curves,
        &dir.join("recall-qps.svg"),
    )?;
    report.figures.push(figure);
    report.notes.push(format!(
        "M {}, ef_construction {}, {} build threads, {} queries, k {}, SIMD {:?}; exact scan {:.2} ms per query",
        cfg.m, cfg.ef_construction, cfg.build_threads, cfg.queries, cfg.k, bench.simd, bench.exact_ms_per_query
    ));
    if let Some(int8) = &bench.exact_int8 {
        report.notes.push(format!(
            "exact scan with the int8 pre-filter (shortlist {} re-ranked in f32): {:.2} ms per query, recall@{} {:.4} \
             over {} queries",
            int8.shortlist, int8.ms_per_query, cfg.k, int8.recall, int8.queries
        ));
    }
    report.notes.push(format!(
        "memory: {} bytes per template by the index's own accounting ({} bytes per record), {} by resident-set growth",
        ours.bytes_per_template.round(),
        ours.record_bytes,
        ours.rss_bytes.map_or_else(|| "-".into(), |b| format!("{:.0}", b as f64 / cfg.n as f64)),
    ));
    report.notes.push(format!(
        "persistence: saved in {:.2} s, loaded in {:.2} s ({} bytes); the loaded index answered identically: {}",
        ours.save_seconds, ours.load_seconds, ours.file_bytes, ours.load_identical
    ));
    if hnswlib.is_none() {
        report.notes.push(format!(
            "hnswlib not measured yet: run `.venv/bin/python scripts/ann_side_by_side.py {}` and then \
             `facematch bench index-report {}`",
            dir.display(),
            dir.display()
        ));
    }
    report.write_files(dir, "index")?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(ef: usize, recall: f64, qps: f64) -> EfPoint {
        EfPoint { ef, recall, recall_at_1: None, top1_shortfall: None, queries_per_second: qps, cpu_queries_per_second: None }
    }

    #[test]
    fn the_fastest_point_at_the_target_recall_is_chosen() {
        let sweep = [point(16, 0.95, 9000.0), point(32, 0.991, 5000.0), point(64, 0.999, 3000.0)];
        assert_eq!(fastest_at_recall(&sweep, 0.99).map(|p| p.ef), Some(32));
        assert_eq!(fastest_at_recall(&sweep, 0.9999).map(|p| p.ef), None);
    }
}
