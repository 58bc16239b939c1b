//! What every evaluation run shares: where its outputs and cached templates go, how many photos it works on at
//! once, and what a finished run hands back (the report, its files and the machine-readable summary).

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::error::EvalError;
use super::report::{Report, ReportFiles};

/// Options shared by verification and identification runs.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Folder for the report files and figures.
    pub out: PathBuf,
    /// Folder for cached templates (one file per model set-up, keyed by photo sha256).
    pub cache: PathBuf,
    /// Photos analysed (and searches run) in parallel.
    pub threads: usize,
}

/// A finished run: its report (already written to `files`) and its headline numbers, written to `summary_path`.
#[derive(Debug)]
pub struct Published<S> {
    pub report: Report,
    pub files: ReportFiles,
    pub summary: S,
    pub summary_path: PathBuf,
}

impl RunOptions {
    pub(crate) fn thread_pool(&self) -> Result<rayon::ThreadPool, EvalError> {
        rayon::ThreadPoolBuilder::new().num_threads(self.threads.max(1)).build().map_err(EvalError::ThreadPool)
    }

    pub(crate) fn create_out_folder(&self) -> Result<(), EvalError> {
        std::fs::create_dir_all(&self.out)
            .map_err(|source| EvalError::CreateReportFolder { path: self.out.clone(), source })
    }

    pub(crate) fn figure_path(&self, stem: &str, what: &str) -> PathBuf {
        self.out.join(format!("{stem}-{what}.svg"))
    }

    /// Writes `report`'s files, then `summary` as `<stem>.summary.json` beside them.
    pub(crate) fn publish<S: Serialize>(
        &self,
        stem: &str,
        report: Report,
        summary: S,
    ) -> Result<Published<S>, EvalError> {
        let files = report.write_files(&self.out, stem)?;
        let summary_path = write_summary(&self.out, stem, &summary)?;
        Ok(Published { report, files, summary, summary_path })
    }
}

fn write_summary<T: Serialize>(out: &Path, stem: &str, summary: &T) -> Result<PathBuf, EvalError> {
    let path = out.join(format!("{stem}.summary.json"));
    let text = serde_json::to_string_pretty(summary)
        .map_err(|source| EvalError::SerialiseSummary { path: path.clone(), source })?;
    std::fs::write(&path, text).map_err(|source| EvalError::WriteSummary { path: path.clone(), source })?;
    Ok(path)
}
