//! The FPIR calibration table an identification run writes for a recognizer manifest: a `[calibration]` table
//! checked, before it is written, by reading it back through the checks the service applies when it loads one.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::error::EvalError;
use super::metrics::fpir_calibration_table;
use crate::manifest::CalibrationSpec;
use crate::score::decision::DecisionStatistic;
use crate::score::impostors::ImpostorRates;

/// A manifest-ready `[calibration]` table.
#[derive(Serialize)]
struct CalibrationFile<'a> {
    calibration: &'a CalibrationSpec,
}

/// The `[calibration]` table of `statistic` made from the decision scores of a run's non-mated searches at
/// `gallery_size`, with the per-comparison rates where given (`top1`): what `--calibration-out` writes, and what
/// the calibration hold-out study hands to the service's own threshold code.
pub(crate) fn calibration_spec(
    statistic: DecisionStatistic,
    nonmated_scores: &[f32],
    gallery_size: usize,
    comparisons: Option<ImpostorRates>,
    source: String,
) -> Result<CalibrationSpec, EvalError> {
    let table = fpir_calibration_table(nonmated_scores, gallery_size)?;
    Ok(CalibrationSpec {
        statistic: statistic.manifest_name().into(),
        margin_cohort: statistic.margin_cohort(),
        gallery_size: table.gallery_size(),
        searches: table.searches(),
        source,
        scores: table.scores().to_vec(),
        fpir: table.fpir().to_vec(),
        comparisons,
    })
}

/// Writes the FPIR calibration table of `statistic`, made from the decision scores of a run's non-mated searches
/// at `gallery_size`, as a manifest `[calibration]` table, with the per-comparison rates where given (`top1`).
pub(crate) fn write_calibration(
    path: &Path,
    statistic: DecisionStatistic,
    nonmated_scores: &[f32],
    gallery_size: usize,
    comparisons: Option<ImpostorRates>,
    source: String,
) -> Result<(), EvalError> {
    if nonmated_scores.is_empty() {
        return Err(EvalError::NoNonmatedSearch { path: path.to_path_buf() });
    }
    let spec = calibration_spec(statistic, nonmated_scores, gallery_size, comparisons, source)?;
    let toml = toml::to_string(&CalibrationFile { calibration: &spec })
        .map_err(|source| EvalError::SerialiseCalibration { path: path.to_path_buf(), source })?;
    let text = format!("# FPIR calibration of decision statistic {statistic}: paste into the model manifest.\n{toml}");
    // The written numbers must survive the round trip through TOML and the table's invariants.
    #[derive(Deserialize)]
    struct Check {
        calibration: CalibrationSpec,
    }
    let back: Check =
        toml::from_str(&text).map_err(|source| EvalError::ReadBackCalibration { path: path.to_path_buf(), source })?;
    crate::service::Calibration::from_spec(&back.calibration)
        .map_err(|source| EvalError::InvalidCalibration { path: path.to_path_buf(), source: Box::new(source) })?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|source| EvalError::CreateCalibrationFolder { path: parent.to_path_buf(), source })?;
    }
    std::fs::write(path, text).map_err(|source| EvalError::WriteCalibration { path: path.to_path_buf(), source })
}
