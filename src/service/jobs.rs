//! Investigators' bulk search jobs: submitting a job (its photos already in its folder), reading and cancelling
//! jobs, exporting their results, and searching one queued photo — the runner's step — through the same analysis
//! and candidate ranking as an investigation-mode search, with the candidates past the job's threshold recorded as
//! hits. Every operation checks the caller's role and watchlists here, in the core.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::gallery::hits::validate_label;
use crate::gallery::{
    ClaimedPhoto, HitSource, InvalidKind, Job, JobPage, JobQuery, NewJob, PhotoDone, PhotoResult, ResultOrder,
};
use crate::pipeline::AnalyzeOptions;

use super::job_intake::{self, IntakeLimits, StagedPart};
use super::search::{FaceSearch, SearchMode, SearchRequest};
use super::{Action, HitContext, Permission, Principal, Role, ServiceError, WatchlistService};

/// Most candidates a job keeps per face.
pub const MAX_JOB_K: usize = 50;

/// Bulk search jobs (`[jobs]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobsConfig {
    /// Background threads searching queued photos, one photo at a time each (default 1). They run at a lower OS
    /// priority and step aside while checkpoint searches wait for an analysis thread, so a job never delays a
    /// checkpoint; more workers finish jobs sooner on an idle server.
    pub workers: usize,
    /// Days a job's photos, per-photo results and its hits' probe crops are kept when the submission does not say
    /// (default 90); the hits and their decisions stay.
    pub retention_days: u32,
    /// Photos one job may hold, refused ones included (default 10,000).
    pub max_photos: usize,
    /// Bytes of photos one job may hold, after unpacking (default 4 GiB).
    pub max_bytes: u64,
    /// How much larger than its compressed size an archive member may expand (default 100): a zip bomb is cut off
    /// as `too_large` at that, counting the bytes actually written.
    pub max_compression_ratio: u64,
    /// Seconds a job's upload may take to arrive whole (default 3600; other requests have `server.body_timeout_s`).
    /// Its body limit is `max_bytes`, not `server.max_body_bytes`.
    pub upload_timeout_s: u64,
    /// Milliseconds each worker rests between two photos, and the model migration's worker between two batches of
    /// faces (default 0). A site that wants background work to take a fixed share of a busy server can set it;
    /// tests use it to stop a server mid-job or mid-migration.
    pub pause_ms: u64,
    /// Seconds after which a photo claimed by a worker that died (a crash, a node gone) goes back to the queue at
    /// the next start (default 600). A clean stop never leaves a claim: a worker finishes its photo first.
    pub claim_lease_s: u64,
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            workers: 1,
            retention_days: 90,
            max_photos: 10_000,
            max_bytes: 4 << 30,
            max_compression_ratio: 100,
            upload_timeout_s: 3600,
            pause_ms: 0,
            claim_lease_s: 600,
        }
    }
}

/// The settings of a job as submitted.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobRequest {
    pub case: String,
    /// Watchlists to search (each must be the caller's); `None`: all of the caller's.
    pub watchlists: Option<Vec<String>>,
    /// A candidate at or below this FPIR is a hit; `None`: each watchlist's alert FPIR.
    pub threshold_fpir: Option<f64>,
    /// Candidates kept per face (default 5, at most 50).
    pub k: Option<usize>,
    /// Days until the job's photos and results are deleted (default `jobs.retention_days`).
    pub retention_days: Option<u32>,
}

/// Folder names under `<data_dir>/jobs/`: random, so that a name says nothing and two nodes never collide.
fn folder_name() -> Result<String, ServiceError> {
    let mut bytes = [0u8; 12];
    getrandom::fill(&mut bytes).map_err(|e| ServiceError::Randomness(e.to_string()))?;
    Ok(hex::encode(bytes))
}

fn job_target(id: i64) -> Option<String> {
    Some(format!("job/{id}"))
}

fn invalid(detail: impl Into<String>) -> ServiceError {
    ServiceError::Gallery(crate::gallery::GalleryError::invalid(InvalidKind::JobQuery, detail))
}

