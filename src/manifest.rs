//! Model manifests: every fact about a model (file, hash, tensors, colour order, normalisation, alignment template,
//! dimension, metric, thresholds, calibration) is data in `models/<id>.toml`, checked when the model loads.
//!
//! Nothing about a model is guessed from its tensor shapes: the manifest states the shapes and loading fails when the
//! ONNX file disagrees. A site brings its own recognizer by adding a manifest and its file.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::score::ImpostorRates;
use crate::runtime::ModelSignature;

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("model manifest {path}: cannot be read")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("model manifest {path}: invalid")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("model manifest {path}: {problem}")]
    Invalid { path: PathBuf, problem: String },
    #[error("model {id}: no manifest `{id}.toml` in {dir}")]
    UnknownModel { id: String, dir: PathBuf },
    #[error("model {id}: file {path} is missing; run `scripts/setup.sh` (it assembles models/ from FACEMATCH_MODEL_MIRROR)")]
    FileMissing { id: String, path: PathBuf },
    #[error("model {id}: file {path} has sha256 {actual} but the manifest pins {expected}; re-run `scripts/setup.sh` or fix the mirror")]
    HashMismatch { id: String, path: PathBuf, expected: String, actual: String },
    #[error("model {id}: the ONNX file does not match its manifest: {problem}")]
    SignatureMismatch { id: String, problem: String },
    #[error("model {id}: its licence {license} must be accepted before it is used ({terms}): add \"{license}\" to models.accept_licences in the configuration")]
    LicenceNotAccepted { id: String, license: String, terms: String },
    #[error("model {id}: is a {actual}, expected a {expected}")]
    WrongTask { id: String, expected: &'static str, actual: &'static str },
}

/// What a model does in the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelTask {
    Detector,
    Recognizer,
}

impl ModelTask {
    pub fn name(self) -> &'static str {
        match self {
            ModelTask::Detector => "detector",
            ModelTask::Recognizer => "recognizer",
        }
    }
}

/// Channel order a model expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColourOrder {
    Rgb,
    Bgr,
}

/// The image input: name, NCHW shape (-1 marks a dynamic dimension), colour order and `(x - mean) / std` per
/// channel, applied to 0..255 values in the stated colour order.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    pub name: String,
    pub shape: [i64; 4],
    pub colour: ColourOrder,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl InputSpec {
    /// Fixed (height, width), or `None` where the model takes any size.
    pub fn fixed_size(&self) -> Option<(u32, u32)> {
        let (h, w) = (self.shape[2], self.shape[3]);
        (h > 0 && w > 0).then_some((h as u32, w as u32))
    }
}

/// YuNet-style detector facts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorSpec {
    /// Decoder family; only `yunet` today.
    pub family: String,
    /// Feature-map strides; outputs are named `cls_{s}`, `obj_{s}`, `bbox_{s}`, `kps_{s}`.
    pub strides: Vec<u32>,
    /// Default score threshold (config may override).
    pub score_threshold: f32,
    /// Default non-maximum-suppression IoU.
    pub nms_iou: f32,
    /// Face sizes (in model-input pixels) the model was trained on; the pipeline scales photos into this range.
    pub min_face_px: f32,
    pub max_face_px: f32,
}

/// Recognizer facts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecognizerSpec {
    pub output: String,
    pub dimension: usize,
    /// Only `cosine` today: embeddings are L2-normalised and compared by dot product.
    pub metric: String,
    /// Average the embedding of the crop and of its mirror image (decided per model by measurement).
    pub flip_augmentation: bool,
}

/// Where the five landmarks (YuNet order: image-left eye, image-right eye, nose, image-left mouth corner,
/// image-right mouth corner) should land in the aligned crop, in crop pixels.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlignmentSpec {
    pub size: [u32; 2],
    pub template: [[f32; 2]; 5],
}

/// Operating thresholds on the model's similarity (cosine).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdSpec {
    /// 1:1 verification: similarity at or above this means "same person".
    pub verify: f32,
    /// How the verify threshold was chosen (data set, rule), for people reading `facematch models`.
    #[serde(default)]
    pub verify_note: String,
}

