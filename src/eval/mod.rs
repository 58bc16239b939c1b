//! Evaluation harness: accuracy runs on labelled photo folders, their biometric metrics, figures and reports
//! (NIST FRTE / ISO/IEC 19795-1 vocabulary), and the pipeline's latency benchmark.
//!
//! The runs: [`verify`](mod@verify) (1:1 verification), [`identify`](mod@identify) (open-set 1:N identification)
//! and [`split_study`](mod@split_study) (decision statistics tuned and tested on disjoint identities), with two
//! studies on the same machinery: [`holdout`] (a calibration made on some identities, checked on others) and
//! [`multi_photo`] (one or two photos per subject, and how a subject's templates are scored); each takes
//! its templates from [`templates`], the face pipeline's output cached per model set-up, and hands back a report
//! with a machine-readable summary.
//! Below them everything is a pure function of templates and scores: [`protocol`] fixes which photos are
//! compared or searched against which, [`metrics`] computes rates from scored pairs and search outcomes, [`plot`]
//! draws them, [`report`] gathers tables and figures with run provenance ([`machine`]) into terminal, JSON,
//! Markdown and HTML renderings. The statistics open-set identification thresholds, the calibration tables and
//! the per-comparison impostor rates live one layer down, in [`crate::score`], because the service reads them too.

mod attempts;
mod calibration;
pub mod error;
pub mod holdout;
pub mod identify;
pub mod impostors;
pub mod index_report;
mod interval;
pub mod machine;
pub mod metrics;
pub mod multi_photo;
mod open_set;
pub mod pipeline_bench;
pub mod plot;
pub mod protocol;
pub mod report;
pub mod run;
pub mod split_study;
pub mod templates;
pub mod verify;

pub use error::{EvalError, OpenSetError};
pub use holdout::{calibration_holdout, CalibrationHoldoutSummary};
pub use identify::{identify, IdentifyOptions, IdentifySummary, SplitPart, StatisticName};
pub use multi_photo::{multi_photo_study, MultiPhotoSummary};
pub use run::{Published, RunOptions};
pub use split_study::{split_study, SplitStudySummary};
pub use templates::{AnalysisProgress, TemplateError, Unwatched};
pub use verify::{verify, VerifyOptions, VerifySummary};