impl WatchlistService {
    /// Where jobs' folders are.
    pub fn jobs_dir(&self) -> PathBuf {
        self.config.data_dir.join("jobs")
    }

    pub fn jobs_config(&self) -> &JobsConfig {
        &self.jobs
    }

    /// A new, empty folder for a job's uploads, for a caller who may submit one: checked before a byte is stored.
    pub fn new_job_folder(&self, caller: &Principal) -> Result<(String, PathBuf), ServiceError> {
        caller.require(Permission::SubmitJobs)?;
        let name = folder_name()?;
        let path = self.jobs_dir().join(&name);
        std::fs::create_dir_all(&path).map_err(|source| ServiceError::JobFiles { context: "create the job's folder", source })?;
        Ok((name, path))
    }

    /// Records a job whose uploads lie in `folder` (made by [`Self::new_job_folder`]): archives are unpacked, every
    /// photo checked, and the job queued (audited as `submit_job`). The folder is removed when the job is refused.
    pub fn submit_job(&self, request: JobRequest, folder: &str, parts: Vec<StagedPart>, caller: &Principal) -> Result<Job, ServiceError> {
        let path = self.jobs_dir().join(folder);
        let submitted = self.submit_in(request, folder, parts, caller);
        if submitted.is_err() {
            let _ = std::fs::remove_dir_all(&path);
        }
        let job = submitted?;
        self.job_signal.notify();
        Ok(job)
    }

    fn submit_in(&self, request: JobRequest, folder: &str, parts: Vec<StagedPart>, caller: &Principal) -> Result<Job, ServiceError> {
        caller.require(Permission::SubmitJobs)?;
        validate_label(InvalidKind::CaseRef, "case", &request.case)?;
        let watchlists = caller.search_scope(request.watchlists.as_deref())?;
        for name in watchlists.iter().flatten() {
            self.store.get_watchlist(name)?;
        }
        let k = request.k.unwrap_or(5);
        if !(1..=MAX_JOB_K.min(self.config.max_k)).contains(&k) {
            return Err(invalid(format!("k must lie between 1 and {MAX_JOB_K}")));
        }
        if request.threshold_fpir.is_some_and(|f| !(f.is_finite() && f > 0.0 && f <= 1.0)) {
            return Err(invalid("threshold_fpir must lie in (0, 1]"));
        }
        let days = request.retention_days.unwrap_or(self.jobs.retention_days);
        if !(1..=3650).contains(&days) {
            return Err(invalid("retention_days must lie between 1 and 3650"));
        }
        let limits = IntakeLimits {
            max_photo_bytes: self.pipeline().limits().max_bytes as u64,
            max_compression_ratio: self.jobs.max_compression_ratio.max(1),
            max_photos: self.jobs.max_photos,
            max_bytes: self.jobs.max_bytes,
        };
        let archives = parts.iter().filter(|p| matches!(p, StagedPart::Archive { .. })).count();
        let photos = job_intake::expand(&self.jobs_dir().join(folder), parts, limits)?;
        if photos.is_empty() {
            return Err(ServiceError::JobEmpty);
        }
        let expires = SystemTime::now() + Duration::from_secs(u64::from(days) * 86_400);
        let purpose = caller.purpose.clone().or_else(|| Some(format!("case {}", request.case)));
        let new = NewJob {
            case: request.case.clone(),
            submitted_by: caller.person(),
            purpose,
            dir: folder.to_owned(),
            expires_at: humantime::format_rfc3339_millis(expires).to_string(),
            watchlists,
            threshold_fpir: request.threshold_fpir,
            k,
            photos,
        };
        Ok(self.store.create_job(new, &|job: &Job| {
            let details = json!({
                "case": job.case,
                "photos": job.total,
                "refused": job.refused,
                "archives": archives,
                "watchlists": job.watchlists,
                "threshold_fpir": job.threshold_fpir,
                "k": job.k,
                "expires_at": job.expires_at,
            });
            caller.entry(Action::SubmitJob, job_target(job.id), details)
        })?)
    }

