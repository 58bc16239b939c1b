//! Bulk enrollment of a folder of `<subject>/<photo>`: subjects are found or created by folder name (their
//! external reference), photos already enrolled are skipped (so an interrupted run resumes), photos run in
//! parallel on the pipeline's sessions.

use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;

use crate::gallery::NewSubject;

use super::{EnrollRequest, FaceChoice, Principal, ServiceError, WatchlistService};

/// What became of one photo of a folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PhotoStatus {
    Enrolled,
    /// Already enrolled for this subject (an interrupted run resumed).
    Skipped,
    /// Not enrolled: `code` and `message` say why.
    Refused,
}

/// What happened to one photo.
#[derive(Debug, Clone, Serialize)]
pub struct PhotoOutcome {
    pub photo: PathBuf,
    pub subject: String,
    pub status: PhotoStatus,
    pub code: Option<&'static str>,
    pub message: Option<String>,
}

/// Totals of a bulk enrollment.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BulkSummary {
    pub subjects: usize,
    pub photos: usize,
    pub enrolled: usize,
    pub skipped: usize,
    pub refused: usize,
}

/// The photos of a `<subject>/<photo>` folder, sorted: (subject folder name, photo path).
pub fn list_folder(dir: &Path) -> Result<Vec<(String, PathBuf)>, ServiceError> {
    let read = |p: &Path| std::fs::read_dir(p).map_err(|source| ServiceError::DataDir { path: p.to_path_buf(), source });
    let mut out = Vec::new();
    for entry in read(dir)? {
        let entry = entry.map_err(|source| ServiceError::DataDir { path: dir.to_path_buf(), source })?;
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        let subject = entry.file_name().to_string_lossy().to_string();
        for photo in read(&path)? {
            let photo = photo.map_err(|source| ServiceError::DataDir { path: path.clone(), source })?.path();
            let ext = photo.extension().map(|e| e.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
            if ["jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"].contains(&ext.as_str()) {
                out.push((subject.clone(), photo));
            }
        }
    }
    out.sort();
    Ok(out)
}

impl WatchlistService {
    /// Enrolls a folder into a watchlist (created when missing). `on_photo` sees every outcome as it happens.
    pub fn enroll_folder(
        &self,
        watchlist: &str,
        dir: &Path,
        caller: &Principal,
        on_photo: &(dyn Fn(&PhotoOutcome) + Sync),
    ) -> Result<BulkSummary, ServiceError> {
        self.ensure_watchlist(watchlist, format!("enrolled from {}", dir.display()), caller)?;
        let photos = list_folder(dir)?;
        let mut subjects = std::collections::BTreeMap::new();
        for (name, _) in &photos {
            if subjects.contains_key(name) {
                continue;
            }
            let new = NewSubject {
                watchlist: watchlist.to_string(),
                external_ref: Some(name.clone()),
                display_name: name.clone(),
                metadata: serde_json::json!({ "enrolled_from": dir.display().to_string() }),
            };
            let subject = self.ensure_subject(new, caller)?;
            subjects.insert(name.clone(), subject.id);
        }
        let outcomes: Vec<PhotoOutcome> = photos
            .par_iter()
            .map(|(name, path)| {
                let outcome = self.enroll_file(subjects[name], name, path, caller);
                if outcome.status == PhotoStatus::Refused {
                    // Logged whether or not a terminal shows the progress: an operator must learn which photo
                    // was refused and why.
                    tracing::warn!(
                        photo = %outcome.photo.display(),
                        subject = %outcome.subject,
                        code = outcome.code.unwrap_or("unknown"),
                        message = outcome.message.as_deref().unwrap_or(""),
                        "photo refused"
                    );
                }
                on_photo(&outcome);
                outcome
            })
            .collect();
        let count = |status: PhotoStatus| outcomes.iter().filter(|o| o.status == status).count();
        Ok(BulkSummary {
            subjects: subjects.len(),
            photos: outcomes.len(),
            enrolled: count(PhotoStatus::Enrolled),
            skipped: count(PhotoStatus::Skipped),
            refused: count(PhotoStatus::Refused),
        })
    }

    fn enroll_file(&self, subject_id: i64, subject: &str, path: &Path, caller: &Principal) -> PhotoOutcome {
        let outcome = |status, code, message| PhotoOutcome { photo: path.to_path_buf(), subject: subject.to_string(), status, code, message };
        let photo = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) => return outcome(PhotoStatus::Refused, Some("io_error"), Some(e.to_string())),
        };
        // Folder photos are labelled with their subject: in a group photo that is the most central large face.
        match self.enroll(&EnrollRequest { subject_id, photo, face: FaceChoice::Subject }, caller) {
            Ok(_) => outcome(PhotoStatus::Enrolled, None, None),
            Err(ServiceError::DuplicatePhoto { .. }) => outcome(PhotoStatus::Skipped, Some("duplicate_photo"), None),
            Err(e) => outcome(PhotoStatus::Refused, Some(e.code()), Some(e.to_string())),
        }
    }
}
