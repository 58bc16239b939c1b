//! Hits and their human review as the store keeps them: a search candidate that crossed its watchlist's alert
//! threshold, the probe crop it was found with, every reviewer's decision, and the two-person rule that turns the
//! decisions into the hit's state; with the `HitStore` half of the store contract that holds them.

use serde::{Deserialize, Serialize};

use super::error::{GalleryError, InvalidKind};
use super::model::AuditEntry;
use super::store::AuditFor;

/// Where a hit came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HitSource {
    /// An identification-mode search at a checkpoint: an alert, open until an officer acknowledges it.
    Checkpoint,
    /// A candidate of a bulk search job above the job's threshold.
    Job,
}

/// A reviewer's decision on one hit, after INTERPOL's examiner practice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// The probe and the candidate may be the same person.
    PotentialMatch,
    /// They are not the same person.
    NoCandidate,
    /// The reviewer cannot tell (poor photo, too little to compare).
    Inconclusive,
}

/// Where a hit stands in its review.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HitState {
    /// Nobody has decided yet.
    Undecided,
    /// One reviewer decided `potential_match` or `no_candidate`; a second, different one must decide too.
    AwaitingSecond,
    /// Two different reviewers decided `potential_match`. Final.
    Confirmed,
    /// Two different reviewers decided `no_candidate`. Final.
    Rejected,
    /// The reviewers disagree, or one found it inconclusive: every decision stays listed, and further reviewers may
    /// add theirs, but no number of them resolves it automatically.
    Disputed,
}

impl HitState {
    pub const ALL: [HitState; 5] =
        [HitState::Undecided, HitState::AwaitingSecond, HitState::Confirmed, HitState::Rejected, HitState::Disputed];

    pub fn as_str(self) -> &'static str {
        match self {
            HitState::Undecided => "undecided",
            HitState::AwaitingSecond => "awaiting_second",
            HitState::Confirmed => "confirmed",
            HitState::Rejected => "rejected",
            HitState::Disputed => "disputed",
        }
    }

    /// The two-person rule: the state that the decisions recorded so far (each by a different reviewer) give.
    pub fn of(decisions: &[Decision]) -> HitState {
        let agreeing = |d: Decision| decisions.iter().all(|&other| other == d);
        match decisions {
            [] => HitState::Undecided,
            _ if decisions.contains(&Decision::Inconclusive) => HitState::Disputed,
            [_] => HitState::AwaitingSecond,
            _ if agreeing(Decision::PotentialMatch) => HitState::Confirmed,
            _ if agreeing(Decision::NoCandidate) => HitState::Rejected,
            _ => HitState::Disputed,
        }
    }

    /// Whether the review is over: no further decision is taken.
    pub fn is_final(self) -> bool {
        matches!(self, HitState::Confirmed | HitState::Rejected)
    }
}

impl std::str::FromStr for HitState {
    type Err = GalleryError;

    fn from_str(text: &str) -> Result<HitState, GalleryError> {
        HitState::ALL.into_iter().find(|s| s.as_str() == text).ok_or_else(|| {
            GalleryError::invalid(
                InvalidKind::HitQuery,
                format!("state {text:?}: use undecided, awaiting_second, confirmed, rejected or disputed"),
            )
        })
    }
}

impl HitSource {
    pub fn as_str(self) -> &'static str {
        match self {
            HitSource::Checkpoint => "checkpoint",
            HitSource::Job => "job",
        }
    }
}

impl std::str::FromStr for HitSource {
    type Err = GalleryError;

    fn from_str(text: &str) -> Result<HitSource, GalleryError> {
        match text {
            "checkpoint" => Ok(HitSource::Checkpoint),
            "job" => Ok(HitSource::Job),
            _ => Err(GalleryError::invalid(InvalidKind::HitQuery, format!("source {text:?}: use checkpoint or job"))),
        }
    }
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::PotentialMatch => "potential_match",
            Decision::NoCandidate => "no_candidate",
            Decision::Inconclusive => "inconclusive",
        }
    }

    pub(crate) fn parse_stored(text: &str) -> Option<Decision> {
        [Decision::PotentialMatch, Decision::NoCandidate, Decision::Inconclusive].into_iter().find(|d| d.as_str() == text)
    }
}

/// Who searched, reviewed or acknowledged: a key's public id and its holder's name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Person {
    /// The key's public id; for the operator of the data directory, `operator`.
    pub key_id: String,
    pub name: String,
}

/// One reviewer's recorded decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Review {
    pub reviewer: Person,
    pub decision: Decision,
    pub comment: String,
    /// RFC 3339.
    pub at: String,
}

