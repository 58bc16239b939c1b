//! Scoring: what turns a search's similarity scores into a number people can act on — decision statistics, the
//! FPIR calibration table of non-mated searches, per-comparison impostor rates with their fitted tail, and the
//! rate arithmetic both share.
//!
//! This is the bottom of the scoring stack: the service reads a model's calibration through it, and the evaluation
//! harness (which builds those calibrations from labelled photos) sits beside the service and depends on it, never
//! the reverse.

pub mod decision;
mod error;
pub(crate) mod fpir;
pub mod impostors;
pub mod table;

pub use decision::{DecisionError, DecisionStatistic};
pub use error::ScoreError;
pub use impostors::ImpostorRates;
pub use table::CalibrationTable;
