//! Layered configuration: built-in defaults, then a TOML file, then `FACEMATCH_<SECTION>__<KEY>` environment
//! variables, then command-line flags (applied by the CLI). Every section's defaults are documented on its struct
//! and in `docs/config.md`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::decode::DecodeLimits;
use crate::detect::DetectionConfig;
use crate::manifest::ModelManifest;
use crate::quality::QualityPolicy;
use crate::runtime::{search_roots, RuntimeConfig};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: cannot be read")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path}: invalid toml")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("environment variable {name}: `{key}` is not a config table")]
    EnvPath { name: String, key: String },
    #[error("configuration is invalid")]
    Invalid {
        #[source]
        source: toml::de::Error,
    },
    #[error("models folder not found (looked for `models/` with manifests in {searched}); set `models.dir`")]
    ModelsDirNotFound { searched: String },
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
}

impl Default for ModelsConfig {
    fn default() -> Self {
        ModelsConfig { dir: None, detector: None, recognizer: "face-reid-retail-0095".into() }
    }
}

impl ModelsConfig {
    /// The manifest folder: the configured one, or the first `models/` holding the recognizer's manifest.
    pub fn resolve_dir(&self) -> Result<PathBuf, ConfigError> {
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
        Err(ConfigError::ModelsDirNotFound {
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

/// The whole configuration. Sections owned by other modules keep their own documented defaults.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub runtime: RuntimeConfig,
    pub models: ModelsConfig,
    pub detection: DetectionConfig,
    pub limits: DecodeLimits,
    pub quality: QualityPolicy,
    pub server: crate::http::ServerConfig,
    pub gallery: crate::service::GalleryConfig,
}

impl Config {
    /// Defaults ← file (when given) ← `FACEMATCH_*__*` environment variables.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut table = match file {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
                toml::from_str::<toml::Table>(&text).map_err(|source| ConfigError::Parse { path: path.to_path_buf(), source })?
            }
            None => toml::Table::new(),
        };
        apply_env(&mut table, std::env::vars())?;
        toml::Value::Table(table).try_into().map_err(|source| ConfigError::Invalid { source })
    }
}

/// Applies `FACEMATCH_SECTION__KEY=value` (sections separated by `__`, lower-cased). Values are read as TOML
/// (`2`, `true`, `[1, 2]`) and fall back to a plain string.
fn apply_env(table: &mut toml::Table, vars: impl Iterator<Item = (String, String)>) -> Result<(), ConfigError> {
    for (name, raw) in vars {
        let Some(rest) = name.strip_prefix("FACEMATCH_") else { continue };
        if !rest.contains("__") {
            continue;
        }
        let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
        let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(raw.clone()));
        let (last, parents) = path.split_last().expect("split of a non-empty string");
        let mut node = &mut *table;
        for key in parents {
            let entry = node.entry(key.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
            node = entry.as_table_mut().ok_or_else(|| ConfigError::EnvPath { name: name.clone(), key: key.clone() })?;
        }
        node.insert(last.clone(), value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_file_and_parses_types() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "[models]\nrecognizer = \"dlib-resnet-v1\"\n[runtime]\nsessions = 3\n").unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        let mut table: toml::Table = toml::from_str(&text).unwrap();
        let vars = vec![
            ("FACEMATCH_RUNTIME__SESSIONS".to_string(), "5".to_string()),
            ("FACEMATCH_DETECTION__MIN_FACE_PX".to_string(), "20.0".to_string()),
            ("FACEMATCH_MODELS__DIR".to_string(), "/opt/models".to_string()),
            ("FACEMATCH_MODEL_MIRROR".to_string(), "/ignored".to_string()),
        ];
        apply_env(&mut table, vars.into_iter()).unwrap();
        let config: Config = toml::Value::Table(table).try_into().unwrap();
        assert_eq!(config.models.recognizer, "dlib-resnet-v1");
        assert_eq!(config.runtime.sessions, 5);
        assert_eq!(config.detection.min_face_px, 20.0);
        assert_eq!(config.models.dir, Some(PathBuf::from("/opt/models")));
    }

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

    #[test]
    fn unknown_keys_are_refused() {
        let mut table: toml::Table = toml::from_str("[runtime]\nthreads = 3\n").unwrap();
        apply_env(&mut table, std::iter::empty()).unwrap();
        assert!(toml::Value::Table(table).try_into::<Config>().is_err());
    }

    #[test]
    fn defaults_need_no_file() {
        let config: Config = toml::Value::Table(toml::Table::new()).try_into().unwrap();
        assert_eq!(config.models.detector, None);
        assert_eq!(config.runtime.intra_threads, 1);
    }

    /// docs/config.md promises every default: its example must parse with today's keys and say exactly what the
    /// code does (the core-dependent counts are documented for a 2-core machine).
    #[test]
    fn the_documented_example_is_the_defaults() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/config.md")).unwrap();
        let block = text.split("```toml").nth(1).and_then(|rest| rest.split("```").next()).expect("a toml block");
        let documented: Config = toml::from_str(block).expect("docs/config.md parses with today's keys");
        let mut documented = toml::Value::try_from(&documented).unwrap();
        let mut defaults = toml::Value::try_from(Config::default()).unwrap();
        for value in [&mut documented, &mut defaults] {
            value["runtime"]["sessions"] = toml::Value::Integer(0);
            value["server"]["max_concurrent_analyses"] = toml::Value::Integer(0);
        }
        assert_eq!(documented, defaults);
    }
}
