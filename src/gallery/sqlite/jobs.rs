//! `JobStore` for `SqliteStore`: the `job` and `job_photo` tables. The photo rows are the queue: a claim is an
//! `UPDATE … RETURNING` on the writer, so two runners (threads now, nodes later) never take the same photo.

use rusqlite::types::Type;
use rusqlite::{params, Connection, OptionalExtension, Row, Transaction};

use super::hits::{fetch_hit, insert_hit, validate_new_hit};
use super::queries::{append_audit_in, now_rfc3339};
use super::rows::conversion_failure;
use super::SqliteStore;
use crate::gallery::error::{DatabaseContext, Entity, GalleryError, InvalidKind};
use crate::gallery::hits::{validate_label, Hit, NewHit, Person};
use crate::gallery::jobs::{
    ClaimedPhoto, Job, JobPage, JobQuery, JobState, JobStore, NewJob, PhotoDone, PhotoResult, Refusal, ResultFor,
    ResultOrder, LISTED_REFUSALS, MAX_JOBS_PER_PAGE,
};
use crate::gallery::model::AuditEntry;
use crate::gallery::store::AuditFor;
use crate::gallery::validation;

const SELECT_JOB: &str = "SELECT j.id, j.case_ref, j.state, j.submitted_key, j.submitted_name, j.purpose, j.dir, \
     j.created_at, j.started_at, j.run_started_at, j.finished_at, j.expires_at, j.watchlists, j.threshold_fpir, j.k \
     FROM job j ";

/// Most photos of one job: far above `jobs.max_photos`, a bound on what a store accepts whatever the config says.
const MAX_PHOTOS: usize = 1_000_000;

#[derive(Debug, thiserror::Error)]
#[error("stored job field is not what this build reads: {0}")]
struct BadJobField(String);

fn job_from_row(row: &Row<'_>) -> rusqlite::Result<Job> {
    let state: String = row.get(2)?;
    let state = state.parse::<JobState>().map_err(|_| conversion_failure(2, Type::Text, BadJobField(state)))?;
    let watchlists: Option<String> = row.get(12)?;
    let watchlists = watchlists
        .map(|text| serde_json::from_str::<Vec<String>>(&text).map_err(|_| conversion_failure(12, Type::Text, BadJobField(text))))
        .transpose()?;
    Ok(Job {
        id: row.get(0)?,
        case: row.get(1)?,
        state,
        submitted_by: Person { key_id: row.get(3)?, name: row.get(4)? },
        purpose: row.get(5)?,
        dir: row.get(6)?,
        created_at: row.get(7)?,
        started_at: row.get(8)?,
        run_started_at: row.get(9)?,
        finished_at: row.get(10)?,
        expires_at: row.get(11)?,
        watchlists,
        threshold_fpir: row.get(13)?,
        k: row.get::<_, i64>(14)? as usize,
        total: 0,
        done: 0,
        refused: 0,
        faces: 0,
        hits: 0,
        eta_s: None,
        refusals: Vec::new(),
        done_in_run: 0,
    })
}

/// The job with its counters and first refusals, read from its photos' rows.
fn fetch_job(conn: &Connection, id: i64) -> Result<Job, GalleryError> {
    let job = conn
        .prepare_cached(&format!("{SELECT_JOB} WHERE j.id = ?1"))
        .and_then(|mut statement| statement.query_row([id], job_from_row).optional())
        .context("read job")?
        .ok_or_else(|| GalleryError::not_found(Entity::Job, id))?;
    with_progress(conn, job)
}

fn with_progress(conn: &Connection, mut job: Job) -> Result<Job, GalleryError> {
    let run_started = job.run_started_at.clone().unwrap_or_default();
    let (total, done, refused, faces, hits, in_run): (i64, i64, i64, i64, i64, i64) = conn
        .prepare_cached(
            "SELECT count(*), coalesce(sum(status IN ('searched', 'refused')), 0), coalesce(sum(status = 'refused'), 0), \
             coalesce(sum(faces), 0), coalesce(sum(hits), 0), \
             coalesce(sum(status IN ('searched', 'refused') AND done_at >= ?2), 0) \
             FROM job_photo WHERE job_id = ?1",
        )
        .and_then(|mut statement| {
            statement.query_row(params![job.id, run_started], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?, row.get(5)?))
            })
        })
        .context("count job photos")?;
    (job.total, job.done, job.refused, job.faces, job.hits) =
        (total as usize, done as usize, refused as usize, faces as usize, hits as usize);
    job.done_in_run = if job.run_started_at.is_some() { in_run as usize } else { 0 };
    job.refusals = conn
        .prepare_cached(
            "SELECT name, coalesce(code, ''), coalesce(message, '') FROM job_photo \
             WHERE job_id = ?1 AND status = 'refused' ORDER BY n LIMIT ?2",
        )
        .and_then(|mut statement| {
            statement
                .query_map(params![job.id, LISTED_REFUSALS as i64], |row| {
                    Ok(Refusal { photo: row.get(0)?, code: row.get(1)?, message: row.get(2)? })
                })?
                .collect::<Result<Vec<_>, _>>()
        })
        .context("read job refusals")?;
    Ok(job)
}

