//! Retention and erasure: watchlist settings that bound how long a subject stays, the sweep that deletes expired
//! subjects (templates, thumbnails and index entries with them, each audited as `expire_subject`), and the answer to
//! "who was on this watchlist on date D", replayed from the audit trail.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::gallery::{AuditQuery, ExpiredSubject, GalleryError, Watchlist, WatchlistPatch};

use super::{Action, Permission, Principal, ServiceError, WatchlistService};

/// Audit entries read per page while replaying the trail.
const REPLAY_PAGE: usize = 1_000;

/// A subject on a watchlist at a given time, as the audit trail recorded it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Membership {
    pub subject_id: i64,
    /// When the subject joined the watchlist (created there or moved there), RFC 3339.
    pub since: String,
}

/// The subjects on one watchlist at one time.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MembershipReport {
    pub watchlist: String,
    /// The time asked about (RFC 3339).
    pub on: String,
    pub subjects: Vec<Membership>,
    /// Audit entries replayed.
    pub entries_read: usize,
}

impl WatchlistService {
    /// Changes a watchlist's description, alert FPIR or retention period (audited as `update_watchlist`).
    pub fn update_watchlist(&self, name: &str, patch: WatchlistPatch, caller: &Principal) -> Result<Watchlist, ServiceError> {
        caller.require(Permission::ManageWatchlists)?;
        caller.require_watchlist(name)?;
        let fields: Vec<&str> = [
            ("description", patch.description.is_some()),
            ("alert_fpir", patch.alert_fpir.is_some()),
            ("retention_days", patch.retention_days.is_some()),
        ]
        .into_iter()
        .filter_map(|(field, set)| set.then_some(field))
        .collect();
        Ok(self.store.update_watchlist(name, patch, &|w: &Watchlist| {
            let details = json!({ "fields": fields, "alert_fpir": w.alert_fpir, "retention_days": w.retention_days });
            caller.entry(Action::UpdateWatchlist, Some(format!("watchlist/{}", w.name)), details)
        })?)
    }

    /// Deletes every subject whose watchlist's retention ran out at `as_of`, with its templates, thumbnails and
    /// index entries, one audited `expire_subject` change each. Returns what was deleted. The server runs this at
    /// start and every `gallery.retention_sweep_secs`; `facematch retention sweep` runs it by hand.
    pub fn expire_subjects(&self, as_of: SystemTime, caller: &Principal) -> Result<Vec<ExpiredSubject>, ServiceError> {
        caller.require(Permission::ManageWatchlists)?;
        let as_of = humantime::format_rfc3339_millis(as_of).to_string();
        let mut expired = Vec::new();
        for subject in self.store.expired_subjects(&as_of)? {
            if !caller.sees(&subject.watchlist) {
                continue;
            }
            let _guard = self.write_lock.lock();
            let removed = match self.store.delete_subject(subject.subject_id, &|templates: &[i64]| {
                let details = json!({
                    "watchlist": subject.watchlist,
                    "updated_at": subject.updated_at,
                    "retention_days": subject.retention_days,
                    "templates": templates,
                });
                caller.entry(Action::ExpireSubject, Some(format!("subject/{}", subject.subject_id)), details)
            }) {
                Ok(removed) => removed,
                // Deleted by someone else since the query: nothing left to expire.
                Err(GalleryError::NotFound { .. }) => continue,
                Err(e) => return Err(e.into()),
            };
            let index = self.engine().index.clone();
            for key in &removed {
                index.remove(*key as u64)?;
            }
            expired.push(subject);
        }
        if !expired.is_empty() {
            let _guard = self.write_lock.lock();
            self.consolidate_when_due()?;
        }
        Ok(expired)
    }