/// Impostor score distribution for identification mode: the estimated false-positive identification rate of a
/// decision score, measured on labelled data at a known gallery size.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalibrationSpec {
    /// The decision statistic the table is for (`top1` or `margin`); it must match what identification uses.
    pub statistic: String,
    /// For `margin`: how many runner-up scores are averaged.
    #[serde(default)]
    pub margin_cohort: usize,
    pub gallery_size: usize,
    pub searches: usize,
    /// How the table was made (data set, split, command).
    pub source: String,
    /// Ascending decision scores and, for each, the fraction of non-mated searches at or above it.
    pub scores: Vec<f32>,
    pub fpir: Vec<f64>,
    /// Per-comparison impostor rates with a fitted tail (`[calibration.comparisons]`): for the `top1` statistic
    /// they give the FPIR at any gallery size, where the search table above only resolves sizes near its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comparisons: Option<ImpostorRates>,
}

/// One model's manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelManifest {
    pub id: String,
    pub task: ModelTask,
    pub file: String,
    pub sha256: String,
    /// SPDX identifier of the model's licence, e.g. `Apache-2.0`.
    pub license: String,
    /// Whether a site must accept the licence in its configuration (`models.accept_licences`) before the model
    /// loads: true for licences with terms beyond redistribution, such as non-commercial use only.
    #[serde(default)]
    pub license_requires_acceptance: bool,
    /// What accepting it means, in a sentence, for the error and `facematch models`.
    #[serde(default)]
    pub license_terms: String,
    pub source: String,
    #[serde(default)]
    pub description: String,
    pub input: InputSpec,
    #[serde(default)]
    pub detector: Option<DetectorSpec>,
    #[serde(default)]
    pub recognizer: Option<RecognizerSpec>,
    #[serde(default)]
    pub alignment: Option<AlignmentSpec>,
    #[serde(default)]
    pub thresholds: Option<ThresholdSpec>,
    #[serde(default)]
    pub calibration: Option<CalibrationSpec>,
    /// Folder the manifest was read from; the model file is resolved against it.
    #[serde(skip)]
    pub dir: PathBuf,
}

