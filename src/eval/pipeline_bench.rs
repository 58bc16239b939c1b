//! The face pipeline's per-stage latency on real photos, measured the way `scripts/reference_pipeline.py`
//! measures the Python reference so that `scripts/bench_pipeline.sh` can put the two side by side: one session per
//! model at one intra-op thread, an untimed warm-up, every photo read from disk inside the timed region, and
//! align/embed figures taken over the photos that yielded a face.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use thiserror::Error;

use super::metrics::{latency_summary, LatencySummary, MetricError};
use super::report::{ModelFact, Report, Table};
use crate::config::Config;
use crate::loadgen::process_cpu_seconds;
use crate::pipeline::{AnalyzeOptions, FacePipeline, PipelineError, PipelineLoadError};

/// Stage names in pipeline order; `total` is the wall time of read + decode + detect + align + embed.
const STAGES: [&str; 5] = ["decode", "detect", "align", "embed", "total"];

/// Why the pipeline benchmark could not run or record its figures.
#[derive(Debug, Error)]
pub enum PipelineBenchError {
    #[error("bench pipeline: repeat must be at least 1")]
    NoTimedPass,
    #[error("bench pipeline: no .jpg/.jpeg/.png photos in the given paths")]
    NoPhotos,
    #[error("bench pipeline: {} does not exist", .path.display())]
    Missing { path: PathBuf },
    #[error("bench pipeline: listing {}", .path.display())]
    List {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("bench pipeline: loading the face pipeline")]
    Load(#[source] PipelineLoadError),
    #[error("photo {}: cannot be read", .path.display())]
    ReadPhoto {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("photo {}: cannot be analysed", .path.display())]
    Analyse {
        path: PathBuf,
        #[source]
        source: PipelineError,
    },
    #[error("bench pipeline: {stage} summary")]
    Summary {
        stage: &'static str,
        #[source]
        source: MetricError,
    },
    #[error("bench pipeline: serialising the result")]
    Serialise(#[source] serde_json::Error),
    #[error("bench pipeline: creating {}", .path.display())]
    CreateFolder {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("bench pipeline: writing {}", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What the benchmark runs on.
#[derive(Debug, Clone)]
pub struct PipelineBenchOptions {
    /// Photo files, or folders searched recursively for .jpg/.jpeg/.png (sorted, so runs are repeatable).
    pub photos: Vec<PathBuf>,
    /// Use only the first `limit` photos (0: all).
    pub limit: usize,
    /// Timed passes over the photos.
    pub repeat: usize,
    /// Untimed photos run first (from the start of the list) so session start-up is not billed.
    pub warmup: usize,
    /// Detector manifest id (overrides `models.detector`).
    pub detector: Option<String>,
    /// Align and embed at most this many faces per photo, best score first (`None`: every face found).
    pub max_faces: Option<usize>,
}

/// The benchmark's figures: per-stage summaries in milliseconds plus the run's provenance, in the shape
/// `reference_pipeline.py --json` writes.
#[derive(Debug, Serialize)]
pub struct PipelineBenchResult {
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

impl PipelineBenchResult {
    /// The figures as a report, for printing.
    pub fn report(&self) -> &Report {
        &self.report
    }

    /// Writes the figures as pretty JSON with a final newline, creating the folder as needed.
    pub fn write_json(&self, path: &Path) -> Result<(), PipelineBenchError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|source| PipelineBenchError::CreateFolder { path: dir.to_path_buf(), source })?;
        }
        let text = serde_json::to_string_pretty(self).map_err(PipelineBenchError::Serialise)?;
        std::fs::write(path, text + "\n")
            .map_err(|source| PipelineBenchError::Write { path: path.to_path_buf(), source })
    }
}

/// Times the pipeline over the photos `options` name, `options.repeat` times after the warm-up.
pub fn bench_pipeline(
    config: &Config,
    options: &PipelineBenchOptions,
) -> Result<PipelineBenchResult, PipelineBenchError> {
    if options.repeat < 1 {
        return Err(PipelineBenchError::NoTimedPass);
    }
    let mut photos = collect_photos(&options.photos)?;
    if options.limit > 0 {
        photos.truncate(options.limit);
    }
    if photos.is_empty() {
        return Err(PipelineBenchError::NoPhotos);
    }

    // The comparison with the reference is per core: one session per model, one intra-op thread.
    let mut config = config.clone();
    config.runtime.intra_threads = 1;
    config.runtime.sessions = 1;
    if let Some(detector) = &options.detector {
        config.models.detector = Some(detector.clone());
    }
    let pipeline = FacePipeline::load(&config.pipeline()).map_err(PipelineBenchError::Load)?;
    let analyze = AnalyzeOptions { min_face_px: None, max_faces: options.max_faces };

    for path in photos.iter().cycle().take(options.warmup.min(photos.len())) {
        time_photo(&pipeline, path, analyze)?;
    }
    let mut samples: BTreeMap<&'static str, Vec<f64>> = STAGES.iter().map(|s| (*s, Vec::new())).collect();
    let (mut photos_with_face, mut faces) = (0, 0);
    let cpu_start = process_cpu_seconds();
    for _ in 0..options.repeat {
        (photos_with_face, faces) = (0, 0);
        for path in &photos {
            let timed = time_photo(&pipeline, path, analyze)?;
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
        .map(|(start, end)| (end - start) * 1000.0 / (options.repeat * photos.len()) as f64);
    let mut stages = BTreeMap::new();
    for stage in STAGES {
        let values = &samples[stage];
        if !values.is_empty() {
            let summary = latency_summary(values).map_err(|source| PipelineBenchError::Summary { stage, source })?;
            stages.insert(stage, summary);
        }
    }
    let mut result = summarise(&pipeline, &photos, options.repeat, photos_with_face, faces, stages);
    result.cpu_ms_per_photo = cpu_ms_per_photo;
    if let Some(cpu) = cpu_ms_per_photo {
        let note = format!("processor time {cpu:.3} ms per photo (user + system, 10 ms resolution over the run)");
        result.report.notes.push(note);
    }
    if let Some(max) = options.max_faces {
        result.report.notes.push(format!("at most {max} face(s) per photo aligned and embedded, best score first"));
    }
    Ok(result)
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

fn time_photo(
    pipeline: &FacePipeline,
    path: &Path,
    options: AnalyzeOptions,
) -> Result<PhotoTiming, PipelineBenchError> {
    let start = Instant::now();
    let bytes =
        std::fs::read(path).map_err(|source| PipelineBenchError::ReadPhoto { path: path.to_path_buf(), source })?;
    let read_ms = start.elapsed().as_secs_f64() * 1000.0;
    let analysis = pipeline
        .analyze_bytes(&bytes, options)
        .map_err(|source| PipelineBenchError::Analyse { path: path.to_path_buf(), source })?;
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
    report.models =
        [detector, recognizer].iter().map(|m| ModelFact { id: m.id.clone(), sha256: m.sha256.clone() }).collect();
    let rows: Vec<(String, LatencySummary)> =
        STAGES.iter().filter_map(|s| stages.get(s).map(|summary| (s.to_string(), *summary))).collect();
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
pub fn collect_photos(paths: &[PathBuf]) -> Result<Vec<PathBuf>, PipelineBenchError> {
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
            return Err(PipelineBenchError::Missing { path: path.clone() });
        }
    }
    Ok(photos)
}

fn walk(dir: &Path, found: &mut Vec<PathBuf>) -> Result<(), PipelineBenchError> {
    let list_error = |source| PipelineBenchError::List { path: dir.to_path_buf(), source };
    for entry in std::fs::read_dir(dir).map_err(list_error)? {
        let path = entry.map_err(list_error)?.path();
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
