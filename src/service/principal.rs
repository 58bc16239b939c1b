//! Who is calling, in which role and why (`Principal`), and what they did (`Action`): the two halves of every audit
//! entry the core writes.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::gallery::AuditEntry;

/// The roles a caller can act in; what each may do is `Role::may` (service/access.rs). The service itself acts as
/// `System` (expiry sweeps, start-up); no key can hold that role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Identification-mode searches and 1:1 verification at a border checkpoint.
    Checkpoint,
    /// Investigation-mode searches, subjects and their photos.
    Investigator,
    /// Subjects, templates and watchlist members.
    Enroller,
    /// Watchlists, configuration and models.
    Admin,
    /// The audit trail, nothing else.
    Auditor,
    /// The service itself.
    System,
}

impl Role {
    pub const ALL: [Role; 6] = [Role::Checkpoint, Role::Investigator, Role::Enroller, Role::Admin, Role::Auditor, Role::System];

    /// The roles an API key can hold.
    pub const KEY_ROLES: [Role; 5] = [Role::Checkpoint, Role::Investigator, Role::Enroller, Role::Admin, Role::Auditor];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Checkpoint => "checkpoint",
            Role::Investigator => "investigator",
            Role::Enroller => "enroller",
            Role::Admin => "admin",
            Role::Auditor => "auditor",
            Role::System => "system",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name that is not one of [`Role::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("role `{0}` is unknown: use checkpoint, investigator, enroller, admin or auditor")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(text: &str) -> Result<Role, UnknownRole> {
        Role::ALL.into_iter().find(|role| role.as_str() == text).ok_or_else(|| UnknownRole(text.to_owned()))
    }
}

/// The caller of a core operation: an authenticated API key (`WatchlistService::authenticate`), the operator of
/// the data directory on the command line, or the service itself. Recorded with every search, view and change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    /// The key's name, or the operator's.
    pub name: String,
    /// The key's public id; `None` for the operator and the service.
    pub key_id: Option<String>,
    pub role: Role,
    /// The watchlists this caller may touch; `None` means all.
    pub watchlists: Option<Vec<String>>,
    /// Why, e.g. a case number. Required for investigation-mode searches.
    pub purpose: Option<String>,
}

impl Principal {
    /// The holder of an API key.
    pub fn key_holder(key_id: &str, name: &str, role: Role, watchlists: Option<Vec<String>>, purpose: Option<String>) -> Principal {
        Principal { name: name.to_owned(), key_id: Some(key_id.to_owned()), role, watchlists, purpose }
    }

    /// Whoever runs `facematch` on the data directory itself (key management, backups): anyone who can write the
    /// database file can do anything, so the command line only records who it was.
    pub fn operator(user: &str, purpose: Option<String>) -> Principal {
        Principal { name: format!("operator:{user}"), key_id: None, role: Role::Admin, watchlists: None, purpose }
    }

    /// The service acting on its own behalf.
    pub fn system(purpose: &str) -> Principal {
        Principal { name: "facematch".into(), key_id: None, role: Role::System, watchlists: None, purpose: Some(purpose.to_owned()) }
    }

    /// As the audit trail names this caller: the key's name and public id, e.g. `desk 3 (1f0c9a2b7d4e)`.
    pub fn actor(&self) -> String {
        match &self.key_id {
            Some(id) => format!("{} ({id})", self.name),
            None => self.name.clone(),
        }
    }

    /// As hits record who searched, reviewed or acknowledged: the key's id (`operator` or `system` without one) and
    /// the holder's name. Reviews are told apart by both, so a rotated key (same name) is still the same person.
    pub fn person(&self) -> crate::gallery::Person {
        let key_id = self.key_id.clone().unwrap_or_else(|| match self.role {
            Role::System => "system".to_owned(),
            _ => "operator".to_owned(),
        });
        crate::gallery::Person { key_id, name: self.name.clone() }
    }

    /// The audit entry of `action` on `target` by this caller.
    pub fn entry(&self, action: Action, target: Option<String>, details: serde_json::Value) -> AuditEntry {
        AuditEntry {
            actor: self.actor(),
            role: self.role.as_str().to_owned(),
            action: action.as_str().to_owned(),
            purpose: self.purpose.clone(),
            target,
            details,
        }
    }
}

/// Every audited operation. The names are stored in the audit trail, so they never change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    CreateWatchlist,
    DeleteWatchlist,
    CreateSubject,
    UpdateSubject,
    DeleteSubject,
    Enroll,
    DeleteTemplate,
    ViewThumbnail,
    Search,
    Verify,
    CreateKey,
    RevokeKey,
    RotateKey,
    ExpireSubject,
    /// The audit anchor was started on an existing trail.
    AnchorStarted,
    /// A start found audit entries the anchor lacked and anchored them (a crash, or entries written behind the
    /// service's back): recorded so an auditor reviews them.
    AdoptUnanchored,
    UpdateWatchlist,
    Backup,
    Restore,
    /// A reviewer's decision on a hit.
    ReviewHit,
    /// An officer acknowledged a checkpoint alert.
    AcknowledgeHit,
    /// A view of a hit's probe crop (a traveller's face).
    ViewHitProbe,
    /// A case's confirmed hits exported.
    ExportHits,
    /// A bulk search job submitted.
    SubmitJob,
    /// A bulk search job stopped by an investigator.
    CancelJob,
    /// A bulk search job's results exported.
    ExportJobResults,
    /// A job past its retention: its photos, results and hits' probe crops deleted.
    ExpireJob,
    /// Checkpoint hits past `hits.probe_retention_days`: their probe crops deleted.
    ExpireHitProbes,
    /// A webhook made (its address and filters; never its secret).
    CreateWebhook,
    DeleteWebhook,
    /// A model migration started (from and to which recognizer).
    StartMigration,
    /// A batch of a migration's templates made from kept faces (the subjects, how many failed).
    MigrateFaces,
    /// A migration that tried every face but would leave subjects without a template waits for a decision.
    HoldMigration,
    /// The gallery switched to a migration's new model.
    SwitchModel,
    CancelMigration,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::CreateWatchlist => "create_watchlist",
            Action::DeleteWatchlist => "delete_watchlist",
            Action::CreateSubject => "create_subject",
            Action::UpdateSubject => "update_subject",
            Action::DeleteSubject => "delete_subject",
            Action::Enroll => "enroll",
            Action::DeleteTemplate => "delete_template",
            Action::ViewThumbnail => "view_thumbnail",
            Action::Search => "search",
            Action::Verify => "verify",
            Action::CreateKey => "create_key",
            Action::RevokeKey => "revoke_key",
            Action::RotateKey => "rotate_key",
            Action::ExpireSubject => "expire_subject",
            Action::AnchorStarted => "anchor_started",
            Action::AdoptUnanchored => "adopt_unanchored",
            Action::UpdateWatchlist => "update_watchlist",
            Action::Backup => "backup",
            Action::Restore => "restore",
            Action::ReviewHit => "review_hit",
            Action::AcknowledgeHit => "acknowledge_hit",
            Action::ViewHitProbe => "view_hit_probe",
            Action::ExportHits => "export_hits",
            Action::SubmitJob => "submit_job",
            Action::CancelJob => "cancel_job",
            Action::ExportJobResults => "export_job_results",
            Action::ExpireJob => "expire_job",
            Action::ExpireHitProbes => "expire_hit_probes",
            Action::CreateWebhook => "create_webhook",
            Action::DeleteWebhook => "delete_webhook",
            Action::StartMigration => "start_migration",
            Action::MigrateFaces => "migrate_faces",
            Action::HoldMigration => "hold_migration",
            Action::SwitchModel => "switch_model",
            Action::CancelMigration => "cancel_migration",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_round_trip_through_their_names_and_refuse_others() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
            assert_eq!(serde_json::to_value(role).unwrap(), serde_json::json!(role.as_str()));
        }
        assert_eq!("Admin".parse::<Role>(), Err(UnknownRole("Admin".into())));
        assert!("benchmark".parse::<Role>().is_err());
    }

    #[test]
    fn actions_serialise_as_their_audit_names() {
        for action in [Action::CreateWatchlist, Action::Enroll, Action::ViewThumbnail, Action::Verify] {
            assert_eq!(serde_json::to_value(action).unwrap(), serde_json::json!(action.as_str()));
        }
    }
}
