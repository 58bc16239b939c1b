//! Investigators' bulk search jobs as the store keeps them: the job with its settings, one row per photo that is
//! both the work queue (a runner claims a photo by moving it from `pending` to `claimed`, so the queue lives in the
//! store and several nodes could share it) and the photo's durable result; with the `JobStore` half of the store
//! contract that holds them.

use serde::{Deserialize, Serialize};

use super::error::{GalleryError, InvalidKind};
use super::hits::{Hit, NewHit, Person};
use super::model::AuditEntry;
use super::store::AuditFor;

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Submitted; no photo searched yet.
    Queued,
    /// Photos are being searched.
    Running,
    /// Every photo was searched or refused.
    Done,
    /// Stopped by an investigator between two photos; the photos done are kept.
    Cancelled,
    /// Stopped by the service (its files went missing).
    Failed,
}

impl JobState {
    pub const ALL: [JobState; 5] = [JobState::Queued, JobState::Running, JobState::Done, JobState::Cancelled, JobState::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Done => "done",
            JobState::Cancelled => "cancelled",
            JobState::Failed => "failed",
        }
    }

    /// Whether the job takes no more work.
    pub fn is_final(self) -> bool {
        matches!(self, JobState::Done | JobState::Cancelled | JobState::Failed)
    }
}

impl std::str::FromStr for JobState {
    type Err = GalleryError;

    fn from_str(text: &str) -> Result<JobState, GalleryError> {
        JobState::ALL.into_iter().find(|s| s.as_str() == text).ok_or_else(|| {
            GalleryError::invalid(InvalidKind::JobQuery, format!("state {text:?}: use queued, running, done, cancelled or failed"))
        })
    }
}

/// A photo of a job that was not searched, and why (`unsafe_path`, `nested_archive`, `not_an_image`, `too_large`,
/// `unreadable`, or the pipeline's code for a photo it refused, e.g. `decode_failed`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Refusal {
    /// The archive member's name or the uploaded file's name.
    pub photo: String,
    pub code: String,
    pub message: String,
}

/// A bulk search job with its progress. Counters are read from the photos' rows, so they are never out of step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Job {
    pub id: i64,
    pub case: String,
    pub state: JobState,
    pub submitted_by: Person,
    /// RFC 3339.
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// When the retention sweep deletes the job's photos, results and hits' probe crops (the hits stay).
    pub expires_at: String,
    /// The watchlists searched; `null`: all of them.
    pub watchlists: Option<Vec<String>>,
    /// A candidate at or below this FPIR is a hit; `null`: each watchlist's own alert FPIR.
    pub threshold_fpir: Option<f64>,
    /// Candidates kept per face.
    pub k: usize,
    /// Photos in the job, refused ones included.
    pub total: usize,
    /// Photos searched or refused.
    pub done: usize,
    pub refused: usize,
    /// Faces found in the photos searched.
    pub faces: usize,
    pub hits: usize,
    /// Seconds until done at the rate of this run (absent before a rate is known, and once the job ended).
    pub eta_s: Option<f64>,
    /// The first 100 refused photos.
    pub refusals: Vec<Refusal>,
    /// Why the investigator submitted it (the `x-facematch-purpose` of the submission); the photos' searches are
    /// audited with it.
    #[serde(skip)]
    pub purpose: Option<String>,
    /// The job's folder under `<data_dir>/jobs/`.
    #[serde(skip)]
    pub dir: String,
    /// When the current run (since the last start of a runner) began, and the photos it finished: the rate of the ETA.
    #[serde(skip)]
    pub run_started_at: Option<String>,
    #[serde(skip)]
    pub done_in_run: usize,
}

/// A photo of a new job: stored at `file` in the job's folder, or refused at intake.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJobPhoto {
    pub name: String,
    pub file: Option<String>,
    /// `(code, message)` of a photo refused at intake.
    pub refusal: Option<(String, String)>,
}

/// A job to record.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    pub case: String,
    pub submitted_by: Person,
    pub purpose: Option<String>,
    pub dir: String,
    pub expires_at: String,
    pub watchlists: Option<Vec<String>>,
    pub threshold_fpir: Option<f64>,
    pub k: usize,
    pub photos: Vec<NewJobPhoto>,
}

/// A photo a runner claimed, with its job.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedPhoto {
    pub job: Job,
    pub n: usize,
    pub name: String,
    pub file: Option<String>,
}

/// How a claimed photo ended.
#[derive(Debug, Clone, PartialEq)]
pub struct PhotoDone {
    /// `(code, message)` when the photo could not be searched.
    pub refusal: Option<(String, String)>,
    pub faces: usize,
    /// The best similarity of any face's first candidate.
    pub best_score: Option<f32>,
}