/// A search candidate above its watchlist's alert threshold, for people to review. Holds no embedding; the probe
/// crop is read apart (`get_hit_probe`), and the candidate's enrolled face is referenced by its template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Hit {
    pub id: i64,
    /// RFC 3339.
    pub created_at: String,
    pub source: HitSource,
    /// The audit entry of the search (or job photo) that found it: `search_id` in the search's answer.
    pub search_id: i64,
    /// Which face of the probe photo, in the search answer's order.
    pub face: usize,
    pub watchlist: String,
    pub subject_id: i64,
    /// The subject's name and reference as they are now; absent once the subject was deleted (by hand or by
    /// retention), when the hit keeps nothing of it but its id.
    pub display_name: Option<String>,
    pub external_ref: Option<String>,
    /// The candidate's template that scored best; its enrolled thumbnail is
    /// `/v1/subjects/{subject_id}/faces/{template_id}/thumbnail`.
    pub template_id: i64,
    pub similarity: f32,
    pub decision_score: Option<f32>,
    /// Estimated false-positive identification rate at the search's gallery size.
    pub fpir: Option<f64>,
    pub fpir_extrapolated: bool,
    /// Whether a probe crop is kept (an embedding search has none).
    pub has_probe: bool,
    pub searched_by: Person,
    /// The checkpoint the search stated, e.g. `gate 3`.
    pub checkpoint: Option<String>,
    /// The case the search stated.
    pub case: Option<String>,
    /// The bulk search job that found it (`source` is `job`).
    pub job_id: Option<i64>,
    pub state: HitState,
    /// RFC 3339; when an officer acknowledged the alert.
    pub acknowledged_at: Option<String>,
    pub acknowledged_by: Option<Person>,
    /// Every decision, oldest first.
    pub reviews: Vec<Review>,
}

/// A hit to record.
#[derive(Debug, Clone, PartialEq)]
pub struct NewHit {
    pub source: HitSource,
    pub face: usize,
    pub watchlist: String,
    pub subject_id: i64,
    pub template_id: i64,
    pub similarity: f32,
    pub decision_score: Option<f32>,
    pub fpir: Option<f64>,
    pub fpir_extrapolated: bool,
    /// A small JPEG of the probe's face (never the embedding).
    pub probe_jpeg: Option<Vec<u8>>,
    pub searched_by: Person,
    pub checkpoint: Option<String>,
    pub case: Option<String>,
    /// The job whose photo it was found in.
    pub job_id: Option<i64>,
}

/// A decision to record.
#[derive(Debug, Clone, PartialEq)]
pub struct NewReview {
    pub reviewer: Person,
    pub decision: Decision,
    pub comment: String,
}

/// Filters of the review queues; they combine with AND. Pages by id, oldest first: `after` is the last id of the
/// previous page.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HitQuery {
    pub state: Option<HitState>,
    pub watchlist: Option<String>,
    pub case: Option<String>,
    pub checkpoint: Option<String>,
    pub source: Option<HitSource>,
    /// Only the hits of this bulk search job.
    pub job: Option<i64>,
    /// Only open alerts: checkpoint hits nobody has acknowledged yet (the console's alert queue).
    pub open: bool,
    pub after: Option<i64>,
    pub limit: usize,
    /// Only hits of these watchlists (a caller's key limits); set by the service, never by a client.
    pub within: Option<Vec<String>>,
}

/// One page of a queue: `next_after` continues it (absent on the last page).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HitPage {
    pub items: Vec<Hit>,
    pub next_after: Option<i64>,
}

pub const MAX_HITS_PER_PAGE: usize = 500;
const MAX_LABEL_CHARS: usize = 100;
const MAX_COMMENT_CHARS: usize = 2000;

fn printable(text: &str, max: usize) -> bool {
    let count = text.chars().count();
    count > 0 && count <= max && !text.trim().is_empty() && !text.chars().any(char::is_control)
}

/// A checkpoint label or a case reference: printable, 1..=100 characters.
pub fn validate_label(kind: InvalidKind, what: &str, text: &str) -> Result<(), GalleryError> {
    if printable(text, MAX_LABEL_CHARS) {
        Ok(())
    } else {
        Err(GalleryError::invalid(kind, format!("{what} must be 1..={MAX_LABEL_CHARS} printable characters")))
    }
}

