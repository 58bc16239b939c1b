//! Why an evaluation run (verification, identification, the split study, a calibration table) could not finish.
//!
//! The harness's own failures carry the file or data set they concern first; errors of the layers it drives
//! (manifests, protocols, metrics, reports) pass through unchanged, so a message reads the same wherever it rose.

use std::path::PathBuf;

use thiserror::Error;

use super::metrics::MetricError;
use super::protocol::ProtocolError;
use super::report::ReportError;
use super::templates::TemplateError;
use crate::manifest::ManifestError;
use crate::pipeline::ModelsDirNotFound;
use crate::score::decision::DecisionError;
use crate::score::ScoreError;
use crate::service::ServiceError;

/// Why an evaluation run failed.
#[derive(Debug, Error)]
pub enum EvalError {
    #[error(transparent)]
    ModelsDir(#[from] ModelsDirNotFound),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Statistic(#[from] DecisionError),
    #[error("model {id}: [calibration] statistic")]
    ManifestStatistic {
        id: String,
        #[source]
        source: DecisionError,
    },
    #[error(transparent)]
    Templates(#[from] TemplateError),
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error(transparent)]
    Metric(#[from] MetricError),
    #[error(transparent)]
    Score(#[from] ScoreError),
    #[error(transparent)]
    Report(#[from] ReportError),
    #[error("thread pool: cannot be started")]
    ThreadPool(#[source] rayon::ThreadPoolBuildError),
    #[error("eval verify {dataset}: needs mated and non-mated pairs ({mated} and {nonmated})")]
    MissingPairClass { dataset: String, mated: usize, nonmated: usize },
    #[error("eval identify {dataset}: no identity has two photos, so there is no mated search")]
    NoMatedSearch { dataset: String },
    #[error("eval identify: a split study needs at least one split")]
    NoSplits,
    /// The searches of a run over its base gallery failed; `run` names the data set (and split).
    #[error("eval identify {run}")]
    OpenSet {
        run: String,
        #[source]
        source: OpenSetError,
    },
    #[error("eval identify {dataset}: impostor rates")]
    ImpostorRates {
        dataset: String,
        #[source]
        source: ScoreError,
    },
    #[error("calibration {}: the protocol gives no non-mated search with a face on this folder", .path.display())]
    NoNonmatedSearch { path: PathBuf },
    #[error("calibration {}: cannot be serialised", .path.display())]
    SerialiseCalibration {
        path: PathBuf,
        #[source]
        source: toml::ser::Error,
    },
    #[error("calibration {}: does not read back", .path.display())]
    ReadBackCalibration {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("calibration {}: refused by the service's checks", .path.display())]
    InvalidCalibration {
        path: PathBuf,
        #[source]
        source: Box<ServiceError>,
    },
    #[error("calibration hold-out, split seed {split_seed}: the service refuses the tuning half's calibration")]
    HoldoutCalibration {
        split_seed: u64,
        #[source]
        source: Box<ServiceError>,
    },
    #[error("eval identify {dataset}: no identity has {needed} photos, to enrol {enrolled} and search with the rest")]
    TooFewPhotosPerSubject { dataset: String, needed: usize, enrolled: usize },
    #[error("eval identify {dataset}: the recognizer {id} ships no [calibration]")]
    NoShippedCalibration { dataset: String, id: String },
    #[error("calibration folder {}: cannot be created", .path.display())]
    CreateCalibrationFolder {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("calibration {}: cannot be written", .path.display())]
    WriteCalibration {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("report folder {}: cannot be created", .path.display())]
    CreateReportFolder {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("summary {}: cannot be serialised", .path.display())]
    SerialiseSummary {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("summary {}: cannot be written", .path.display())]
    WriteSummary {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Why the searches of an identification run over its base gallery failed.
#[derive(Debug, Error)]
pub enum OpenSetError {
    #[error("no gallery photo has a face")]
    EmptyGallery,
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error(transparent)]
    Metric(#[from] MetricError),
}
