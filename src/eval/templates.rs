//! The harness's templates: each photo's subject (its most central large face) run through the face pipeline once
//! per model set-up, and cached as JSON lines keyed by the photo's sha256 in a file named after that set-up.

use std::collections::{BTreeSet, HashMap};
use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

use super::protocol::PhotoSet;
use super::report::ModelFact;
use crate::config::Config;
use crate::manifest::{ManifestError, ModelManifest};
use crate::pipeline::{AnalyzeOptions, FacePipeline, ModelsDirNotFound, PipelineLoadError};
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

/// How the harness picks a photo's face, for the reports' notes ([`crate::pipeline::Analysis::subject`]).
pub const SUBJECT_RULE: &str =
    "the subject of a photo is its most central face among those at least half the largest's size";

/// Why templates could not be made or cached.
#[derive(Debug, Error)]
pub enum TemplateError {
    #[error(transparent)]
    ModelsDir(#[from] ModelsDirNotFound),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("model {id}: not a recognizer")]
    NotARecognizer { id: String },
    #[error("template cache key: cannot be serialised")]
    Key(#[source] serde_json::Error),
    #[error(transparent)]
    Pipeline(#[from] PipelineLoadError),
    #[error("photo {}: cannot be read", .path.display())]
    ReadPhoto {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("template cache folder {}: cannot be created", .path.display())]
    CreateFolder {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("template cache {}: cannot be read", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("template cache {}: cannot be opened", .path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("template cache {}: cannot be written", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("template cache {}: a template cannot be serialised", .path.display())]
    Serialise {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// What the pipeline made of one photo: its subject's template (most central large face), or why there is none.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PhotoTemplate {
    photo_sha256: String,
    faces: usize,
    embedding: Option<Vec<f32>>,
    quality: Option<FaceQuality>,
    /// Pipeline error code when the photo could not be analysed.
    error: Option<String>,
}

/// The models a run used, and the cache key their set-up gives.
#[derive(Debug, Clone)]
pub struct ModelSetup {
    pub(crate) recognizer: ModelFact,
    pub(crate) detector: ModelFact,
    pub(crate) dimension: usize,
    pub(crate) verify_threshold: Option<f32>,
    pub(crate) cache_key: String,
}

impl ModelSetup {
    /// The configured recognizer and detector, from their manifests.
    pub fn load(config: &Config) -> Result<ModelSetup, TemplateError> {
        let dir = config.models.resolve_dir()?;
        let recognizer = ModelManifest::load(&dir, &config.models.recognizer)?;
        let detector = ModelManifest::load(&dir, &config.models.detector_id(&dir))?;
        let dimension = recognizer
            .recognizer
            .as_ref()
            .map(|r| r.dimension)
            .ok_or_else(|| TemplateError::NotARecognizer { id: recognizer.id.clone() })?;
        // Everything that changes a template: both manifests (hashes, template, normalisation), the detection and
        // decoding settings, and the pipeline's own source code, so a changed alignment never reuses stale
        // templates.
        let key_material =
            serde_json::to_string(&(&recognizer, &detector, &config.detection, &config.limits, PIPELINE_SOURCES))
                .map_err(TemplateError::Key)?;
        let cache_key = hex::encode(&Sha256::digest(key_material.as_bytes())[..6]);
        Ok(ModelSetup {
            recognizer: ModelFact { id: recognizer.id.clone(), sha256: recognizer.sha256.clone() },
            detector: ModelFact { id: detector.id.clone(), sha256: detector.sha256.clone() },
            dimension,
            verify_threshold: recognizer.thresholds.as_ref().map(|t| t.verify),
            cache_key,
        })
    }

    /// The cache file of this set-up in `cache_dir`.
    pub fn cache_file(&self, cache_dir: &Path) -> PathBuf {
        cache_dir.join(format!("{}-{}.jsonl", self.recognizer.id, self.cache_key))
    }
}

/// Told how the analysis of photos missing from the cache goes, so that a caller can show it; every method does
/// nothing by default.
pub trait AnalysisProgress: Sync {
    /// `photos` photos are about to be analysed with `recognizer`.
    fn started(&self, _recognizer: &str, _photos: usize) {}
    /// One more photo is analysed.
    fn analysed(&self) {}
    /// Every photo is analysed.
    fn finished(&self) {}
}

/// Progress nobody watches.
#[derive(Debug, Clone, Copy, Default)]
pub struct Unwatched;

impl AnalysisProgress for Unwatched {}

/// Templates of a photo set, indexed like `set.photos`; `None` for photos not asked for.
#[derive(Debug, Clone)]
pub struct Templates(Vec<Option<PhotoTemplate>>);

impl Templates {
    fn get(&self, index: usize) -> Option<&PhotoTemplate> {
        self.0.get(index)?.as_ref()
    }

    /// The subject's embedding of photo `index`; `None` when the photo was not asked for or shows no face.
    pub fn embedding(&self, index: usize) -> Option<&[f32]> {
        self.get(index)?.embedding.as_deref()
    }

    /// The detector's score for the subject of photo `index`; `None` when the photo was not asked for or shows no
    /// face.
    pub fn detector_score(&self, index: usize) -> Option<f32> {
        self.get(index)?.quality.map(|q| q.detector_score)
    }

    /// Every embedding with `mean` subtracted ([`crate::score::decision::centre`]).
    pub fn centred(&self, mean: &[f32]) -> Templates {
        Templates(
            self.0
                .iter()
                .map(|t| {
                    t.as_ref().map(|t| PhotoTemplate {
                        embedding: t.embedding.as_ref().map(|e| crate::score::decision::centre(e, mean)),
                        ..t.clone()
                    })
                })
                .collect(),
        )
    }
}

/// Cosine similarity of two unit-length templates.
pub fn similarity(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn read_cache(path: &Path) -> Result<HashMap<String, PhotoTemplate>, TemplateError> {
    let mut cache = HashMap::new();
    let read_error = |source| TemplateError::Read { path: path.to_path_buf(), source };
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(cache),
        Err(e) => return Err(read_error(e)),
    };
    for line in BufReader::new(file).lines() {
        let line = line.map_err(read_error)?;
        // A run killed mid-write leaves a partial last line; that photo is simply analysed again.
        if let Ok(entry) = serde_json::from_str::<PhotoTemplate>(&line) {
            cache.insert(entry.photo_sha256.clone(), entry);
        }
    }
    Ok(cache)
}

fn read_photo(path: &Path) -> Result<Vec<u8>, TemplateError> {
    std::fs::read(path).map_err(|source| TemplateError::ReadPhoto { path: path.to_path_buf(), source })
}

/// Templates of `photos` (indices into `set.photos`), from the cache in `cache_dir` where present and from the
/// pipeline otherwise, on `pool`; the photos analysed are appended to the cache as they finish, so an interrupted
/// run loses none of them.
pub fn photo_templates(
    config: &Config,
    setup: &ModelSetup,
    set: &PhotoSet,
    photos: &BTreeSet<usize>,
    cache_dir: &Path,
    pool: &rayon::ThreadPool,
    progress: &dyn AnalysisProgress,
) -> Result<Templates, TemplateError> {
    let cache_path = setup.cache_file(cache_dir);
    let mut cache = read_cache(&cache_path)?;
    let hashed: Vec<(usize, String)> = pool.install(|| {
        photos
            .par_iter()
            .map(|&index| Ok((index, hex::encode(Sha256::digest(read_photo(&set.path(index))?)))))
            .collect::<Result<_, TemplateError>>()
    })?;
    let missing: Vec<(usize, &String)> =
        hashed.iter().filter(|(_, sha)| !cache.contains_key(sha.as_str())).map(|(i, sha)| (*i, sha)).collect();
    if !missing.is_empty() {
        std::fs::create_dir_all(cache_dir)
            .map_err(|source| TemplateError::CreateFolder { path: cache_dir.to_path_buf(), source })?;
        let pipeline = FacePipeline::load(&config.pipeline())?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&cache_path)
            .map_err(|source| TemplateError::Open { path: cache_path.clone(), source })?;
        let write_error = |source| TemplateError::Write { path: cache_path.clone(), source };
        let writer = Mutex::new(BufWriter::new(file));
        progress.started(&setup.recognizer.id, missing.len());
        let fresh: Vec<PhotoTemplate> = pool.install(|| {
            missing
                .par_iter()
                .map(|&(index, sha)| {
                    let template = analyse_photo(&pipeline, &set.path(index), sha)?;
                    let line = serde_json::to_string(&template)
                        .map_err(|source| TemplateError::Serialise { path: cache_path.clone(), source })?;
                    writeln!(writer.lock(), "{line}").map_err(write_error)?;
                    progress.analysed();
                    Ok(template)
                })
                .collect::<Result<_, TemplateError>>()
        })?;
        progress.finished();
        writer.into_inner().flush().map_err(write_error)?;
        for template in fresh {
            cache.insert(template.photo_sha256.clone(), template);
        }
    }
    let mut out = vec![None; set.photos.len()];
    for (index, sha) in hashed {
        out[index] = cache.get(&sha).cloned();
    }
    Ok(Templates(out))
}

fn analyse_photo(pipeline: &FacePipeline, path: &Path, sha: &str) -> Result<PhotoTemplate, TemplateError> {
    let bytes = read_photo(path)?;
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