fn validate_new_job(new: &NewJob) -> Result<(), GalleryError> {
    validate_label(InvalidKind::CaseRef, "case", &new.case)?;
    validation::validate_actor(&new.submitted_by.key_id)?;
    validation::validate_actor(&new.submitted_by.name)?;
    for name in new.watchlists.iter().flatten() {
        validation::validate_watchlist_name(name)?;
    }
    let invalid = |detail: String| Err(GalleryError::invalid(InvalidKind::JobQuery, detail));
    if new.k == 0 {
        return invalid("k must be at least 1".into());
    }
    if new.threshold_fpir.is_some_and(|f| !(f.is_finite() && f > 0.0 && f <= 1.0)) {
        return invalid("threshold_fpir must lie in (0, 1]".into());
    }
    if new.photos.len() > MAX_PHOTOS {
        return invalid(format!("a job holds at most {MAX_PHOTOS} photos"));
    }
    if new.dir.is_empty() || !new.dir.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return invalid("a job's folder name is letters, digits and dashes".into());
    }
    Ok(())
}

fn set_state(tx: &Transaction<'_>, id: i64, state: JobState) -> Result<(), GalleryError> {
    let finished = state.is_final().then(now_rfc3339);
    tx.prepare_cached("UPDATE job SET state = ?2, finished_at = coalesce(?3, finished_at) WHERE id = ?1")
        .and_then(|mut statement| statement.execute(params![id, state.as_str(), finished]))
        .context("update job state")?;
    Ok(())
}

impl JobStore for SqliteStore {
    fn create_job(&self, new: NewJob, audit: AuditFor<'_, Job>) -> Result<Job, GalleryError> {
        validate_new_job(&new)?;
        let watchlists = new.watchlists.as_ref().map(|names| serde_json::Value::from(names.clone()).to_string());
        self.write(|tx| {
            tx.prepare_cached(
                "INSERT INTO job(case_ref, state, submitted_key, submitted_name, purpose, dir, created_at, expires_at, \
                 watchlists, threshold_fpir, k) VALUES (?1, 'queued', ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )
            .and_then(|mut statement| {
                statement.execute(params![
                    new.case,
                    new.submitted_by.key_id,
                    new.submitted_by.name,
                    new.purpose,
                    new.dir,
                    now_rfc3339(),
                    new.expires_at,
                    watchlists,
                    new.threshold_fpir,
                    new.k as i64,
                ])
            })
            .context("insert job")?;
            let id = tx.last_insert_rowid();
            let now = now_rfc3339();
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO job_photo(job_id, n, name, file, status, code, message, done_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .context("insert job photo")?;
            for (n, photo) in new.photos.iter().enumerate() {
                let (status, code, message, done_at) = match &photo.refusal {
                    Some((code, message)) => ("refused", Some(code), Some(message), Some(&now)),
                    None => ("pending", None, None, None),
                };
                insert
                    .execute(params![id, n as i64, photo.name, photo.file, status, code, message, done_at])
                    .context("insert job photo")?;
            }
            drop(insert);
            // A job whose every photo was refused at intake has nothing left to do.
            let pending: i64 = tx
                .query_row("SELECT count(*) FROM job_photo WHERE job_id = ?1 AND status = 'pending'", [id], |row| row.get(0))
                .context("count pending photos")?;
            if pending == 0 {
                set_state(tx, id, JobState::Done)?;
            }
            let job = fetch_job(tx, id)?;
            append_audit_in(tx, audit(&job))?;
            Ok(job)
        })
    }

    fn get_job(&self, id: i64) -> Result<Job, GalleryError> {
        self.read(|tx| fetch_job(tx, id))
    }

    fn list_jobs(&self, query: &JobQuery) -> Result<JobPage, GalleryError> {
        if query.limit == 0 || query.limit > MAX_JOBS_PER_PAGE {
            return Err(GalleryError::invalid(
                InvalidKind::JobQuery,
                format!("limit must lie between 1 and {MAX_JOBS_PER_PAGE}"),
            ));
        }
        let within = query.within.as_ref().map(|names| serde_json::Value::from(names.clone()).to_string());
        self.read(|tx| {
            let mut statement = tx
                .prepare_cached(&format!(
                    "{SELECT_JOB} WHERE (?1 IS NULL OR j.state = ?1) AND (?2 IS NULL OR j.case_ref = ?2) \
                     AND (?3 IS NULL OR j.id < ?3) \
                     AND (?4 IS NULL OR (j.watchlists IS NOT NULL AND NOT EXISTS (SELECT 1 FROM json_each(j.watchlists) w \
                          WHERE w.value NOT IN (SELECT value FROM json_each(?4))))) \
                     ORDER BY j.id DESC LIMIT ?5"
                ))
                .context("list jobs")?;
            let rows = statement
                .query_map(
                    params![query.state.map(JobState::as_str), query.case, query.after, within, (query.limit + 1) as i64],
                    job_from_row,
                )
                .context("list jobs")?
                .collect::<Result<Vec<_>, _>>()
                .context("read job")?;
            let more = rows.len() > query.limit;
            let mut items = Vec::with_capacity(query.limit);
            for job in rows.into_iter().take(query.limit) {
                items.push(with_progress(tx, job)?);
            }
            let next_after = if more { items.last().map(|job| job.id) } else { None };
            Ok(JobPage { items, next_after })
        })
    }

    fn claim_job_photo(&self) -> Result<Option<ClaimedPhoto>, GalleryError> {
        // Idle workers look every second: a reader answers "no work" without taking the write lock.
        let any: Option<i64> = self.read(|tx| {
            tx.prepare_cached(
                "SELECT 1 FROM job_photo p JOIN job j ON j.id = p.job_id \
                 WHERE p.status = 'pending' AND j.state IN ('queued', 'running') LIMIT 1",
            )
            .and_then(|mut statement| statement.query_row([], |row| row.get(0)).optional())
            .context("look for job work")
        })?;
        if any.is_none() {
            return Ok(None);
        }
        self.write(|tx| {
            let now = now_rfc3339();
            let claimed: Option<(i64, i64, String, Option<String>)> = tx
                .prepare_cached(
                    "UPDATE job_photo SET status = 'claimed', claimed_at = ?1 WHERE (job_id, n) = \
                     (SELECT p.job_id, p.n FROM job_photo p JOIN job j ON j.id = p.job_id \
                      WHERE p.status = 'pending' AND j.state IN ('queued', 'running') ORDER BY p.job_id, p.n LIMIT 1) \
                     RETURNING job_id, n, name, file",
                )
                .and_then(|mut statement| {
                    statement.query_row([&now], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))).optional()
                })
                .context("claim job photo")?;
            let Some((job_id, n, name, file)) = claimed else { return Ok(None) };
            tx.prepare_cached(
                "UPDATE job SET state = 'running', started_at = coalesce(started_at, ?2), \
                 run_started_at = coalesce(run_started_at, ?2) WHERE id = ?1 AND state = 'queued'",
            )
            .and_then(|mut statement| statement.execute(params![job_id, now]))
            .context("start job")?;
            let job = fetch_job(tx, job_id)?;
            Ok(Some(ClaimedPhoto { job, n: n as usize, name, file }))
        })
    }

