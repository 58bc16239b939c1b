//! Layered configuration: built-in defaults, then a TOML file, then `FACEMATCH_<SECTION>__<KEY>` environment
//! variables, then command-line flags (applied by the CLI). Every section's defaults are documented on its struct
//! and in `docs/config.md`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::decode::DecodeLimits;
use crate::detect::DetectionConfig;
use crate::pipeline::{ModelsConfig, PipelineConfig};
use crate::quality::QualityPolicy;
use crate::runtime::RuntimeConfig;

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
}

/// The whole configuration, composed of the sections each module owns and documents (this file owns none of them:
/// it sits on top, so that no layer below has to know about the layers above it).
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
    pub access: crate::service::AccessConfig,
    pub jobs: crate::service::JobsConfig,
    pub hits: crate::service::HitsConfig,
    pub alerts: crate::service::AlertsConfig,
}

impl Config {
    /// The sections the face pipeline reads.
    pub fn pipeline(&self) -> PipelineConfig {
        PipelineConfig {
            runtime: self.runtime.clone(),
            models: self.models.clone(),
            detection: self.detection.clone(),
            limits: self.limits,
        }
    }

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
