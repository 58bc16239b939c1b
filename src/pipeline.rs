//! The face pipeline: photo bytes → decoded photo → detections → aligned crops → quality → embeddings.
//!
//! Detector and recognizer are plug-ins chosen by manifest id; the alignment template always comes from the
//! recognizer's manifest, so a crop is made for the model that embeds it. The pipeline reads only its own
//! configuration sections ([`PipelineConfig`]), never the whole service configuration.

use std::sync::Arc;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::align::{align_face, AlignError, AlignedFace};
use crate::decode::{decode_photo_within, DecodeBudget, DecodeError, DecodeLimits, Photo};
use crate::detect::{subject_index, DetectError, DetectionConfig, Detection, Detector, DetectorLoadError};
use crate::embed::{EmbedError, Embedding, Recognizer};
use crate::face_region::{cut_face_region, FaceRegion, RegionError, RegionGeometry};
use crate::manifest::{AlignmentSpec, ManifestError, ModelManifest};
use crate::quality::{assess_face, FaceQuality};
use crate::runtime::{search_roots, Runtime, RuntimeConfig, RuntimeError};

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Detect(#[from] DetectError),
    #[error(transparent)]
    Align(#[from] AlignError),
    #[error(transparent)]
    Embed(#[from] EmbedError),
}

impl PipelineError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            PipelineError::Decode(e) => e.code(),
            PipelineError::Detect(_) => "detection_failed",
            PipelineError::Align(_) => "alignment_failed",
            PipelineError::Embed(_) => "embedding_failed",
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("models folder not found (looked for `models/` with manifests in {searched}); set `models.dir`")]
pub struct ModelsDirNotFound {
    pub searched: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineLoadError {
    #[error(transparent)]
    ModelsDir(#[from] ModelsDirNotFound),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Model(#[from] DetectorLoadError),
}

/// The dynamic-input YuNet: the default detector when its model file is installed.
pub const DYNAMIC_DETECTOR: &str = "yunet-s-dynamic";
/// The fixed 640×640 YuNet of OpenCV Zoo: the default detector when the dynamic one is not installed.
pub const FIXED_DETECTOR: &str = "yunet-2023mar";

/// Which models the pipeline uses and where their manifests are.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelsConfig {
    /// Folder holding `<id>.toml` manifests and model files (default: `models/` in the working directory or above
    /// the executable).
    pub dir: Option<PathBuf>,
    /// Detector manifest id. Unset (the default): `yunet-s-dynamic` when its model file is in the models folder,
    /// else `yunet-2023mar`, the only one a mirror of OpenCV Zoo holds. Both are the same network and find the same
    /// faces and landmarks (a small photo enlarged by `detection.max_upscale` alike; docs/benchmarks.md), but the
    /// dynamic one runs at the photo's own shape: a 250 px photo costs a 512² inference instead of 640², a 4:3
    /// photo 640×480. Set it to name a detector exactly; then a missing file is an error, never a fallback.
    pub detector: Option<String>,
    /// Recognizer manifest id (default `face-reid-retail-0095`).
    pub recognizer: String,
    /// Licences (SPDX identifiers) this site accepts for models whose manifest asks for acceptance (default none),
    /// e.g. `["CC-BY-NC-SA-4.0"]` for `edgeface-xs`, which is for non-commercial use only. A model whose licence
    /// needs acceptance and is not listed is refused at load time.
    pub accept_licences: Vec<String>,
}

impl Default for ModelsConfig {
    fn default() -> Self {
        ModelsConfig { dir: None, detector: None, recognizer: "face-reid-retail-0095".into(), accept_licences: Vec::new() }
    }
}

impl ModelsConfig {
    /// The manifest folder: the configured one, or the first `models/` holding the recognizer's manifest.
    pub fn resolve_dir(&self) -> Result<PathBuf, ModelsDirNotFound> {
        if let Some(dir) = &self.dir {
            return Ok(dir.clone());
        }
        let roots = search_roots();
        for root in &roots {
            let dir = root.join("models");
            if dir.join(format!("{}.toml", self.recognizer)).is_file() {
                return Ok(dir);
            }
        }
        Err(ModelsDirNotFound {
            searched: roots.iter().map(|r| r.display().to_string()).collect::<Vec<_>>().join(", "),
        })
    }

    /// The detector manifest id to load from `dir`: the configured one, or the default rule of `detector`.
    pub fn detector_id(&self, dir: &Path) -> String {
        if let Some(id) = &self.detector {
            return id.clone();
        }
        let dynamic_installed = ModelManifest::load(dir, DYNAMIC_DETECTOR).is_ok_and(|m| m.model_path().is_file());
        if dynamic_installed { DYNAMIC_DETECTOR } else { FIXED_DETECTOR }.to_string()
    }
}

/// The configuration sections the pipeline reads; the service's `Config` composes them with its own.
#[derive(Debug, Clone, Default)]
pub struct PipelineConfig {
    pub runtime: RuntimeConfig,
    pub models: ModelsConfig,
    pub detection: DetectionConfig,
    pub limits: DecodeLimits,
}

/// One face found in a photo, with everything later stages need.
#[derive(Debug, Clone)]
pub struct AnalyzedFace {
    pub detection: Detection,
    pub quality: FaceQuality,
    pub aligned: AlignedFace,
    pub embedding: Embedding,
}

/// Milliseconds spent per stage on one photo.
#[derive(Debug, Clone, Copy, Default, Serialize, utoipa::ToSchema)]
pub struct StageTimings {
    pub decode_ms: f64,
    pub detect_ms: f64,
    pub align_ms: f64,
    pub embed_ms: f64,
}

/// A photo's faces, best detector score first.
#[derive(Debug, Clone)]
pub struct Analysis {
    pub width: u32,
    pub height: u32,
    pub photo_sha256: String,
    pub faces: Vec<AnalyzedFace>,
    /// Faces the detector found: more than `faces.len()` when `max_faces` kept only the largest.
    pub faces_detected: usize,
    pub timings: StageTimings,
}

impl Analysis {
    /// The photo's subject (see [`subject_index`]): the face a labelled photo is about, or a one-face search is for.
    pub fn subject(&self) -> Option<&AnalyzedFace> {
        let index = subject_index(self.faces.iter().map(|f| &f.detection.bbox), self.width, self.height)?;
        self.faces.get(index)
    }
}

/// Per-call options.
#[derive(Debug, Clone, Copy, Default)]
pub struct AnalyzeOptions {
    /// Smallest face to look for, photo pixels (None: the configured default).
    pub min_face_px: Option<f32>,
    /// Keep at most this many faces, the largest (None: all).
    pub max_faces: Option<usize>,
}

/// Detector + aligner + recognizer.
pub struct FacePipeline {
    runtime: Runtime,
    detector: Detector,
    recognizer: Recognizer,
    alignment: AlignmentSpec,
    limits: DecodeLimits,
    budget: Arc<DecodeBudget>,
    models_dir: PathBuf,
    /// What it was loaded from, so that a pipeline for another recognizer can be made alike.
    config: PipelineConfig,
}

impl FacePipeline {
    /// Loads the runtime and both models named by the config, verifying each against its manifest.
    pub fn load(config: &PipelineConfig) -> Result<FacePipeline, PipelineLoadError> {
        let runtime = Runtime::init(&config.runtime)?;
        FacePipeline::with_runtime(runtime, config)
    }

    pub fn with_runtime(runtime: Runtime, config: &PipelineConfig) -> Result<FacePipeline, PipelineLoadError> {
        let models_dir = config.models.resolve_dir()?;
        let detector_manifest = ModelManifest::load(&models_dir, &config.models.detector_id(&models_dir))?;
        let recognizer_manifest = ModelManifest::load(&models_dir, &config.models.recognizer)?;
        for manifest in [&detector_manifest, &recognizer_manifest] {
            manifest.check_licence(&config.models.accept_licences)?;
        }
        let detector = Detector::new(&runtime, detector_manifest, config.detection.clone())?;
        let recognizer = Recognizer::new(&runtime, recognizer_manifest)?;
        let alignment = recognizer.manifest().alignment.clone().ok_or_else(|| ManifestError::Invalid {
            path: models_dir.join(format!("{}.toml", config.models.recognizer)),
            problem: "a recognizer needs an [alignment] table".into(),
        })?;
        let budget = DecodeBudget::new(config.limits.budget_bytes);
        let config = config.clone();
        Ok(FacePipeline { runtime, detector, recognizer, alignment, limits: config.limits, budget, models_dir, config })
    }

    /// The same pipeline (runtime, detector, settings) with another recognizer: what a gallery migrating to that
    /// model makes its templates with. Checks the recognizer's manifest, file and licence like the first load.
    pub fn with_recognizer(&self, recognizer: &str) -> Result<FacePipeline, PipelineLoadError> {
        let mut config = self.config.clone();
        config.models.recognizer = recognizer.to_owned();
        config.models.dir = Some(self.models_dir.clone());
        FacePipeline::with_runtime(self.runtime.clone(), &config)
    }

    /// The configuration the pipeline was loaded from.
    pub fn config(&self) -> &PipelineConfig {
        &self.config
    }

    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }
    pub fn detector(&self) -> &Detector {
        &self.detector
    }
    pub fn recognizer(&self) -> &Recognizer {
        &self.recognizer
    }
    pub fn models_dir(&self) -> &std::path::Path {
        &self.models_dir
    }
    pub fn limits(&self) -> &DecodeLimits {
        &self.limits
    }

    pub fn decode(&self, bytes: &[u8]) -> Result<Photo, DecodeError> {
        decode_photo_within(bytes, &self.limits, Some(&self.budget))
    }

    /// Decodes and analyses photo bytes.
    pub fn analyze_bytes(&self, bytes: &[u8], options: AnalyzeOptions) -> Result<Analysis, PipelineError> {
        let start = Instant::now();
        let photo = self.decode(bytes)?;
        let decode_ms = ms_since(start);
        let mut analysis = self.analyze(&photo, options)?;
        analysis.timings.decode_ms = decode_ms;
        Ok(analysis)
    }

    /// Detects every face, aligns and assesses each, and embeds them in one batch.
    pub fn analyze(&self, photo: &Photo, options: AnalyzeOptions) -> Result<Analysis, PipelineError> {
        let mut timings = StageTimings::default();
        let start = Instant::now();
        let min_face = options.min_face_px.unwrap_or(self.detector.config().min_face_px);
        let mut detections = self.detector.detect_with(&photo.image, min_face)?;
        let faces_detected = detections.len();
        if let Some(max) = options.max_faces.filter(|&max| detections.len() > max) {
            // The largest faces are the ones a reviewer can judge; among them, best score first again.
            detections.sort_by(|a, b| (b.bbox.width * b.bbox.height).total_cmp(&(a.bbox.width * a.bbox.height)));
            detections.truncate(max);
            detections.sort_by(|a, b| b.score.total_cmp(&a.score));
        }
        timings.detect_ms = ms_since(start);

        let start = Instant::now();
        let mut aligned = Vec::with_capacity(detections.len());
        for d in &detections {
            aligned.push(align_face(&photo.image, &d.landmarks, &self.alignment)?);
        }
        let qualities: Vec<FaceQuality> = detections.iter().zip(&aligned).map(|(d, a)| assess_face(d, &a.image)).collect();
        timings.align_ms = ms_since(start);

        let start = Instant::now();
        let crops: Vec<&AlignedFace> = aligned.iter().collect();
        let embeddings = self.recognizer.embed(&crops)?;
        timings.embed_ms = ms_since(start);

        let faces = detections
            .into_iter()
            .zip(qualities)
            .zip(aligned)
            .zip(embeddings)
            .map(|(((detection, quality), aligned), embedding)| AnalyzedFace { detection, quality, aligned, embedding })
            .collect();
        Ok(Analysis {
            width: photo.width(),
            height: photo.height(),
            photo_sha256: photo.sha256.clone(),
            faces,
            faces_detected,
            timings,
        })
    }
}

impl FacePipeline {
    /// Aligns, assesses and embeds the face of a stored enrolment region (see [`crate::face_region`]) for this
    /// pipeline's recognizer, without detecting again: the landmarks are those found on the enrolment photo.
    pub fn analyze_region(&self, jpeg: &[u8], geometry: &RegionGeometry) -> Result<AnalyzedFace, PipelineError> {
        let region = self.decode(jpeg)?;
        let aligned = align_face(&region.image, &geometry.detection.landmarks, &self.alignment)?;
        let quality = assess_face(&geometry.photo_scale_detection(), &aligned.image);
        let embedding = self.recognizer.embed(&[&aligned])?.pop().ok_or_else(|| EmbedError::Degenerate {
            id: self.recognizer.manifest().id.clone(),
        })?;
        Ok(AnalyzedFace { detection: geometry.detection, quality, aligned, embedding })
    }

    /// The region to keep of an analysed face of `photo` (see [`crate::face_region`]).
    pub fn face_region(&self, photo: &Photo, face: &AnalyzedFace) -> Result<FaceRegion, RegionError> {
        cut_face_region(&photo.image, &face.detection)
    }
}

fn ms_since(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_detector_is_the_dynamic_one_only_when_its_file_is_installed() {
        let repo_models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
        let dir = tempfile::tempdir().unwrap();
        let models = ModelsConfig::default();
        assert_eq!(models.detector_id(dir.path()), FIXED_DETECTOR, "no manifest");
        let manifest = format!("{DYNAMIC_DETECTOR}.toml");
        std::fs::copy(repo_models.join(&manifest), dir.path().join(&manifest)).unwrap();
        assert_eq!(models.detector_id(dir.path()), FIXED_DETECTOR, "manifest without its model file");
        let file = ModelManifest::load(dir.path(), DYNAMIC_DETECTOR).unwrap().model_path();
        std::fs::write(file, b"present; its sha256 is checked when the detector loads").unwrap();
        assert_eq!(models.detector_id(dir.path()), DYNAMIC_DETECTOR);
        let named = ModelsConfig { detector: Some("site-detector".into()), ..ModelsConfig::default() };
        assert_eq!(named.detector_id(dir.path()), "site-detector", "a named detector is never replaced");
    }
}