    fn finish_job_photo(
        &self,
        job: i64,
        n: usize,
        done: PhotoDone,
        hits: Vec<NewHit>,
        audit: AuditEntry,
        result: ResultFor<'_>,
    ) -> Result<Vec<Hit>, GalleryError> {
        for new in &hits {
            validate_new_hit(new)?;
        }
        self.write(|tx| {
            let status: Option<String> = tx
                .prepare_cached("SELECT status FROM job_photo WHERE job_id = ?1 AND n = ?2")
                .and_then(|mut statement| statement.query_row(params![job, n as i64], |row| row.get(0)).optional())
                .context("read job photo")?;
            if status.as_deref() != Some("claimed") {
                return Ok(Vec::new());
            }
            let now = now_rfc3339();
            let search_id = append_audit_in(tx, audit)?;
            let mut recorded = Vec::with_capacity(hits.len());
            for new in &hits {
                let id = insert_hit(tx, new, search_id, &now)?;
                recorded.push(fetch_hit(tx, id)?);
            }
            let (status, code, message) = match &done.refusal {
                Some((code, message)) => ("refused", Some(code), Some(message)),
                None => ("searched", None, None),
            };
            let stored = done.refusal.is_none().then(|| result(&recorded));
            tx.prepare_cached(
                "UPDATE job_photo SET status = ?3, code = ?4, message = ?5, faces = ?6, hits = ?7, best_score = ?8, \
                 result = ?9, done_at = ?10 WHERE job_id = ?1 AND n = ?2",
            )
            .and_then(|mut statement| {
                statement.execute(params![
                    job,
                    n as i64,
                    status,
                    code,
                    message,
                    done.faces as i64,
                    recorded.len() as i64,
                    done.best_score.map(f64::from),
                    stored,
                    now
                ])
            })
            .context("record job photo")?;
            let left: i64 = tx
                .query_row(
                    "SELECT count(*) FROM job_photo WHERE job_id = ?1 AND status IN ('pending', 'claimed')",
                    [job],
                    |row| row.get(0),
                )
                .context("count pending photos")?;
            if left == 0 {
                tx.prepare_cached("UPDATE job SET state = 'done', finished_at = ?2 WHERE id = ?1 AND state = 'running'")
                    .and_then(|mut statement| statement.execute(params![job, now]))
                    .context("finish job")?;
            }
            Ok(recorded)
        })
    }