    /// Deletes the photos, per-photo results and hits' probe crops of every job past its `expires_at` at `as_of`
    /// (the job's row, its hits and their decisions stay), one audited `expire_job` each; returns the jobs' ids.
    /// Swept with the subjects.
    pub fn expire_jobs(&self, as_of: SystemTime, caller: &Principal) -> Result<Vec<i64>, ServiceError> {
        caller.require(Permission::ManageWatchlists)?;
        let as_of = humantime::format_rfc3339_millis(as_of).to_string();
        let mut expired = Vec::new();
        for job in self.store.expired_jobs(&as_of)? {
            let details = json!({ "case": job.case, "expires_at": job.expires_at, "photos": job.total, "hits": job.hits });
            self.store.expire_job(job.id, caller.entry(Action::ExpireJob, Some(format!("job/{}", job.id)), details))?;
            // The rows no longer name the files: a folder left behind by a failed removal holds nothing reachable.
            let folder = self.jobs_dir().join(&job.dir);
            if let Err(e) = std::fs::remove_dir_all(&folder) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(job = job.id, error = %e, "expired job's photo folder not removed");
                }
            }
            expired.push(job.id);
        }
        Ok(expired)
    }

    /// Deletes the probe crops of checkpoint hits older than `hits.probe_retention_days` at `as_of` (audited as one
    /// `expire_hit_probes` entry with their ids); the hits and their decisions stay. Returns the hits' ids.
    pub fn expire_hit_probes(&self, as_of: SystemTime, caller: &Principal) -> Result<Vec<i64>, ServiceError> {
        caller.require(Permission::ManageWatchlists)?;
        let keep = std::time::Duration::from_secs(u64::from(self.hits.probe_retention_days) * 86_400);
        let before = humantime::format_rfc3339_millis(as_of.checked_sub(keep).unwrap_or(SystemTime::UNIX_EPOCH)).to_string();
        Ok(self.store.expire_hit_probes(&before, &|ids: &[i64]| {
            let first: Vec<i64> = ids.iter().take(100).copied().collect();
            let details = json!({ "before": before, "hits": ids.len(), "first_ids": first });
            caller.entry(Action::ExpireHitProbes, None, details)
        })?)
    }

    /// Who was on `watchlist` at `on`, replayed from the audit trail: subjects created on it or moved to it, less
    /// those deleted, expired or moved away, up to that time. The trail is the record (the store keeps only the
    /// present), so the answer holds for subjects long deleted. Auditors only.
    pub fn membership_on(&self, watchlist: &str, on: SystemTime, caller: &Principal) -> Result<MembershipReport, ServiceError> {
        caller.require(Permission::ReadAudit)?;
        let on_text = humantime::format_rfc3339_millis(on).to_string();
        let mut members: BTreeMap<i64, String> = BTreeMap::new();
        let mut entries_read = 0;
        let mut query =
            AuditQuery { until: Some(on_text.clone()), oldest_first: true, ..AuditQuery::page(1, REPLAY_PAGE) };
        loop {
            let records = self.store.list_audit(&query)?.items;
            if records.is_empty() {
                break;
            }
            query.page += 1;
            for record in records {
                entries_read += 1;
                let Some(id) = record.entry.target.as_deref().and_then(subject_of_target) else { continue };
                let details = &record.entry.details;
                let now_on = details["watchlist"].as_str() == Some(watchlist);
                match record.entry.action.as_str() {
                    "create_subject" if now_on => {
                        members.insert(id, record.at.clone());
                    }
                    "update_subject" => {
                        let was_on = details["from_watchlist"].as_str() == Some(watchlist);
                        if now_on && !was_on {
                            members.insert(id, record.at.clone());
                        } else if was_on && !now_on {
                            members.remove(&id);
                        }
                    }
                    "delete_subject" | "expire_subject" => {
                        members.remove(&id);
                    }
                    _ => {}
                }
            }
        }
        let subjects = members.into_iter().map(|(subject_id, since)| Membership { subject_id, since }).collect();
        Ok(MembershipReport { watchlist: watchlist.to_owned(), on: on_text, subjects, entries_read })
    }
}

/// `subject/17` → 17; `subject/17/faces/3` is about a template, not membership.
fn subject_of_target(target: &str) -> Option<i64> {
    target.strip_prefix("subject/")?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_whole_subject_targets_name_a_member() {
        assert_eq!(subject_of_target("subject/17"), Some(17));
        assert_eq!(subject_of_target("subject/17/faces/3"), None);
        assert_eq!(subject_of_target("watchlist/wanted"), None);
    }
}
