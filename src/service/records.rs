//! Watchlists, subjects and their templates as records: every read and change the HTTP edge and the CLI make goes
//! through these methods, and every change commits with its audit entry in one store transaction.

use serde::Deserialize;
use serde_json::json;

use crate::gallery::{
    Entity, GalleryError, GalleryStats, NewSubject, NewWatchlist, Page, Subject, SubjectPatch,
    SubjectQuery, Template, Watchlist,
};

use super::{Action, IndexState, Permission, Principal, ServiceError, WatchlistService};

/// A watchlist to create; the alert FPIR defaults to `gallery.default_alert_fpir`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WatchlistRequest {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub alert_fpir: Option<f64>,
    /// Days a subject stays after its record last changed (default: kept until deleted).
    #[serde(default)]
    pub retention_days: Option<u32>,
}

/// Gallery and index figures for `/v1/stats`.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ServiceStats {
    pub model: String,
    pub gallery: GalleryStats,
    pub index: IndexState,
}

fn subject_target(id: i64) -> Option<String> {
    Some(format!("subject/{id}"))
}

fn template_target(subject_id: i64, template_id: i64) -> Option<String> {
    Some(format!("subject/{subject_id}/faces/{template_id}"))
}

impl WatchlistService {
    pub fn create_watchlist(&self, request: WatchlistRequest, caller: &Principal) -> Result<Watchlist, ServiceError> {
        caller.require(Permission::ManageWatchlists)?;
        caller.require_watchlist(&request.name)?;
        let new = NewWatchlist {
            name: request.name,
            description: request.description,
            alert_fpir: request.alert_fpir.unwrap_or(self.config.default_alert_fpir),
            retention_days: request.retention_days,
        };
        Ok(self.store.create_watchlist(new, &|w: &Watchlist| {
            let details = json!({ "alert_fpir": w.alert_fpir, "retention_days": w.retention_days });
            caller.entry(Action::CreateWatchlist, Some(format!("watchlist/{}", w.name)), details)
        })?)
    }

    /// The watchlists the caller's key may touch.
    pub fn list_watchlists(&self, caller: &Principal) -> Result<Vec<Watchlist>, ServiceError> {
        caller.require(Permission::ReadWatchlists)?;
        let mut watchlists = self.store.list_watchlists()?;
        watchlists.retain(|w| caller.sees(&w.name));
        Ok(watchlists)
    }

    pub fn get_watchlist(&self, name: &str, caller: &Principal) -> Result<Watchlist, ServiceError> {
        caller.require(Permission::ReadWatchlists)?;
        caller.require_watchlist(name)?;
        Ok(self.store.get_watchlist(name)?)
    }

    /// Refuses a watchlist that still has subjects.
    pub fn delete_watchlist(&self, name: &str, caller: &Principal) -> Result<(), ServiceError> {
        caller.require(Permission::ManageWatchlists)?;
        caller.require_watchlist(name)?;
        let entry = caller.entry(Action::DeleteWatchlist, Some(format!("watchlist/{name}")), json!({}));
        Ok(self.store.delete_watchlist(name, entry)?)
    }

    /// The watchlist `name`, created (and audited) when it does not exist yet: folder enrolment names its target.
    pub(super) fn ensure_watchlist(
        &self,
        name: &str,
        description: String,
        caller: &Principal,
    ) -> Result<Watchlist, ServiceError> {
        caller.require_watchlist(name)?;
        match self.store.get_watchlist(name) {
            Ok(watchlist) => Ok(watchlist),
            Err(GalleryError::NotFound { .. }) => {
                let request = WatchlistRequest { name: name.to_owned(), description, alert_fpir: None, retention_days: None };
                self.create_watchlist(request, caller)
            }
            Err(e) => Err(e.into()),
        }
    }

    pub fn create_subject(&self, new: NewSubject, caller: &Principal) -> Result<Subject, ServiceError> {
        caller.require(Permission::EditSubjects)?;
        caller.require_watchlist(&new.watchlist)?;
        Ok(self.store.create_subject(new, &|s: &Subject| {
            caller.entry(Action::CreateSubject, subject_target(s.id), json!({ "watchlist": s.watchlist }))
        })?)
    }

    /// The subject with this external reference in the watchlist, created (and audited) when there is none.
    pub(super) fn ensure_subject(&self, new: NewSubject, caller: &Principal) -> Result<Subject, ServiceError> {
        caller.require(Permission::EditSubjects)?;
        caller.require_watchlist(&new.watchlist)?;
        if let Some(reference) = &new.external_ref {
            if let Some(subject) = self.store.find_subject_by_external_ref(&new.watchlist, reference)? {
                return Ok(subject);
            }
        }
        self.create_subject(new, caller)
    }

    /// Subjects of the watchlists the caller's key may touch.
    pub fn list_subjects(&self, query: &SubjectQuery, caller: &Principal) -> Result<Page<Subject>, ServiceError> {
        caller.require(Permission::ReadSubjects)?;
        if let Some(name) = &query.watchlist {
            caller.require_watchlist(name)?;
        }
        let query = SubjectQuery { within: caller.watchlists.clone(), ..query.clone() };
        Ok(self.store.list_subjects(&query)?)
    }

