//! Hits and their review: recording the candidates a search found above their alert threshold (with the search's
//! audit entry, in one transaction), the review queues, decisions under the two-person rule, acknowledgement of
//! checkpoint alerts, and the export of a case's confirmed hits. Every operation checks the caller's role and
//! watchlists here, in the core.

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::gallery::hits::validate_label;
use crate::gallery::{AuditEntry, Decision, Hit, HitPage, HitQuery, HitSource, HitState, InvalidKind, NewHit, NewReview};

use super::search::Candidate;
use super::{Action, Permission, Principal, ServiceError, WatchlistService};

/// Confirmed hits read per page while exporting a case.
const EXPORT_PAGE: usize = 500;

/// How long hits keep what they hold of a traveller (`[hits]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HitsConfig {
    /// Days a checkpoint hit keeps its probe crop (default 90); the retention sweep then deletes the crop and keeps
    /// the hit and its decisions: a reviewer's record outlives the photo. A job's hits lose theirs with the job.
    pub probe_retention_days: u32,
}

impl Default for HitsConfig {
    fn default() -> Self {
        HitsConfig { probe_retention_days: 90 }
    }
}

/// Where a search took place and for which case, as its request states them; copied onto each hit it makes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HitContext {
    pub checkpoint: Option<String>,
    pub case: Option<String>,
    /// The bulk search job whose photo it is.
    pub job: Option<i64>,
}

/// A checkpoint label or case reference a request states: printable, at most 100 characters.
pub(super) fn validate_context(checkpoint: Option<&str>, case: Option<&str>) -> Result<(), ServiceError> {
    if let Some(checkpoint) = checkpoint {
        validate_label(InvalidKind::Checkpoint, "checkpoint", checkpoint)?;
    }
    if let Some(case) = case {
        validate_label(InvalidKind::CaseRef, "case", case)?;
    }
    Ok(())
}

fn hit_target(id: i64) -> Option<String> {
    Some(format!("hit/{id}"))
}

impl WatchlistService {
    /// The hit a candidate of face `face` makes, found by `caller`; `probe_jpeg` is that face's crop.
    pub(crate) fn new_hit(
        source: HitSource,
        face: usize,
        candidate: &Candidate,
        probe_jpeg: Option<Vec<u8>>,
        context: &HitContext,
        caller: &Principal,
    ) -> NewHit {
        NewHit {
            source,
            face,
            watchlist: candidate.watchlist.clone(),
            subject_id: candidate.subject_id,
            template_id: candidate.template_id,
            similarity: candidate.similarity,
            decision_score: candidate.decision_score,
            fpir: candidate.fpir,
            fpir_extrapolated: candidate.fpir_extrapolated,
            probe_jpeg,
            searched_by: caller.person(),
            checkpoint: context.checkpoint.clone(),
            case: context.case.clone(),
            job_id: context.job,
        }
    }

    /// Records hits with the audit entry of the search (or job photo) that found them, in one transaction:
    /// returns that entry's id and the hits. With no hits it appends the entry alone.
    pub(crate) fn record_hits(&self, entry: AuditEntry, hits: Vec<NewHit>) -> Result<(i64, Vec<Hit>), ServiceError> {
        if hits.is_empty() {
            return Ok((self.audit_use(entry)?, Vec::new()));
        }
        let recorded = self.store.record_hits(hits, entry)?;
        self.signal_hits();
        Ok(recorded)
    }

    /// A review queue: the hits of the caller's watchlists that the query selects, oldest first.
    pub fn list_hits(&self, query: HitQuery, caller: &Principal) -> Result<HitPage, ServiceError> {
        caller.require(Permission::ReadHits)?;
        if let Some(name) = &query.watchlist {
            caller.require_watchlist(name)?;
        }
        validate_context(query.checkpoint.as_deref(), query.case.as_deref())?;
        let query = HitQuery { within: caller.watchlists.clone(), ..query };
        Ok(self.store.list_hits(&query)?)
    }

