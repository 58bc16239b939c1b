//! The audit trail as its readers see it: filtered listings, and verification of the hash chain against the audit
//! anchor kept outside the database; and, at start, the checks that refuse a store whose trail went backwards.

use std::sync::Arc;

use serde::Serialize;
use serde_json::json;

use crate::gallery::{AuditAnchor, AuditProblem, AuditQuery, AuditRecord, GalleryError, GalleryStore, Page};

use super::{Action, Permission, Principal, ServiceError, WatchlistService};

/// Entries read per query while walking the whole trail.
const WALK_PAGE: usize = 10_000;

/// The verdict of `facematch audit verify` and `GET /v1/audit/verify`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AuditVerdict {
    pub status: AuditStatus,
    /// Entries in the database.
    pub rows_checked: usize,
    /// Newest entry the anchor vouches for.
    pub anchored_through: i64,
    /// Entries newer than that (being anchored, or left by a crash or someone else: see `status`).
    pub unanchored_tail: Vec<i64>,
    /// Every mismatch found, first of each kind first.
    pub problems: Vec<AuditProblem>,
    /// Starts that found unanchored entries and adopted them (`adopt_unanchored` entries): a crash between a
    /// commit and its anchor line, or entries written behind the service's back while it was stopped. For review.
    pub adoptions: Vec<Adoption>,
}

/// One start's adoption of unanchored entries.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Adoption {
    /// The `adopt_unanchored` entry that records it.
    pub entry: i64,
    pub at: String,
    pub from_row: i64,
    pub to_row: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuditStatus {
    /// Chain and anchor agree on every entry.
    Intact,
    /// No mismatch, but the newest entries are not anchored (yet, if the service is writing).
    Unanchored,
    /// No mismatch, but a start adopted unanchored entries: review them (`adoptions`).
    Review,
    /// At least one problem: the trail was changed outside the service.
    Broken,
}

impl WatchlistService {
    /// Entries the query selects, newest first unless asked otherwise. Auditors only.
    pub fn list_audit(&self, query: &AuditQuery, caller: &Principal) -> Result<Page<AuditRecord>, ServiceError> {
        caller.require(Permission::ReadAudit)?;
        for time in [&query.since, &query.until].into_iter().flatten() {
            if super::keys::parse_time(time).is_none() {
                return Err(ServiceError::InvalidRequest(format!("`{}` is not an RFC 3339 time", excerpt(time))));
            }
        }
        Ok(self.store.list_audit(query)?)
    }

    /// Checks the hash chain and compares every entry with the anchor. A broken trail is a verdict, not an error.
    pub fn verify_audit(&self, caller: &Principal) -> Result<AuditVerdict, ServiceError> {
        caller.require(Permission::ReadAudit)?;
        let mut problems = Vec::new();
        let rows_checked = match self.store.verify_audit_chain() {
            Ok(rows) => rows,
            Err(GalleryError::AuditChainBroken { row_id, reason }) => {
                problems.push(AuditProblem::ChainBroken { row: row_id, reason });
                self.store.stats()?.audit_entries
            }
            Err(e) => return Err(e.into()),
        };
        // The database first, then the anchor: an entry committed in between is anchored by then or in the tail.
        let database = database_hashes(&*self.store)?;
        let (anchored, forged) = self.anchor.read()?;
        problems.extend(forged);
        let (mismatches, unanchored_tail) = AuditAnchor::compare(&anchored, database);
        problems.extend(mismatches);
        let query = AuditQuery { action: Some(Action::AdoptUnanchored.as_str().into()), ..AuditQuery::page(1, 1000) };
        let adoptions: Vec<Adoption> = self
            .store
            .list_audit(&query)?
            .items
            .into_iter()
            .map(|record| Adoption {
                entry: record.id,
                from_row: record.entry.details["from_row"].as_i64().unwrap_or(0),
                to_row: record.entry.details["to_row"].as_i64().unwrap_or(0),
                at: record.at,
            })
            .collect();
        let status = if !problems.is_empty() {
            AuditStatus::Broken
        } else if !unanchored_tail.is_empty() {
            AuditStatus::Unanchored
        } else if !adoptions.is_empty() {
            AuditStatus::Review
        } else {
            AuditStatus::Intact
        };
        let anchored_through = anchored.keys().next_back().copied().unwrap_or(0);
        Ok(AuditVerdict { status, rows_checked, anchored_through, unanchored_tail, problems, adoptions })
    }
}

fn database_hashes(store: &dyn GalleryStore) -> Result<Vec<(i64, String)>, GalleryError> {
    let mut all = Vec::new();
    loop {
        let after = all.last().map(|(id, _): &(i64, String)| *id).unwrap_or(0);
        let page = store.audit_hashes(after, WALK_PAGE)?;
        if page.is_empty() {
            return Ok(all);
        }
        all.extend(page);
    }
}

/// At start: refuses a trail that went backwards (its newest anchored entries missing or changed, or the anchor
/// itself edited), and anchors entries a crash left unanchored, recording that it did.
pub(super) fn check_anchor(store: &dyn GalleryStore, anchor: &Arc<AuditAnchor>) -> Result<(), ServiceError> {
    let (anchored, forged) = anchor.read()?;
    if let Some(AuditProblem::ForgedAnchorLine { line }) = forged.first() {
        return Err(ServiceError::AuditAnchor(format!(
            "line {line} of the audit anchor {} does not verify with its key: the anchor was edited",
            anchor.path().display()
        )));
    }
    let newest: Option<(&i64, &String)> = anchored.iter().next_back();
    let tail_from = match newest {
        None => 0,
        Some((&row, hash)) => {
            let found = store.audit_hashes(row - 1, 1)?;
            match found.first() {
                Some((id, stored)) if *id == row && stored == hash => row,
                Some((id, _)) if *id == row => {
                    return Err(ServiceError::AuditAnchor(format!(
                        "audit entry {row} differs from what the anchor {} recorded: the store was edited or \
                         replaced; restore it from a backup or verify it with `facematch audit verify`",
                        anchor.path().display()
                    )))
                }
                _ => {
                    return Err(ServiceError::AuditAnchor(format!(
                        "the store went backwards: its audit trail lacks entry {row}, which the anchor {} recorded; \
                         refusing to serve a partial gallery (restore the newest backup with `facematch restore`)",
                        anchor.path().display()
                    )))
                }
            }
        }
    };
    let tail = store.audit_hashes(tail_from, usize::MAX >> 1)?;
    if tail.is_empty() {
        return Ok(());
    }
    let (first, last) = (tail[0].0, tail[tail.len() - 1].0);
    let started = anchored.is_empty();
    anchor.record(&tail)?;
    if started {
        tracing::info!(entries = tail.len(), path = %anchor.path().display(), "audit anchor started");
    } else {
        tracing::warn!(first, last, "audit entries found unanchored at start (a crash, or written behind the service's back): adopted and recorded");
    }
    let action = if started { Action::AnchorStarted } else { Action::AdoptUnanchored };
    let details = json!({ "from_row": first, "to_row": last, "entries": tail.len() });
    store.append_audit(Principal::system("audit anchor").entry(action, None, details))?;
    Ok(())
}

fn excerpt(text: &str) -> String {
    text.chars().take(40).collect()
}
