//! Who may do what: each role's permissions, the watchlists a key is limited to, and the checks every core
//! operation makes before it reads or changes anything — so HTTP, the command line and the console obey one rule.

use super::{Principal, Role, ServiceError};

/// What an operation needs. Each core operation asks for exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// Identification-mode search: thresholded alerts only.
    SearchIdentification,
    /// Investigation-mode search: the top k, no threshold. Requires a stated purpose.
    SearchInvestigation,
    /// 1:1 comparison of two photos, or of a photo with a subject.
    Verify,
    /// List and read watchlists.
    ReadWatchlists,
    /// Create, change and delete watchlists.
    ManageWatchlists,
    /// List and read subjects and their enrolled faces' records.
    ReadSubjects,
    /// See a subject's enrolled face thumbnails.
    ViewPhotos,
    /// Create, change and delete subjects; enroll and delete faces.
    EditSubjects,
    /// Create, list, revoke and rotate API keys.
    ManageKeys,
    /// Read and verify the audit trail.
    ReadAudit,
    /// Gallery and index figures.
    ReadStats,
    /// See hits (the review queues and each hit with its decisions).
    ReadHits,
    /// Record a decision on a hit, see its probe crop, export a case's confirmed hits.
    ReviewHits,
    /// Acknowledge an open checkpoint alert.
    AcknowledgeHits,
    /// Submit and cancel bulk search jobs (investigation-mode searches of many photos).
    SubmitJobs,
    /// See bulk search jobs, their progress and results.
    ReadJobs,
    /// Create, list and delete webhooks, and read their deliveries.
    ManageWebhooks,
    /// Move the gallery to another recognizer (model migrations) and follow their progress.
    ManageModels,
}

impl Permission {
    pub const ALL: [Permission; 18] = [
        Permission::SearchIdentification,
        Permission::SearchInvestigation,
        Permission::Verify,
        Permission::ReadWatchlists,
        Permission::ManageWatchlists,
        Permission::ReadSubjects,
        Permission::ViewPhotos,
        Permission::EditSubjects,
        Permission::ManageKeys,
        Permission::ReadAudit,
        Permission::ReadStats,
        Permission::ReadHits,
        Permission::ReviewHits,
        Permission::AcknowledgeHits,
        Permission::SubmitJobs,
        Permission::ReadJobs,
        Permission::ManageWebhooks,
        Permission::ManageModels,
    ];

    /// The permission's stable name, as `GET /v1/me` lists it for a client (the console) to offer what it may.
    pub fn code(self) -> &'static str {
        match self {
            Permission::SearchIdentification => "search_identification",
            Permission::SearchInvestigation => "search_investigation",
            Permission::Verify => "verify",
            Permission::ReadWatchlists => "read_watchlists",
            Permission::ManageWatchlists => "manage_watchlists",
            Permission::ReadSubjects => "read_subjects",
            Permission::ViewPhotos => "view_photos",
            Permission::EditSubjects => "edit_subjects",
            Permission::ManageKeys => "manage_keys",
            Permission::ReadAudit => "read_audit",
            Permission::ReadStats => "read_stats",
            Permission::ReadHits => "read_hits",
            Permission::ReviewHits => "review_hits",
            Permission::AcknowledgeHits => "acknowledge_hits",
            Permission::SubmitJobs => "submit_jobs",
            Permission::ReadJobs => "read_jobs",
            Permission::ManageWebhooks => "manage_webhooks",
            Permission::ManageModels => "manage_models",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::SearchIdentification => "search in identification mode",
            Permission::SearchInvestigation => "search in investigation mode",
            Permission::Verify => "verify",
            Permission::ReadWatchlists => "read watchlists",
            Permission::ManageWatchlists => "manage watchlists",
            Permission::ReadSubjects => "read subjects",
            Permission::ViewPhotos => "view subjects' photos",
            Permission::EditSubjects => "edit subjects",
            Permission::ManageKeys => "manage api keys",
            Permission::ReadAudit => "read the audit trail",
            Permission::ReadStats => "read gallery figures",
            Permission::ReadHits => "read hits",
            Permission::ReviewHits => "review hits",
            Permission::AcknowledgeHits => "acknowledge alerts",
            Permission::SubmitJobs => "submit bulk search jobs",
            Permission::ReadJobs => "read bulk search jobs",
            Permission::ManageWebhooks => "manage webhooks",
            Permission::ManageModels => "migrate the gallery to another model",
        }
    }
}