    /// One job with its progress.
    pub fn get_job(&self, id: i64, caller: &Principal) -> Result<Job, ServiceError> {
        caller.require(Permission::ReadJobs)?;
        self.job_for(id, caller)
    }

    /// The jobs the caller may see, newest first. Investigators share jobs: every investigator whose key covers a
    /// job's watchlists sees it, as an examiner team shares its cases.
    pub fn list_jobs(&self, query: JobQuery, caller: &Principal) -> Result<JobPage, ServiceError> {
        caller.require(Permission::ReadJobs)?;
        if let Some(case) = &query.case {
            validate_label(InvalidKind::CaseRef, "case", case)?;
        }
        let mut page = self.store.list_jobs(&JobQuery { within: caller.watchlists.clone(), ..query })?;
        for job in &mut page.items {
            with_eta(job);
        }
        Ok(page)
    }

    /// Stops a job between two photos (audited as `cancel_job`); the photos done are kept. A job that already
    /// ended is answered as it is.
    pub fn cancel_job(&self, id: i64, caller: &Principal) -> Result<Job, ServiceError> {
        caller.require(Permission::SubmitJobs)?;
        self.job_for(id, caller)?;
        Ok(self.store.cancel_job(id, &|job: &Job| {
            let details = json!({ "case": job.case, "done": job.done, "total": job.total, "hits": job.hits });
            caller.entry(Action::CancelJob, job_target(id), details)
        })?)
    }

    /// The start of an export of a job's results: checked and audited (`export_job_results`) once, before the
    /// pages are read with [`Self::job_results`].
    pub fn export_job_results(&self, id: i64, format: &str, caller: &Principal) -> Result<Job, ServiceError> {
        caller.require(Permission::ReadJobs)?;
        let job = self.job_for(id, caller)?;
        let details = json!({ "case": job.case, "format": format, "photos": job.total, "done": job.done, "hits": job.hits });
        self.audit_use(caller.entry(Action::ExportJobResults, job_target(id), details))?;
        Ok(job)
    }

    /// A page of a job's per-photo results.
    pub fn job_results(&self, id: i64, order: ResultOrder, offset: usize, limit: usize, caller: &Principal) -> Result<Vec<PhotoResult>, ServiceError> {
        caller.require(Permission::ReadJobs)?;
        self.job_for(id, caller)?;
        Ok(self.store.job_results(id, order, offset, limit)?)
    }

    /// The job, if the caller's key covers every watchlist it searches (checked before anything about it is
    /// disclosed); a job of all watchlists is for unlimited keys only.
    fn job_for(&self, id: i64, caller: &Principal) -> Result<Job, ServiceError> {
        let mut job = self.store.get_job(id)?;
        if caller.watchlists.is_some() {
            match &job.watchlists {
                None => return Err(ServiceError::WatchlistForbidden { watchlist: "(all watchlists)".into() }),
                Some(names) => {
                    for name in names {
                        caller.require_watchlist(name)?;
                    }
                }
            }
        }
        with_eta(&mut job);
        Ok(job)
    }

    /// The runner's step: claims the next queued photo and searches it. `Ok(false)` when there was no work.
    pub fn run_next_job_photo(&self) -> Result<bool, ServiceError> {
        let Some(claimed) = self.store.claim_job_photo()? else { return Ok(false) };
        self.search_job_photo(claimed)?;
        Ok(true)
    }