    fn resume_jobs(&self, claimed_before: &str) -> Result<usize, GalleryError> {
        self.write(|tx| {
            let released = tx
                .execute(
                    "UPDATE job_photo SET status = 'pending', claimed_at = NULL WHERE status = 'claimed' AND claimed_at < ?1",
                    [claimed_before],
                )
                .context("release job photo claims")?;
            tx.execute("UPDATE job SET run_started_at = ?1 WHERE state = 'running'", [now_rfc3339()])
                .context("start job runs")?;
            Ok(released)
        })
    }

    fn cancel_job(&self, id: i64, audit: AuditFor<'_, Job>) -> Result<Job, GalleryError> {
        self.write(|tx| {
            let job = fetch_job(tx, id)?;
            if job.state.is_final() {
                return Ok(job);
            }
            set_state(tx, id, JobState::Cancelled)?;
            let job = fetch_job(tx, id)?;
            append_audit_in(tx, audit(&job))?;
            Ok(job)
        })
    }

    fn job_results(&self, id: i64, order: ResultOrder, offset: usize, limit: usize) -> Result<Vec<PhotoResult>, GalleryError> {
        let order_by = match order {
            ResultOrder::Photo => "n",
            ResultOrder::BestScore => "best_score IS NULL, best_score DESC, n",
        };
        self.read(|tx| {
            fetch_job(tx, id)?;
            let mut statement = tx
                .prepare_cached(&format!(
                    "SELECT n, name, status, code, message, best_score, result FROM job_photo WHERE job_id = ?1 \
                     ORDER BY {order_by} LIMIT ?2 OFFSET ?3"
                ))
                .context("read job results")?;
            let rows = statement
                .query_map(params![id, limit as i64, offset as i64], |row| {
                    Ok(PhotoResult {
                        n: row.get::<_, i64>(0)? as usize,
                        name: row.get(1)?,
                        status: row.get(2)?,
                        code: row.get(3)?,
                        message: row.get(4)?,
                        best_score: row.get::<_, Option<f64>>(5)?.map(|s| s as f32),
                        result: row.get(6)?,
                    })
                })
                .context("read job results")?
                .collect::<Result<Vec<_>, _>>()
                .context("read job result")?;
            Ok(rows)
        })
    }

    fn expired_jobs(&self, as_of: &str) -> Result<Vec<Job>, GalleryError> {
        self.read(|tx| {
            let mut statement = tx
                .prepare_cached(&format!("{SELECT_JOB} WHERE j.expired = 0 AND j.expires_at <= ?1 ORDER BY j.id"))
                .context("list expired jobs")?;
            let jobs = statement
                .query_map([as_of], job_from_row)
                .context("list expired jobs")?
                .collect::<Result<Vec<_>, _>>()
                .context("read job")?;
            Ok(jobs)
        })
    }

    fn expire_job(&self, id: i64, audit: AuditEntry) -> Result<(), GalleryError> {
        self.write(|tx| {
            let job = fetch_job(tx, id)?;
            if !job.state.is_final() {
                set_state(tx, id, JobState::Cancelled)?;
            }
            tx.execute("DELETE FROM hit_probe WHERE hit_id IN (SELECT id FROM hit WHERE job_id = ?1)", [id])
                .context("delete job hits' probe crops")?;
            tx.execute("DELETE FROM job_photo WHERE job_id = ?1", [id]).context("delete job photos")?;
            tx.execute("UPDATE job SET expired = 1 WHERE id = ?1", [id]).context("mark job expired")?;
            append_audit_in(tx, audit)?;
            Ok(())
        })
    }

    fn expire_hit_probes(&self, before: &str, audit: AuditFor<'_, [i64]>) -> Result<Vec<i64>, GalleryError> {
        self.write(|tx| {
            let ids: Vec<i64> = tx
                .prepare_cached(
                    "DELETE FROM hit_probe WHERE hit_id IN \
                     (SELECT id FROM hit WHERE source = 'checkpoint' AND created_at < ?1) RETURNING hit_id",
                )
                .and_then(|mut statement| statement.query_map([before], |row| row.get(0))?.collect::<Result<_, _>>())
                .context("delete checkpoint hits' probe crops")?;
            if !ids.is_empty() {
                append_audit_in(tx, audit(&ids))?;
            }
            Ok(ids)
        })
    }
}
