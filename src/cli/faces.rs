//! `facematch detect | embed | compare | models`: the face pipeline on photo files, JSON on standard output.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use serde_json::json;

use crate::config::Config;
use crate::manifest::ModelManifest;
use crate::pipeline::{AnalyzeOptions, Analysis, FacePipeline};
use crate::runtime::Runtime;

fn analyze_file(pipeline: &FacePipeline, path: &Path, min_face_px: Option<f32>) -> anyhow::Result<Analysis> {
    let bytes = std::fs::read(path).with_context(|| format!("photo {}: cannot be read", path.display()))?;
    pipeline
        .analyze_bytes(&bytes, AnalyzeOptions { min_face_px, max_faces: None })
        .with_context(|| format!("photo {}", path.display()))
}

/// Runs `each` over the photos, printing one JSON line per photo; a photo that fails prints an error line and
/// makes the exit status non-zero without stopping the others.
fn for_each_photo(
    config: &Config,
    photos: &[PathBuf],
    min_face_px: Option<f32>,
    each: impl Fn(&FacePipeline, &Analysis) -> serde_json::Value,
) -> anyhow::Result<ExitCode> {
    let pipeline = FacePipeline::load(&config.pipeline())?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut failed = false;
    for path in photos {
        let line = match analyze_file(&pipeline, path, min_face_px) {
            Ok(analysis) => {
                let mut v = each(&pipeline, &analysis);
                v["photo"] = json!(path.display().to_string());
                v
            }
            Err(err) => {
                failed = true;
                let code = err.downcast_ref::<crate::pipeline::PipelineError>().map(|e| e.code()).unwrap_or("io_error");
                json!({ "photo": path.display().to_string(), "error": { "code": code, "message": format!("{err:#}") } })
            }
        };
        writeln!(out, "{line}")?;
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

pub fn detect(config: &Config, photos: &[PathBuf], min_face_px: Option<f32>) -> anyhow::Result<ExitCode> {
    for_each_photo(config, photos, min_face_px, |_, a| {
        json!({
            "width": a.width, "height": a.height,
            "faces": a.faces.iter().map(|f| json!({
                "box": f.detection.bbox, "landmarks": f.detection.landmarks, "score": f.detection.score, "quality": f.quality,
            })).collect::<Vec<_>>(),
            "timings_ms": a.timings,
        })
    })
}

pub fn embed(config: &Config, photos: &[PathBuf], min_face_px: Option<f32>) -> anyhow::Result<ExitCode> {
    for_each_photo(config, photos, min_face_px, |p, a| {
        json!({
            "model": p.recognizer().manifest().id,
            "faces": a.faces.iter().map(|f| json!({
                "box": f.detection.bbox, "score": f.detection.score, "embedding": f.embedding.values,
            })).collect::<Vec<_>>(),
        })
    })
}

pub fn compare(config: &Config, a: &Path, b: &Path) -> anyhow::Result<ExitCode> {
    let pipeline = FacePipeline::load(&config.pipeline())?;
    let subject = |path: &Path| -> anyhow::Result<crate::pipeline::AnalyzedFace> {
        let analysis = analyze_file(&pipeline, path, None)?;
        analysis.subject().cloned().with_context(|| format!("photo {}: no face detected", path.display()))
    };
    let (fa, fb) = (subject(a)?, subject(b)?);
    let manifest = pipeline.recognizer().manifest();
    let threshold = manifest.thresholds.as_ref().map(|t| t.verify).context("recognizer manifest has no verify threshold")?;
    let score = fa.embedding.similarity(&fb.embedding).context("embeddings come from different models")?;
    let result = json!({
        "a": a.display().to_string(), "b": b.display().to_string(),
        "model": manifest.id, "similarity": score, "threshold": threshold,
        "decision": crate::service::VerifyDecision::at(score, threshold),
        "note": "a candidate for human review, not a verdict",
    });
    println!("{}", serde_json::to_string_pretty(&result)?);
    Ok(ExitCode::SUCCESS)
}

pub fn models(config: &Config) -> anyhow::Result<ExitCode> {
    let dir = config.models.resolve_dir()?;
    let manifests = ModelManifest::load_all(&dir)?;
    let runtime = Runtime::init(&config.runtime);
    let mut all_ok = true;
    let mut rows = Vec::new();
    for m in &manifests {
        let check = (|| -> anyhow::Result<()> {
            let path = m.verify_file()?;
            let runtime = runtime.as_ref().map_err(|e| anyhow::anyhow!("{e}"))?;
            let session = runtime.session(&path)?;
            m.check_signature(&crate::runtime::ModelSignature::of(&session))?;
            Ok(())
        })();
        // A model that is not installed is no fault unless this configuration uses it (a site's optional
        // recognizer, such as edgeface-xs without its file in the mirror).
        let in_use = [config.models.detector_id(&dir), config.models.recognizer.clone()].contains(&m.id);
        let absent = !m.model_path().exists();
        all_ok &= check.is_ok() || (absent && !in_use);
        rows.push(json!({
            "id": m.id, "task": m.task, "file": m.file, "license": m.license, "source": m.source,
            "license_requires_acceptance": m.license_requires_acceptance,
            "license_accepted": m.licence_accepted(&config.models.accept_licences),
            "sha256": m.sha256,
            "dimension": m.recognizer.as_ref().map(|r| r.dimension),
            "verify_threshold": m.thresholds.as_ref().map(|t| t.verify),
            "status": match &check {
                Ok(()) => "ok".to_string(),
                Err(_) if absent && !in_use => "not installed".to_string(),
                Err(e) => format!("{e:#}"),
            },
        }));
    }
    // What `serve` and the other commands would load with this config: the default detector depends on the files.
    let in_use = json!({ "detector": config.models.detector_id(&dir), "recognizer": config.models.recognizer });
    println!("{}", serde_json::to_string_pretty(&json!({ "models_dir": dir, "in_use": in_use, "models": rows }))?);
    Ok(if all_ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