    /// Searches one claimed photo as its submitter would in investigation mode, keeps the top k per face, records
    /// the candidates past the job's threshold as hits, and stores the photo's result — hits, result and the
    /// search's audit entry in one transaction. A photo that cannot be searched is recorded as refused.
    fn search_job_photo(&self, claimed: ClaimedPhoto) -> Result<(), ServiceError> {
        let job = &claimed.job;
        // The submitter, as the audit trail and the hits name them; their key's scope was fixed at submission.
        let caller = Principal::key_holder(&job.submitted_by.key_id, &job.submitted_by.name, Role::Investigator, job.watchlists.clone(), job.purpose.clone());
        let request = SearchRequest {
            mode: SearchMode::Investigation,
            k: Some(job.k),
            watchlists: job.watchlists.clone(),
            case: Some(job.case.clone()),
            ..SearchRequest::default()
        };
        let details = |faces: &[FaceSearch], sha: Option<&str>, hits: usize| {
            let mut details = super::audit_details::search_details(&request, faces, sha);
            details["job"] = json!(job.id);
            details["photo"] = json!(claimed.n);
            details["hits"] = json!(hits);
            details
        };
        let engine = self.engine();
        let searched = claimed
            .file
            .as_ref()
            .ok_or_else(|| ServiceError::InvalidRequest("the photo was refused at intake".into()))
            .and_then(|file| {
                std::fs::read(self.jobs_dir().join(&job.dir).join(file))
                    .map_err(|source| ServiceError::JobFiles { context: "read a job's photo", source })
            })
            .and_then(|bytes| {
                let options = AnalyzeOptions { min_face_px: None, max_faces: Some(self.config.max_faces_per_photo.max(1)) };
                Ok(engine.pipeline.analyze_bytes(&bytes, options)?)
            })
            .and_then(|analysis| Ok((self.face_candidates(engine.clone(), &analysis, &request)?, analysis)));
        let (faces, analysis) = match searched {
            Ok(found) => found,
            Err(e) => {
                let done = PhotoDone { refusal: Some((e.code().to_owned(), e.to_string())), faces: 0, best_score: None };
                let entry = caller.entry(Action::Search, job_target(job.id), details(&[], None, 0));
                self.store.finish_job_photo(job.id, claimed.n, done, Vec::new(), entry, &|_| String::new())?;
                return Ok(());
            }
        };
        let context = HitContext { checkpoint: None, case: Some(job.case.clone()), job: Some(job.id) };
        let mut hitting = Vec::new();
        let mut new_hits = Vec::new();
        for (f, face) in faces.iter().enumerate() {
            let mut crop = None;
            for (c, candidate) in face.candidates.iter().enumerate() {
                let hit = match job.threshold_fpir {
                    Some(threshold) => candidate.fpir.is_some_and(|fpir| fpir <= threshold),
                    None => candidate.alert,
                };
                if !hit {
                    continue;
                }
                if crop.is_none() {
                    crop = Some(super::enroll::face_jpeg(&analysis.faces[f].aligned.image)?);
                }
                hitting.push((f, c));
                new_hits.push(Self::new_hit(HitSource::Job, f, candidate, crop.clone(), &context, &caller));
            }
        }
        let best_score = faces.iter().filter_map(|f| f.candidates.first()).map(|c| c.similarity).reduce(f32::max);
        let done = PhotoDone { refusal: None, faces: faces.len(), best_score };
        let entry = caller.entry(Action::Search, job_target(job.id), details(&faces, Some(&analysis.photo_sha256), new_hits.len()));
        self.store.finish_job_photo(job.id, claimed.n, done, new_hits, entry, &|hits| {
            let mut line = result_line(&claimed.name, &faces, best_score);
            for (&(f, c), hit) in hitting.iter().zip(hits) {
                line["faces"][f]["candidates"][c]["hit_id"] = json!(hit.id);
            }
            line.to_string()
        })?;
        Ok(())
    }
}

