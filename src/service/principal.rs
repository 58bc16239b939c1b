//! Who is calling, in which role and why (`Principal`), and what they did (`Action`): the two halves of every audit
//! entry the core writes.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::gallery::AuditEntry;

/// The roles a caller can act in. The service itself acts as `System` (start-up, migrations).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
    /// A caller that named no role.
    Unauthenticated,
}

impl Role {
    pub const ALL: [Role; 7] = [
        Role::Checkpoint,
        Role::Investigator,
        Role::Enroller,
        Role::Admin,
        Role::Auditor,
        Role::System,
        Role::Unauthenticated,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Checkpoint => "checkpoint",
            Role::Investigator => "investigator",
            Role::Enroller => "enroller",
            Role::Admin => "admin",
            Role::Auditor => "auditor",
            Role::System => "system",
            Role::Unauthenticated => "unauthenticated",
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

/// The caller of a core operation: recorded with every search, view and change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    pub name: String,
    pub role: Role,
    /// Why, e.g. a case number.
    pub purpose: Option<String>,
}

impl Principal {
    pub fn new(name: impl Into<String>, role: Role, purpose: Option<String>) -> Principal {
        Principal { name: name.into(), role, purpose }
    }

    /// The service acting on its own behalf.
    pub fn system(purpose: &str) -> Principal {
        Principal::new("facematch", Role::System, Some(purpose.to_owned()))
    }

    /// The audit entry of `action` on `target` by this caller.
    pub fn entry(&self, action: Action, target: Option<String>, details: serde_json::Value) -> AuditEntry {
        AuditEntry {
            actor: self.name.clone(),
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