/// One photo's stored result, in the job's order or by best score.
#[derive(Debug, Clone, PartialEq)]
pub struct PhotoResult {
    pub n: usize,
    pub name: String,
    /// `pending`, `claimed`, `searched` or `refused`.
    pub status: String,
    pub code: Option<String>,
    pub message: Option<String>,
    pub best_score: Option<f32>,
    /// The faces and their candidates as the runner recorded them (JSON), for a searched photo.
    pub result: Option<String>,
}

/// The order of a job's results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResultOrder {
    /// As submitted.
    #[default]
    Photo,
    /// Best first (photos without a candidate last, then in submitted order).
    BestScore,
}

/// Filters of the job list; they combine with AND. Pages by id, newest first: `after` is the last id of the
/// previous page.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobQuery {
    pub state: Option<JobState>,
    pub case: Option<String>,
    pub after: Option<i64>,
    pub limit: usize,
    /// Only jobs whose watchlists all lie within these (a caller's key limits); set by the service.
    pub within: Option<Vec<String>>,
}

/// One page of jobs: `next_after` continues it (absent on the last page).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobPage {
    pub items: Vec<Job>,
    pub next_after: Option<i64>,
}

pub const MAX_JOBS_PER_PAGE: usize = 200;
/// Refusals a job's answer lists.
pub const LISTED_REFUSALS: usize = 100;

/// Makes a finished photo's stored result from the hits its transaction recorded (their ids go into it).
pub type ResultFor<'a> = &'a dyn Fn(&[Hit]) -> String;

/// The jobs half of the store contract. Every change appends its audit entry in the same transaction.
pub trait JobStore: Send + Sync {
    /// Records the job and every photo's row (pending, or refused at intake) with `audit`.
    fn create_job(&self, new: NewJob, audit: AuditFor<'_, Job>) -> Result<Job, GalleryError>;
    /// `job_not_found` when there is none.
    fn get_job(&self, id: i64) -> Result<Job, GalleryError>;
    fn list_jobs(&self, query: &JobQuery) -> Result<JobPage, GalleryError>;
    /// Claims the next pending photo of the oldest queued or running job (the job becomes running); `None` when
    /// there is no work.
    fn claim_job_photo(&self) -> Result<Option<ClaimedPhoto>, GalleryError>;
    /// Records a claimed photo's outcome, its hits (found by the audit entry `audit`) and its result in one
    /// transaction; the job is done when it was its last photo. Returns the hits, none when the photo was no longer
    /// claimed (another runner finished it).
    fn finish_job_photo(
        &self,
        job: i64,
        n: usize,
        done: PhotoDone,
        hits: Vec<NewHit>,
        audit: AuditEntry,
        result: ResultFor<'_>,
    ) -> Result<Vec<Hit>, GalleryError>;
    /// Gives claims older than `claimed_before` (RFC 3339: a runner that died mid-photo) back to the queue, and
    /// starts a new run (for the ETA) of every running job. Returns the claims given back.
    fn resume_jobs(&self, claimed_before: &str) -> Result<usize, GalleryError>;
    /// Stops a queued or running job between photos; a job that already ended is returned unchanged, unaudited.
    fn cancel_job(&self, id: i64, audit: AuditFor<'_, Job>) -> Result<Job, GalleryError>;
    /// `limit` photos' results from `offset`, in `order`.
    fn job_results(&self, id: i64, order: ResultOrder, offset: usize, limit: usize) -> Result<Vec<PhotoResult>, GalleryError>;
    /// Jobs past their `expires_at` at `as_of` whose files and results are still kept, oldest first.
    fn expired_jobs(&self, as_of: &str) -> Result<Vec<Job>, GalleryError>;
    /// Deletes a job's photos' rows and its hits' probe crops (the hits and their decisions stay), stops it if it
    /// still ran, and marks it expired, with `audit`. The caller deletes the job's folder.
    fn expire_job(&self, id: i64, audit: AuditEntry) -> Result<(), GalleryError>;
    /// Deletes the probe crops of checkpoint hits made before `before` (RFC 3339); returns the hits' ids. The
    /// audit entry is appended only when there were any.
    fn expire_hit_probes(&self, before: &str, audit: AuditFor<'_, [i64]>) -> Result<Vec<i64>, GalleryError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_through_their_names() {
        for state in JobState::ALL {
            assert_eq!(state.as_str().parse::<JobState>().unwrap(), state);
            assert_eq!(serde_json::to_value(state).unwrap(), serde_json::json!(state.as_str()));
        }
        assert_eq!("Done".parse::<JobState>().unwrap_err().code(), "invalid_job_query");
        assert!(JobState::Cancelled.is_final() && !JobState::Running.is_final());
    }
}