/// A searched photo's line of the results: its faces with box and quality, and their candidates.
fn result_line(name: &str, faces: &[FaceSearch], best_score: Option<f32>) -> serde_json::Value {
    let faces: Vec<serde_json::Value> = faces
        .iter()
        .enumerate()
        .map(|(f, face)| {
            let summary = face.face.as_ref();
            json!({
                "face": f,
                "box": summary.map(|s| s.bbox),
                "quality": summary.map(|s| s.quality),
                "candidates": face.candidates.iter().map(|c| json!({
                    "rank": c.rank,
                    "watchlist": c.watchlist,
                    "subject_id": c.subject_id,
                    "display_name": c.display_name,
                    "template_id": c.template_id,
                    "similarity": c.similarity,
                    "fpir": c.fpir,
                    "hit_id": null,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({ "photo": name, "status": "searched", "best_score": best_score, "faces": faces })
}

/// The line of a photo's result as exported: the stored one of a searched photo, or its status and reason.
pub fn photo_line(result: &PhotoResult) -> serde_json::Value {
    match result.result.as_deref().and_then(|text| serde_json::from_str(text).ok()) {
        Some(line) => line,
        None => json!({
            "photo": result.name,
            "status": if result.status == "claimed" { "pending" } else { result.status.as_str() },
            "code": result.code,
            "message": result.message,
            "best_score": null,
            "faces": [],
        }),
    }
}

/// Seconds left at the rate of this run: photos finished since the run began, over the time it has run.
fn with_eta(job: &mut Job) {
    job.eta_s = None;
    if job.state.is_final() || job.done_in_run == 0 {
        return;
    }
    let Some(started) = job.run_started_at.as_deref().and_then(|t| humantime::parse_rfc3339_weak(t).ok()) else { return };
    let elapsed = SystemTime::now().duration_since(started).unwrap_or_default().as_secs_f64();
    let left = job.total.saturating_sub(job.done) as f64;
    job.eta_s = Some(left * elapsed / job.done_in_run as f64);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gallery::{JobState, Person};

    fn job(state: JobState, total: usize, done: usize, done_in_run: usize, run_started_at: Option<String>) -> Job {
        Job {
            id: 1,
            case: "2026/300".into(),
            state,
            submitted_by: Person { key_id: "0123456789ab".into(), name: "examiner".into() },
            created_at: String::new(),
            started_at: None,
            finished_at: None,
            expires_at: String::new(),
            watchlists: None,
            threshold_fpir: None,
            k: 5,
            total,
            done,
            refused: 0,
            faces: 0,
            hits: 0,
            eta_s: Some(1.0),
            refusals: Vec::new(),
            purpose: None,
            dir: "d".into(),
            run_started_at,
            done_in_run,
        }
    }

    #[test]
    fn the_eta_comes_from_the_rate_of_this_run_only() {
        let ten_seconds_ago = humantime::format_rfc3339_millis(SystemTime::now() - Duration::from_secs(10)).to_string();
        // 40 done before this run, 5 in its 10 s: 55 left at 2 s each.
        let mut running = job(JobState::Running, 100, 45, 5, Some(ten_seconds_ago.clone()));
        with_eta(&mut running);
        let eta = running.eta_s.expect("a rate is known");
        assert!((eta - 110.0).abs() < 5.0, "{eta}");
        for mut unknown in [job(JobState::Running, 100, 40, 0, Some(ten_seconds_ago.clone())), job(JobState::Done, 100, 100, 5, Some(ten_seconds_ago))] {
            with_eta(&mut unknown);
            assert_eq!(unknown.eta_s, None);
        }
    }

    #[test]
    fn a_photo_without_a_stored_result_is_exported_with_its_status_and_reason() {
        let refused = PhotoResult {
            n: 3,
            name: "notes.txt".into(),
            status: "refused".into(),
            code: Some("not_an_image".into()),
            message: Some("text".into()),
            best_score: None,
            result: None,
        };
        let line = photo_line(&refused);
        assert_eq!((line["photo"].as_str(), line["code"].as_str(), line["faces"].clone()), (Some("notes.txt"), Some("not_an_image"), json!([])));
        let claimed = PhotoResult { status: "claimed".into(), code: None, message: None, ..refused.clone() };
        assert_eq!(photo_line(&claimed)["status"], "pending");
        let searched = PhotoResult { status: "searched".into(), result: Some(r#"{"photo":"a.jpg","faces":[]}"#.into()), ..refused };
        assert_eq!(photo_line(&searched)["photo"], "a.jpg");
    }
}
