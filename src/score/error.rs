//! Why a score could not be turned into a rate, or a rate table could not be built or read.

use thiserror::Error;

/// Errors of the scoring layer: bad scores or rates handed in, and stored tables that break their invariants.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ScoreError {
    #[error("input {index}: score {value} is not finite")]
    NonFiniteScore { index: usize, value: f32 },
    #[error("{what}: rate must lie in (0, 1], got {value}")]
    InvalidRate { what: &'static str, value: f64 },
    #[error("gallery size must be at least 1")]
    InvalidGallerySize,
    #[error("fpir target {target} is below the calibration resolution {floor} ({searches} non-mated searches)")]
    BelowCalibrationResolution { target: f64, floor: f64, searches: usize },
    #[error("calibration table: {reason}")]
    InvalidCalibrationTable { reason: &'static str },
    #[error("impostor rates: {reason}")]
    InvalidImpostorRates { reason: &'static str },
    #[error("impostor rates: {found} impostor comparisons are too few for a tail fit (at least {needed})")]
    TooFewImpostorComparisons { found: usize, needed: usize },
}