impl Role {
    /// The role table (README "Keys and roles" shows the same table).
    ///
    /// Hits: investigators review them, see their probe crops and export what two of them confirmed; a checkpoint
    /// sees the hits of its watchlists and acknowledges alerts, but neither reviews (the officer at the desk is not
    /// the examiner) nor sees other travellers' probe crops. Admins get nothing of hits: they manage keys and
    /// watchlists, and a key that can make keys must not also be able to look at travellers' faces or decide on
    /// them, or one stolen admin key would be a reviewer of any name. Auditors read the decisions in the trail.
    pub fn may(self, permission: Permission) -> bool {
        use Permission::*;
        match self {
            Role::Checkpoint => {
                matches!(permission, SearchIdentification | Verify | ReadWatchlists | ReadHits | AcknowledgeHits)
            }
            Role::Investigator => matches!(
                permission,
                SearchIdentification
                    | SearchInvestigation
                    | Verify
                    | ReadWatchlists
                    | ReadSubjects
                    | ViewPhotos
                    | ReadHits
                    | ReviewHits
                    | SubmitJobs
                    | ReadJobs
            ),
            Role::Enroller => matches!(permission, ReadWatchlists | ReadSubjects | ViewPhotos | EditSubjects),
            // Webhooks are configuration: an admin names where hits go (and the audit trail says who did), but reads
            // no hit through them; the deliveries an admin sees hold statuses, never hit data.
            // A migration remakes templates from the kept faces inside the service; no face leaves it, so managing
            // models gives an admin no view of anyone's photo.
            Role::Admin => matches!(
                permission,
                ManageKeys | ManageWatchlists | ReadWatchlists | ReadStats | ManageWebhooks | ManageModels
            ),
            Role::Auditor => matches!(permission, ReadAudit),
            Role::System => true,
        }
    }
}

impl Principal {
    /// Refuses (403 `forbidden`) a caller whose role lacks `permission`.
    pub fn require(&self, permission: Permission) -> Result<(), ServiceError> {
        if self.role.may(permission) {
            Ok(())
        } else {
            Err(ServiceError::Forbidden { role: self.role, permission })
        }
    }

    /// Whether this caller may touch `watchlist` (keys limited to named watchlists).
    pub fn sees(&self, watchlist: &str) -> bool {
        self.watchlists.as_ref().is_none_or(|names| names.iter().any(|name| name == watchlist))
    }

    /// Refuses (403 `watchlist_forbidden`) a watchlist outside the caller's key.
    pub fn require_watchlist(&self, watchlist: &str) -> Result<(), ServiceError> {
        if self.sees(watchlist) {
            Ok(())
        } else {
            Err(ServiceError::WatchlistForbidden { watchlist: watchlist.to_owned() })
        }
    }

    /// The watchlists a search may cover: the ones asked for (each must be the caller's), or all of the caller's.
    pub fn search_scope(&self, asked: Option<&[String]>) -> Result<Option<Vec<String>>, ServiceError> {
        match (asked, &self.watchlists) {
            (Some(names), _) => {
                for name in names {
                    self.require_watchlist(name)?;
                }
                Ok(Some(names.to_vec()))
            }
            (None, limited) => Ok(limited.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(role: Role, watchlists: Option<&[&str]>) -> Principal {
        Principal::key_holder(
            "0123456789ab",
            "desk",
            role,
            watchlists.map(|names| names.iter().map(|n| n.to_string()).collect()),
            None,
        )
    }

    #[test]
    fn the_auditor_reads_the_trail_and_nothing_else() {
        let auditor = key(Role::Auditor, None);
        auditor.require(Permission::ReadAudit).unwrap();
        for denied in [Permission::SearchIdentification, Permission::ViewPhotos, Permission::ManageKeys] {
            let error = auditor.require(denied).unwrap_err();
            assert_eq!(error.code(), "forbidden");
        }
    }

    #[test]
    fn only_the_investigator_searches_in_investigation_mode() {
        let allowed: Vec<Role> =
            Role::KEY_ROLES.into_iter().filter(|r| r.may(Permission::SearchInvestigation)).collect();
        assert_eq!(allowed, vec![Role::Investigator]);
    }

    #[test]
    fn only_the_investigator_submits_and_reads_jobs() {
        for permission in [Permission::SubmitJobs, Permission::ReadJobs] {
            let allowed: Vec<Role> = Role::KEY_ROLES.into_iter().filter(|r| r.may(permission)).collect();
            assert_eq!(allowed, vec![Role::Investigator]);
        }
    }

    #[test]
    fn a_limited_key_searches_its_own_watchlists_only() {
        let limited = key(Role::Checkpoint, Some(&["wanted"]));
        assert_eq!(limited.search_scope(None).unwrap(), Some(vec!["wanted".to_owned()]));
        assert_eq!(limited.search_scope(Some(&["wanted".to_owned()])).unwrap(), Some(vec!["wanted".to_owned()]));
        let error = limited.search_scope(Some(&["wanted".to_owned(), "missing".to_owned()])).unwrap_err();
        assert_eq!(error.code(), "watchlist_forbidden");
        assert_eq!(key(Role::Checkpoint, None).search_scope(None).unwrap(), None);
    }
}