impl ModelManifest {
    pub fn from_file(path: &Path) -> Result<ModelManifest, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read { path: path.to_path_buf(), source })?;
        let mut manifest: ModelManifest =
            toml::from_str(&text).map_err(|source| ManifestError::Parse { path: path.to_path_buf(), source })?;
        manifest.dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        manifest.validate(path)?;
        Ok(manifest)
    }

    /// Loads `<dir>/<id>.toml`.
    pub fn load(dir: &Path, id: &str) -> Result<ModelManifest, ManifestError> {
        let path = dir.join(format!("{id}.toml"));
        if !path.is_file() {
            return Err(ManifestError::UnknownModel { id: id.to_string(), dir: dir.to_path_buf() });
        }
        ModelManifest::from_file(&path)
    }

    /// Every manifest in a folder, sorted by id.
    pub fn load_all(dir: &Path) -> Result<Vec<ModelManifest>, ManifestError> {
        let entries = std::fs::read_dir(dir).map_err(|source| ManifestError::Read { path: dir.to_path_buf(), source })?;
        let mut manifests = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| ManifestError::Read { path: dir.to_path_buf(), source })?;
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "toml") {
                manifests.push(ModelManifest::from_file(&path)?);
            }
        }
        manifests.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(manifests)
    }

    /// Refuses a model whose licence needs acceptance unless `accepted` names it (SPDX identifiers, exact).
    pub fn check_licence(&self, accepted: &[String]) -> Result<(), ManifestError> {
        if self.licence_accepted(accepted) {
            Ok(())
        } else {
            Err(ManifestError::LicenceNotAccepted {
                id: self.id.clone(),
                license: self.license.clone(),
                terms: if self.license_terms.is_empty() { "see its manifest".into() } else { self.license_terms.clone() },
            })
        }
    }

    /// Whether the model may load under `accepted`: its licence needs no acceptance, or is accepted.
    pub fn licence_accepted(&self, accepted: &[String]) -> bool {
        !self.license_requires_acceptance || accepted.iter().any(|name| name == &self.license)
    }

    pub fn model_path(&self) -> PathBuf {
        self.dir.join(&self.file)
    }

    fn validate(&self, path: &Path) -> Result<(), ManifestError> {
        let invalid = |problem: String| Err(ManifestError::Invalid { path: path.to_path_buf(), problem });
        if self.sha256.len() != 64 || !self.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return invalid(format!("sha256 `{}` is not 64 hex digits", self.sha256));
        }
        if self.input.shape[1] != 3 {
            return invalid(format!("input shape {:?} is not NCHW with 3 channels", self.input.shape));
        }
        if self.input.std.iter().any(|s| *s == 0.0 || !s.is_finite()) {
            return invalid("input std must be finite and non-zero".into());
        }
        match self.task {
            ModelTask::Detector => {
                let Some(d) = &self.detector else { return invalid("a detector needs a [detector] table".into()) };
                if d.family != "yunet" {
                    return invalid(format!("detector family `{}` is not supported (known: yunet)", d.family));
                }
                if d.strides.is_empty() {
                    return invalid("detector strides are empty".into());
                }
            }
            ModelTask::Recognizer => {
                let Some(r) = &self.recognizer else { return invalid("a recognizer needs a [recognizer] table".into()) };
                if r.metric != "cosine" {
                    return invalid(format!("metric `{}` is not supported (known: cosine)", r.metric));
                }
                if r.dimension == 0 {
                    return invalid("recognizer dimension is 0".into());
                }
                let Some(a) = &self.alignment else { return invalid("a recognizer needs an [alignment] table".into()) };
                if let Some((h, w)) = self.input.fixed_size() {
                    if [w, h] != a.size {
                        return invalid(format!("alignment size {:?} differs from input {w}x{h}", a.size));
                    }
                }
                if self.thresholds.is_none() {
                    return invalid("a recognizer needs a [thresholds] table".into());
                }
                if let Some(c) = &self.calibration {
                    if c.scores.len() != c.fpir.len() || c.scores.is_empty() {
                        return invalid("calibration scores and fpir differ in length or are empty".into());
                    }
                    if c.scores.windows(2).any(|w| w[0] > w[1]) || c.fpir.windows(2).any(|w| w[0] < w[1]) {
                        return invalid("calibration scores must ascend and fpir must not ascend".into());
                    }
                }
            }
        }
        Ok(())
    }

    /// Identifies what this model's templates are: sha256 over the model file's sha256 and every manifest fact
    /// that shapes an embedding (input tensor, normalisation, alignment template and size, output, dimension,
    /// metric, mirror augmentation). Thresholds, calibration and prose are left out: they change how templates are
    /// judged, not what they are. The gallery keeps it per model id, so templates made by another set-up of the
    /// same id never mix with new ones.
    pub fn template_fingerprint(&self) -> String {
        let facts = serde_json::json!({
            "sha256": self.sha256,
            "input": self.input,
            "recognizer": self.recognizer,
            "alignment": self.alignment,
        });
        hex::encode(Sha256::digest(facts.to_string().as_bytes()))
    }

    /// Checks the file is present and its sha256 matches. Returns the path.
    pub fn verify_file(&self) -> Result<PathBuf, ManifestError> {
        let path = self.model_path();
        if !path.is_file() {
            return Err(ManifestError::FileMissing { id: self.id.clone(), path });
        }
        let actual = sha256_file(&path).map_err(|source| ManifestError::Read { path: path.clone(), source })?;
        if !actual.eq_ignore_ascii_case(&self.sha256) {
            return Err(ManifestError::HashMismatch { id: self.id.clone(), path, expected: self.sha256.clone(), actual });
        }
        Ok(path)
    }

    /// Checks the loaded model's tensor names and shapes against the manifest.
    pub fn check_signature(&self, signature: &ModelSignature) -> Result<(), ManifestError> {
        let mismatch = |problem: String| Err(ManifestError::SignatureMismatch { id: self.id.clone(), problem });
        let Some((_, shape)) = signature.inputs.iter().find(|(n, _)| *n == self.input.name) else {
            return mismatch(format!(
                "no input named `{}` (the model has {:?})",
                self.input.name,
                signature.inputs.iter().map(|(n, _)| n).collect::<Vec<_>>()
            ));
        };
        if !shapes_agree(shape, &self.input.shape) {
            return mismatch(format!("input `{}` has shape {shape:?}, manifest says {:?}", self.input.name, self.input.shape));
        }
        let output_names: Vec<&str> = signature.outputs.iter().map(|(n, _)| n.as_str()).collect();
        match self.task {
            ModelTask::Detector => {
                let strides = self.detector.as_ref().map(|d| d.strides.clone()).unwrap_or_default();
                for s in strides {
                    for head in ["cls", "obj", "bbox", "kps"] {
                        let name = format!("{head}_{s}");
                        if !output_names.contains(&name.as_str()) {
                            return mismatch(format!("no output named `{name}` (the model has {output_names:?})"));
                        }
                    }
                }
            }
            ModelTask::Recognizer => {
                let Some(spec) = &self.recognizer else { return Ok(()) };
                let Some((_, shape)) = signature.outputs.iter().find(|(n, _)| *n == spec.output) else {
                    return mismatch(format!("no output named `{}` (the model has {output_names:?})", spec.output));
                };
                if shape.last().copied() != Some(spec.dimension as i64) || shape.len() != 2 {
                    return mismatch(format!(
                        "output `{}` has shape {shape:?}, manifest says [batch, {}]",
                        spec.output, spec.dimension
                    ));
                }
            }
        }
        Ok(())
    }

    pub fn expect_task(&self, task: ModelTask) -> Result<(), ManifestError> {
        if self.task != task {
            return Err(ManifestError::WrongTask { id: self.id.clone(), expected: task.name(), actual: self.task.name() });
        }
        Ok(())
    }
}