    pub fn get_subject(&self, id: i64, caller: &Principal) -> Result<Subject, ServiceError> {
        caller.require(Permission::ReadSubjects)?;
        self.subject_for(id, caller)
    }

    /// The subject, if the caller's key may touch its watchlist (checked before anything about it is disclosed).
    pub(super) fn subject_for(&self, id: i64, caller: &Principal) -> Result<Subject, ServiceError> {
        let subject = self.store.get_subject(id)?;
        caller.require_watchlist(&subject.watchlist)?;
        Ok(subject)
    }

    /// The subject's templates (metadata only: never embeddings).
    pub fn list_templates(&self, subject_id: i64, caller: &Principal) -> Result<Vec<Template>, ServiceError> {
        caller.require(Permission::ReadSubjects)?;
        self.subject_for(subject_id, caller)?;
        Ok(self.store.list_templates(subject_id)?)
    }

    /// Updates a subject; moving it to another watchlist relabels its templates in the index.
    pub fn update_subject(&self, id: i64, patch: SubjectPatch, caller: &Principal) -> Result<Subject, ServiceError> {
        caller.require(Permission::EditSubjects)?;
        if let Some(name) = &patch.watchlist {
            caller.require_watchlist(name)?;
        }
        let changed: Vec<&str> = [
            ("display_name", patch.display_name.is_some()),
            ("external_ref", patch.external_ref.is_some()),
            ("metadata", patch.metadata.is_some()),
            ("watchlist", patch.watchlist.is_some()),
        ]
        .into_iter()
        .filter_map(|(field, set)| set.then_some(field))
        .collect();
        let _guard = self.write_lock.lock();
        let before = self.subject_for(id, caller)?;
        let subject = self.store.update_subject(id, patch, &|s: &Subject| {
            let details = json!({ "fields": changed, "watchlist": s.watchlist, "from_watchlist": before.watchlist });
            caller.entry(Action::UpdateSubject, subject_target(id), details)
        })?;
        if subject.watchlist != before.watchlist {
            let label = self.store.get_watchlist(&subject.watchlist)?.id;
            let engine = self.engine();
            for (key, embedding) in self.store.subject_embeddings(id, engine.model_id())? {
                engine.index.remove(key as u64)?;
                engine.index.insert(key as u64, label, &embedding)?;
            }
            self.consolidate_when_due()?;
        }
        Ok(subject)
    }

    /// Deletes a subject with its templates and thumbnails; returns the template ids removed.
    pub fn delete_subject(&self, id: i64, caller: &Principal) -> Result<Vec<i64>, ServiceError> {
        caller.require(Permission::EditSubjects)?;
        let subject = self.subject_for(id, caller)?;
        let _guard = self.write_lock.lock();
        let removed = self.store.delete_subject(id, &|templates: &[i64]| {
            let details = json!({ "watchlist": subject.watchlist, "templates": templates });
            caller.entry(Action::DeleteSubject, subject_target(id), details)
        })?;
        let index = self.engine().index.clone();
        for key in &removed {
            index.remove(*key as u64)?;
        }
        self.consolidate_when_due()?;
        Ok(removed)
    }

    /// Deletes one template of a subject; `template_not_found` when the subject has no such template.
    pub fn delete_template(&self, subject_id: i64, template_id: i64, caller: &Principal) -> Result<(), ServiceError> {
        caller.require(Permission::EditSubjects)?;
        self.subject_for(subject_id, caller)?;
        let _guard = self.write_lock.lock();
        let entry = caller.entry(Action::DeleteTemplate, template_target(subject_id, template_id), json!({}));
        let removed = self.store.delete_template(subject_id, template_id, entry)?;
        if removed.is_empty() {
            return Err(GalleryError::not_found(Entity::Template, template_id).into());
        }
        let index = self.engine().index.clone();
        for key in removed {
            index.remove(key as u64)?;
        }
        self.consolidate_when_due()?;
        Ok(())
    }

    /// The JPEG of an enrolled face, for a person comparing it with a probe: a view of a subject's photo, audited.
    /// `Ok(None)` when the template was enrolled without one.
    pub fn thumbnail(&self, subject_id: i64, template_id: i64, caller: &Principal) -> Result<Option<Vec<u8>>, ServiceError> {
        caller.require(Permission::ViewPhotos)?;
        self.subject_for(subject_id, caller)?;
        let owner = self.store.template_owners(&[template_id])?;
        if owner.get(&template_id).map(|o| o.subject_id) != Some(subject_id) {
            return Err(GalleryError::not_found(Entity::Template, template_id).into());
        }
        let jpeg = self.store.get_thumbnail(template_id)?;
        if jpeg.is_some() {
            self.store.append_audit(caller.entry(
                Action::ViewThumbnail,
                template_target(subject_id, template_id),
                json!({}),
            ))?;
        }
        Ok(jpeg)
    }

    pub fn stats(&self, caller: &Principal) -> Result<ServiceStats, ServiceError> {
        caller.require(Permission::ReadStats)?;
        Ok(ServiceStats { model: self.model_id().to_string(), gallery: self.store.stats()?, index: self.index_state()? })
    }
}