/// A reviewer says why: 1..=2000 characters, line breaks allowed.
pub fn validate_comment(comment: &str) -> Result<(), GalleryError> {
    let count = comment.chars().count();
    let controls = comment.chars().any(|c| c.is_control() && c != '\n' && c != '\r' && c != '\t');
    if comment.trim().is_empty() || count > MAX_COMMENT_CHARS || controls {
        return Err(GalleryError::invalid(
            InvalidKind::Comment,
            format!("comment must say why in 1..={MAX_COMMENT_CHARS} characters"),
        ));
    }
    Ok(())
}

/// The hits half of the store contract. Every change appends its audit entry in the same transaction.
pub trait HitStore: Send + Sync {
    /// Appends `audit` (the entry of the search or job photo that found the hits) and records every hit with that
    /// entry's id, in one transaction; returns the entry's id and the hits, in the order given.
    fn record_hits(&self, hits: Vec<NewHit>, audit: AuditEntry) -> Result<(i64, Vec<Hit>), GalleryError>;
    /// `hit_not_found` when there is none.
    fn get_hit(&self, id: i64) -> Result<Hit, GalleryError>;
    /// The probe crop; `Ok(None)` when the hit has none.
    fn get_hit_probe(&self, id: i64) -> Result<Option<Vec<u8>>, GalleryError>;
    /// The queue the query selects, oldest first.
    fn list_hits(&self, query: &HitQuery) -> Result<HitPage, GalleryError>;
    /// Records a decision and moves the hit to the state the two-person rule gives. Refuses a reviewer (key id or
    /// name) who decided on this hit already (`already_decided`) and a hit whose review is over (`review_closed`).
    fn review_hit(&self, id: i64, review: NewReview, audit: AuditFor<'_, Hit>) -> Result<Hit, GalleryError>;
    /// Marks an open checkpoint alert acknowledged; `already_acknowledged` the second time, `not_an_alert` for a
    /// job's hit.
    fn acknowledge_hit(&self, id: i64, by: Person, audit: AuditFor<'_, Hit>) -> Result<Hit, GalleryError>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use Decision::*;

    #[test]
    fn two_agreeing_reviewers_decide_and_any_doubt_is_a_dispute() {
        assert_eq!(HitState::of(&[]), HitState::Undecided);
        assert_eq!(HitState::of(&[PotentialMatch]), HitState::AwaitingSecond);
        assert_eq!(HitState::of(&[NoCandidate]), HitState::AwaitingSecond);
        assert_eq!(HitState::of(&[Inconclusive]), HitState::Disputed);
        assert_eq!(HitState::of(&[PotentialMatch, PotentialMatch]), HitState::Confirmed);
        assert_eq!(HitState::of(&[NoCandidate, NoCandidate]), HitState::Rejected);
        assert_eq!(HitState::of(&[PotentialMatch, NoCandidate]), HitState::Disputed);
        assert_eq!(HitState::of(&[NoCandidate, PotentialMatch]), HitState::Disputed);
        assert_eq!(HitState::of(&[PotentialMatch, Inconclusive]), HitState::Disputed);
        // A dispute is never resolved by outvoting it.
        assert_eq!(HitState::of(&[PotentialMatch, NoCandidate, PotentialMatch]), HitState::Disputed);
    }

    #[test]
    fn states_and_sources_round_trip_through_their_names() {
        for state in HitState::ALL {
            assert_eq!(state.as_str().parse::<HitState>().unwrap(), state);
            assert_eq!(serde_json::to_value(state).unwrap(), serde_json::json!(state.as_str()));
        }
        assert_eq!("Confirmed".parse::<HitState>().unwrap_err().code(), "invalid_hit_query");
        for source in [HitSource::Checkpoint, HitSource::Job] {
            assert_eq!(source.as_str().parse::<HitSource>().unwrap(), source);
        }
        for decision in [PotentialMatch, NoCandidate, Inconclusive] {
            assert_eq!(Decision::parse_stored(decision.as_str()), Some(decision));
            assert_eq!(serde_json::to_value(decision).unwrap(), serde_json::json!(decision.as_str()));
        }
    }

    #[test]
    fn labels_and_comments_must_be_printable_and_short() {
        assert!(validate_label(InvalidKind::Checkpoint, "checkpoint", "gate 3").is_ok());
        for bad in ["", "  ", "a\u{0}b", &"x".repeat(101)] {
            assert_eq!(validate_label(InvalidKind::Checkpoint, "checkpoint", bad).unwrap_err().code(), "invalid_checkpoint");
        }
        assert!(validate_comment("same scar\nsame ear").is_ok());
        assert_eq!(validate_comment(" ").unwrap_err().code(), "invalid_comment");
        assert_eq!(validate_comment(&"x".repeat(2001)).unwrap_err().code(), "invalid_comment");
    }
}