/// A dynamic dimension (-1 or 0 in either) agrees with anything; fixed ones must be equal.
fn shapes_agree(actual: &[i64], declared: &[i64]) -> bool {
    actual.len() == declared.len() && actual.iter().zip(declared).all(|(a, d)| *a <= 0 || *d <= 0 || a == d)
}

/// Lower-case hex sha256 of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<String, std::io::Error> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RECOGNIZER: &str = r#"
id = "test-arcface"
task = "recognizer"
file = "arc.onnx"
sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
license = "MIT"
source = "unit test"
[input]
name = "data"
shape = [-1, 3, 112, 112]
colour = "rgb"
mean = [127.5, 127.5, 127.5]
std = [128.0, 128.0, 128.0]
[recognizer]
output = "fc1"
dimension = 512
metric = "cosine"
flip_augmentation = true
[alignment]
size = [112, 112]
template = [[38.29, 51.69], [73.53, 51.50], [56.02, 71.73], [41.55, 92.37], [70.73, 92.20]]
[thresholds]
verify = 0.3
"#;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn a_new_recognizer_is_data_only() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "test-arcface.toml", RECOGNIZER);
        let m = ModelManifest::load(dir.path(), "test-arcface").unwrap();
        assert_eq!(m.recognizer.as_ref().unwrap().dimension, 512);
        assert_eq!(m.input.fixed_size(), Some((112, 112)));
        assert_eq!(m.model_path(), dir.path().join("arc.onnx"));
    }

    #[test]
    fn the_template_fingerprint_follows_what_shapes_a_template() {
        let dir = tempfile::tempdir().unwrap();
        let load = |text: &str| {
            write(dir.path(), "test-arcface.toml", text);
            ModelManifest::load(dir.path(), "test-arcface").unwrap().template_fingerprint()
        };
        let base = load(RECOGNIZER);
        assert_eq!(base.len(), 64);
        assert_eq!(load(RECOGNIZER), base, "the same manifest gives the same fingerprint");
        let judged_differently =
            RECOGNIZER.replace("verify = 0.3", "verify = 0.4").replace("license = \"MIT\"", "license = \"CC0\"");
        assert_eq!(load(&judged_differently), base, "thresholds and prose do not change what a template is");
        for changed in [
            RECOGNIZER.replace("flip_augmentation = true", "flip_augmentation = false"),
            RECOGNIZER.replace("colour = \"rgb\"", "colour = \"bgr\""),
            RECOGNIZER.replace("[38.29, 51.69]", "[38.30, 51.69]"),
            RECOGNIZER.replace("sha256 = \"0000", "sha256 = \"1000"),
        ] {
            assert_ne!(load(&changed), base, "{changed}");
        }
    }

    #[test]
    fn missing_file_and_wrong_hash_say_how_to_fix() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "test-arcface.toml", RECOGNIZER);
        let m = ModelManifest::load(dir.path(), "test-arcface").unwrap();
        let err = m.verify_file().unwrap_err();
        assert!(matches!(err, ManifestError::FileMissing { .. }));
        assert!(err.to_string().contains("scripts/setup.sh"));
        write(dir.path(), "arc.onnx", "not a model");
        let err = m.verify_file().unwrap_err();
        assert!(matches!(err, ManifestError::HashMismatch { .. }), "{err}");
    }

    #[test]
    fn signature_mismatch_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "test-arcface.toml", RECOGNIZER);
        let m = ModelManifest::load(dir.path(), "test-arcface").unwrap();
        let good = ModelSignature {
            inputs: vec![("data".into(), vec![-1, 3, 112, 112])],
            outputs: vec![("fc1".into(), vec![-1, 512])],
        };
        m.check_signature(&good).unwrap();
        let wrong_dim = ModelSignature { outputs: vec![("fc1".into(), vec![-1, 128])], ..good.clone() };
        assert!(m.check_signature(&wrong_dim).is_err());
        let wrong_name = ModelSignature { inputs: vec![("input".into(), vec![-1, 3, 112, 112])], ..good.clone() };
        assert!(m.check_signature(&wrong_name).unwrap_err().to_string().contains("`data`"));
        let wrong_size = ModelSignature { inputs: vec![("data".into(), vec![-1, 3, 128, 128])], ..good };
        assert!(m.check_signature(&wrong_size).is_err());
    }

    #[test]
    fn inconsistent_manifests_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let bad_size = RECOGNIZER.replace("size = [112, 112]", "size = [128, 128]");
        let p = write(dir.path(), "a.toml", &bad_size);
        assert!(matches!(ModelManifest::from_file(&p), Err(ManifestError::Invalid { .. })));
        let bad_metric = RECOGNIZER.replace("\"cosine\"", "\"manhattan\"");
        let p = write(dir.path(), "b.toml", &bad_metric);
        assert!(matches!(ModelManifest::from_file(&p), Err(ManifestError::Invalid { .. })));
        let unknown_key = format!("{RECOGNIZER}\n[extra]\nx = 1\n");
        let p = write(dir.path(), "c.toml", &unknown_key);
        assert!(matches!(ModelManifest::from_file(&p), Err(ManifestError::Parse { .. })));
    }

    #[test]
    fn sha256_of_a_known_string() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "abc", "abc");
        assert_eq!(sha256_file(&p).unwrap(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn a_licence_that_needs_acceptance_is_refused_until_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let text = RECOGNIZER
            .replace("license = \"MIT\"", "license = \"CC-BY-NC-SA-4.0\"\nlicense_requires_acceptance = true\nlicense_terms = \"non-commercial use only\"");
        std::fs::write(dir.path().join("test-arcface.toml"), text).unwrap();
        let m = ModelManifest::load(dir.path(), "test-arcface").unwrap();
        let refused = m.check_licence(&[]).unwrap_err().to_string();
        assert!(refused.contains("CC-BY-NC-SA-4.0") && refused.contains("models.accept_licences") && refused.contains("non-commercial"), "{refused}");
        assert!(m.check_licence(&["CC-BY-NC-4.0".into()]).is_err(), "only the exact licence counts");
        m.check_licence(&["Apache-2.0".into(), "CC-BY-NC-SA-4.0".into()]).unwrap();

        std::fs::write(dir.path().join("test-arcface.toml"), RECOGNIZER).unwrap();
        let open = ModelManifest::load(dir.path(), "test-arcface").unwrap();
        assert!(open.licence_accepted(&[]), "a licence without terms to accept loads as before");
    }
}