    /// One hit with every decision on it.
    pub fn get_hit(&self, id: i64, caller: &Principal) -> Result<Hit, ServiceError> {
        caller.require(Permission::ReadHits)?;
        self.hit_for(id, caller)
    }

    /// The hit, if the caller's key may touch its watchlist (checked before anything about it is disclosed).
    fn hit_for(&self, id: i64, caller: &Principal) -> Result<Hit, ServiceError> {
        let hit = self.store.get_hit(id)?;
        caller.require_watchlist(&hit.watchlist)?;
        Ok(hit)
    }

    /// The probe crop of a hit, for a reviewer comparing it with the enrolled face: a view of a traveller's face,
    /// audited. `Ok(None)` when the hit has none (an embedding search).
    pub fn hit_probe(&self, id: i64, caller: &Principal) -> Result<Option<Vec<u8>>, ServiceError> {
        caller.require(Permission::ReviewHits)?;
        let hit = self.hit_for(id, caller)?;
        let jpeg = self.store.get_hit_probe(id)?;
        if jpeg.is_some() {
            let details = json!({ "watchlist": hit.watchlist, "subject_id": hit.subject_id });
            self.audit_use(caller.entry(Action::ViewHitProbe, hit_target(id), details))?;
        }
        Ok(jpeg)
    }

    /// Records the caller's decision; the hit moves to the state the two-person rule gives.
    pub fn review_hit(&self, id: i64, decision: Decision, comment: String, caller: &Principal) -> Result<Hit, ServiceError> {
        caller.require(Permission::ReviewHits)?;
        self.hit_for(id, caller)?;
        let comment_chars = comment.chars().count();
        let review = NewReview { reviewer: caller.person(), decision, comment };
        let reviewed = self.store.review_hit(id, review, &|hit: &Hit| {
            let details = json!({
                "decision": decision,
                "comment_chars": comment_chars,
                "state": hit.state,
                "watchlist": hit.watchlist,
                "subject_id": hit.subject_id,
            });
            caller.entry(Action::ReviewHit, hit_target(id), details)
        })?;
        self.signal_hits();
        Ok(reviewed)
    }

    /// An officer acknowledges an open checkpoint alert: someone saw it. Not a review.
    pub fn acknowledge_hit(&self, id: i64, caller: &Principal) -> Result<Hit, ServiceError> {
        caller.require(Permission::AcknowledgeHits)?;
        self.hit_for(id, caller)?;
        let acknowledged = self.store.acknowledge_hit(id, caller.person(), &|hit: &Hit| {
            let details = json!({ "watchlist": hit.watchlist, "subject_id": hit.subject_id, "state": hit.state });
            caller.entry(Action::AcknowledgeHit, hit_target(id), details)
        })?;
        self.signal_hits();
        Ok(acknowledged)
    }

    /// Every confirmed hit of a case on the caller's watchlists, oldest first: an export, audited with its count.
    pub fn export_confirmed(&self, case: &str, caller: &Principal) -> Result<Vec<Hit>, ServiceError> {
        caller.require(Permission::ReviewHits)?;
        validate_context(None, Some(case))?;
        let mut hits = Vec::new();
        let mut after = None;
        loop {
            let query = HitQuery {
                state: Some(HitState::Confirmed),
                case: Some(case.to_owned()),
                after,
                limit: EXPORT_PAGE,
                within: caller.watchlists.clone(),
                ..HitQuery::default()
            };
            let page = self.store.list_hits(&query)?;
            hits.extend(page.items);
            match page.next_after {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        let ids: Vec<i64> = hits.iter().take(100).map(|hit| hit.id).collect();
        let details = json!({ "case": case, "hits": hits.len(), "first_ids": ids });
        self.audit_use(caller.entry(Action::ExportHits, Some(format!("case/{case}")), details))?;
        Ok(hits)
    }
}
