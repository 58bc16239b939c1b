//! Moving a gallery to another recognizer while the old one serves: the new model's templates are made from the
//! kept enrolment faces in the background, in batches (each one transaction with its audit entry), resumable because
//! what is left is read from the store; then, under the write lock, the last faces are done, the new model's index is
//! built and the service switches to it in one step. Faces the new model refuses are listed, never dropped silently:
//! when a subject would be left with no template of the new model, the migration waits for an administrator.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::face_region::RegionGeometry;
use crate::gallery::{
    ConflictKind, GalleryError, GalleryStore, MigrationFailure, MigrationState, ModelMigration, NewMigration, NewMigrationFailure,
    NewTemplate, Page, StoredFace, StoredFaceRef, Template, TemplateFace,
};
use crate::pipeline::FacePipeline;

use super::{engine_for, Action, Permission, Principal, Role, ServiceError, WatchlistService};

/// Faces remade per transaction: large enough that the commit's disk sync is a small share of the work, small
/// enough that a batch takes well under a second at one thread.
const BATCH: usize = 16;

/// What starts a migration.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MigrationRequest {
    /// Manifest id of the recognizer to move to, e.g. `dlib-resnet-v1`.
    pub to: String,
    /// Switch even if some subjects would have no template of the new model (default false: wait for a decision).
    #[serde(default)]
    pub accept_gaps: bool,
}

/// A migration with the faces it could not remake (one page of them).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MigrationReport {
    pub migration: ModelMigration,
    pub failures: Page<MigrationFailure>,
}

/// The recognizer a migration moves to, loaded once while it runs, and where this node's worker got to: the id of
/// the migration and of the last face it was given (a restart reads from the first face again, passing those done).
#[derive(Default)]
pub(super) struct MigrationTarget(parking_lot::Mutex<Option<Arc<FacePipeline>>>, parking_lot::Mutex<(i64, i64)>);

/// At start: the configured recognizer must be the one the gallery serves. A gallery no service has opened yet (or
/// one made before the serving model was recorded) adopts it, unless its templates are all of another model.
pub(super) fn check_serving_model(store: &dyn GalleryStore, configured: &str) -> Result<(), ServiceError> {
    match store.serving_model()? {
        Some(serving) if serving == configured => Ok(()),
        Some(serving) => Err(ServiceError::ServingModelDiffers { serving, configured: configured.to_owned() }),
        None => {
            let models = store.template_models()?;
            if let Some((templates, _)) = models.iter().filter(|(m, _)| m != configured).max_by_key(|(_, n)| *n) {
                if !models.iter().any(|(m, _)| m == configured) {
                    return Err(ServiceError::GalleryOfAnotherModel {
                        templates: templates.clone(),
                        configured: configured.to_owned(),
                    });
                }
            }
            store.adopt_serving_model(configured)?;
            Ok(())
        }
    }
}

/// A migration remakes the whole gallery: only an admin whose key is not limited to some watchlists manages one.
fn require_whole_gallery(caller: &Principal) -> Result<(), ServiceError> {
    caller.require(Permission::ManageModels)?;
    if caller.watchlists.is_some() {
        return Err(ServiceError::WatchlistForbidden { watchlist: "every watchlist (a migration remakes the whole gallery)".into() });
    }
    Ok(())
}

fn migration_target(id: i64) -> Option<String> {
    Some(format!("migration/{id}"))
}

/// Who a migration's background work acts for: the administrator who started it.
fn starter(m: &ModelMigration) -> Principal {
    let role = m.role.parse().unwrap_or(Role::Admin);
    let key_id = (m.started_by.key_id != "operator").then_some(m.started_by.key_id.as_str());
    Principal {
        name: m.started_by.name.clone(),
        key_id: key_id.map(str::to_owned),
        role,
        watchlists: None,
        purpose: m.purpose.clone(),
    }
}

impl WatchlistService {
    /// Starts moving the gallery to `request.to`: loads that recognizer (its manifest, file and licence are checked
    /// as at start-up), registers it with the gallery, records the templates that have no kept face as failures,
    /// and wakes the background worker. The serving model keeps answering until the switch.
    pub fn start_migration(&self, request: &MigrationRequest, caller: &Principal) -> Result<ModelMigration, ServiceError> {
        require_whole_gallery(caller)?;
        let serving = self.model_id().to_string();
        if request.to == serving {
            return Err(ServiceError::AlreadyServing { model: serving });
        }
        let target = self.load_target(&request.to)?;
        let recognizer = target.recognizer();
        self.store.bind_model(&request.to, recognizer.dimension(), &recognizer.manifest().template_fingerprint())?;
        let new = NewMigration {
            from_model: serving.clone(),
            to_model: request.to.clone(),
            accept_gaps: request.accept_gaps,
            started_by: caller.person(),
            role: caller.role.as_str().to_owned(),
            purpose: caller.purpose.clone(),
        };
        let started = self.store.start_migration(new, &|m: &ModelMigration| {
            let details = json!({ "from": m.from_model, "to": m.to_model, "accept_gaps": m.accept_gaps });
            caller.entry(Action::StartMigration, migration_target(m.id), details)
        })?;
        *self.migration_target.0.lock() = Some(target);
        self.store.record_faceless_templates(started.id)?;
        tracing::info!(migration = started.id, from = %serving, to = %request.to, "model migration started");
        self.job_signal.notify();
        Ok(self.store.get_migration(started.id)?)
    }

    /// A migration with its progress and one page of the faces it could not remake.
    pub fn migration(&self, id: i64, page: usize, per_page: usize, caller: &Principal) -> Result<MigrationReport, ServiceError> {
        require_whole_gallery(caller)?;
        let migration = self.store.get_migration(id)?;
        let failures = self.store.migration_failures(id, page, per_page)?;
        Ok(MigrationReport { migration, failures })
    }

    /// Every migration, newest first.
    pub fn list_migrations(&self, caller: &Principal) -> Result<Vec<ModelMigration>, ServiceError> {
        require_whole_gallery(caller)?;
        Ok(self.store.list_migrations()?)
    }

    /// Stops a running or waiting migration; the templates it made stay, and a later migration to the same model
    /// starts from them.
    pub fn cancel_migration(&self, id: i64, caller: &Principal) -> Result<ModelMigration, ServiceError> {
        require_whole_gallery(caller)?;
        // Under the write lock: a switch in progress either finished first or never starts.
        let _guard = self.write_lock.lock();
        let entry = caller.entry(Action::CancelMigration, migration_target(id), json!({}));
        let cancelled = self.store.set_migration_state(id, MigrationState::Cancelled, entry)?;
        tracing::info!(migration = id, "model migration cancelled");
        Ok(cancelled)
    }

    /// Switches a migration that waits for a decision (`ready`: some subjects would have no template of the new
    /// model) — the administrator accepts those gaps, which stay listed in its failures.
    pub fn switch_migration(&self, id: i64, caller: &Principal) -> Result<ModelMigration, ServiceError> {
        require_whole_gallery(caller)?;
        let migration = self.store.get_migration(id)?;
        if migration.state != MigrationState::Ready {
            return Err(GalleryError::conflict(
                ConflictKind::MigrationState,
                format!("migration {id} is {}: only a migration that waits for a decision is switched by hand", migration.state.as_str()),
            )
            .into());
        }
        let target = self.load_target(&migration.to_model)?;
        self.finish_migration(&migration, &target, Some(caller))
    }

    /// One step of the background work: a batch of faces of the running migration, or its end. `Ok(false)` when
    /// there is nothing to do.
    pub(super) fn run_migration_step(&self) -> Result<bool, ServiceError> {
        let Some(migration) = self.store.active_migration()? else {
            *self.migration_target.0.lock() = None;
            return self.follow_serving_model();
        };
        if migration.state != MigrationState::Running {
            return Ok(false);
        }
        let target = self.load_target(&migration.to_model)?;
        let after = match *self.migration_target.1.lock() {
            (id, last) if id == migration.id => last,
            _ => 0,
        };
        let faces = self.store.faces_to_migrate(migration.id, after, BATCH)?;
        if let Some(last) = faces.last() {
            *self.migration_target.1.lock() = (migration.id, last.id);
        }
        let step = if faces.is_empty() {
            self.finish_migration(&migration, &target, None).map(drop)
        } else {
            self.remake_faces(&migration, &target, faces).map(drop)
        };
        match step {
            // Cancelled while the batch was being made: nothing to retry.
            Err(ServiceError::Gallery(GalleryError::Conflict { kind: ConflictKind::MigrationState, .. })) => Ok(true),
            other => other.map(|()| true),
        }
    }

    /// Another node switched the gallery (the store names another serving model than this node's engine): this
    /// node follows, with the same index build and engine swap as a switch of its own.
    fn follow_serving_model(&self) -> Result<bool, ServiceError> {
        let serving = match self.store.serving_model()? {
            Some(serving) if serving != *self.model_id() => serving,
            _ => return Ok(false),
        };
        let target = self.load_target(&serving)?;
        let _guard = self.write_lock.lock();
        let (engine, _) = engine_for(target, &*self.store, self.store_id, &self.config)?;
        *self.engine.write() = Arc::new(engine);
        *self.migration_target.0.lock() = None;
        tracing::info!(model = %serving, "the gallery was switched by another node; this node serves the new model too");
        Ok(true)
    }

    /// The migration's recognizer: loaded once and kept while the migration lasts.
    fn load_target(&self, model: &str) -> Result<Arc<FacePipeline>, ServiceError> {
        let mut cached = self.migration_target.0.lock();
        if let Some(target) = cached.as_ref().filter(|t| t.recognizer().manifest().id == model) {
            return Ok(target.clone());
        }
        let target = Arc::new(
            self.pipeline()
                .with_recognizer(model)
                .map_err(|source| ServiceError::ModelUnavailable { model: model.to_owned(), source: Box::new(source) })?,
        );
        *cached = Some(target.clone());
        Ok(target)
    }

    /// Makes the new model's templates of `faces` and records the faces it refuses, in one transaction.
    fn remake_faces(&self, m: &ModelMigration, target: &FacePipeline, faces: Vec<StoredFace>) -> Result<Vec<Template>, ServiceError> {
        let mut templates = Vec::with_capacity(faces.len());
        let mut failures = Vec::new();
        for face in faces {
            let refused = |code: &str, message: String| NewMigrationFailure {
                face: StoredFaceRef { face_id: face.id, subject_id: face.subject_id },
                code: code.to_owned(),
                message,
            };
            let geometry: RegionGeometry = match serde_json::from_value(face.geometry.clone()) {
                Ok(geometry) => geometry,
                Err(e) => {
                    failures.push(refused("invalid_face_region", format!("the kept face's geometry is unreadable: {e}")));
                    continue;
                }
            };
            let analysed = match target.analyze_region(&face.jpeg, &geometry) {
                Ok(analysed) => analysed,
                Err(e) => {
                    failures.push(refused(e.code(), e.to_string()));
                    continue;
                }
            };
            let reasons = self.quality.shortfalls(&analysed.quality);
            if !reasons.is_empty() {
                failures.push(refused("poor_quality", format!("below the quality policy for this model: {}", reasons.join("; "))));
                continue;
            }
            let thumbnail = if self.config.store_thumbnails { Some(super::enroll::face_jpeg(&analysed.aligned.image)?) } else { None };
            templates.push(NewTemplate {
                subject_id: face.subject_id,
                model_id: m.to_model.clone(),
                embedding: analysed.embedding.values,
                quality: serde_json::to_value(analysed.quality).unwrap_or(serde_json::Value::Null),
                photo_sha256: face.photo_sha256,
                thumbnail_jpeg: thumbnail,
                face: TemplateFace::Existing(face.id),
                enrolled_by: starter(m).actor(),
            });
        }
        let failed: Vec<i64> = failures.iter().map(|f| f.face.subject_id).collect();
        let caller = starter(m);
        let added = self.store.add_migrated_templates(m.id, templates, failures, &|added: &[Template]| {
            let mut subjects: Vec<i64> = added.iter().map(|t| t.subject_id).collect();
            subjects.dedup();
            let details = json!({ "model": m.to_model, "templates": added.len(), "subjects": subjects, "failed_subjects": failed });
            caller.entry(Action::MigrateFaces, migration_target(m.id), details)
        })?;
        Ok(added)
    }

    /// Ends a migration under the write lock: the faces enrolled since the last batch are remade, then either the
    /// service switches (new index built from the store, serving model recorded, engine replaced) or, when some
    /// subjects would be left with no template and nobody accepted that, the migration waits (`ready`).
    fn finish_migration(
        &self,
        m: &ModelMigration,
        target: &Arc<FacePipeline>,
        accepted_by: Option<&Principal>,
    ) -> Result<ModelMigration, ServiceError> {
        // The new model's index is built before the write lock is taken, so enrolments wait for the build only when
        // the templates changed meanwhile (then it is built again under the lock).
        let before = self.store.get_migration(m.id)?;
        let gaps_before = before.progress.map_or(0, |p| p.subjects_without_template);
        let switching = gaps_before == 0 || before.accept_gaps || accepted_by.is_some();
        let prebuilt = match switching {
            true => {
                let generation = self.store.generation()?;
                Some((generation, engine_for(target.clone(), &*self.store, self.store_id, &self.config)?.0))
            }
            false => None,
        };
        let _guard = self.write_lock.lock();
        // From the first face: once, to catch every face enrolled, or failed on by another node, meanwhile.
        let mut after = 0;
        loop {
            let faces = self.store.faces_to_migrate(m.id, after, BATCH)?;
            let Some(last) = faces.last() else { break };
            after = last.id;
            self.remake_faces(m, target, faces)?;
        }
        let current = self.store.get_migration(m.id)?;
        if !current.state.is_active() {
            return Ok(current);
        }
        let progress = current.progress.unwrap_or_default();
        let gaps = progress.subjects_without_template;
        let caller = accepted_by.cloned().unwrap_or_else(|| starter(&current));
        if gaps > 0 && !current.accept_gaps && accepted_by.is_none() {
            if current.state == MigrationState::Running {
                let entry = caller.entry(Action::HoldMigration, migration_target(m.id), json!({ "subjects_without_template": gaps }));
                tracing::warn!(migration = m.id, subjects = gaps, "model migration waits: some subjects would have no template of the new model");
                return Ok(self.store.set_migration_state(m.id, MigrationState::Ready, entry)?);
            }
            return Ok(current);
        }
        let engine = match prebuilt {
            Some((generation, engine)) if self.store.generation()? == generation => engine,
            _ => engine_for(target.clone(), &*self.store, self.store_id, &self.config)?.0,
        };
        let details = json!({
            "from": current.from_model,
            "to": current.to_model,
            "templates": engine.index.len(),
            "failed": progress.failed + progress.without_face,
            "subjects_without_template": gaps,
        });
        let switched = self.store.switch_serving_model(m.id, caller.entry(Action::SwitchModel, migration_target(m.id), details))?;
        *self.engine.write() = Arc::new(engine);
        *self.migration_target.0.lock() = None;
        tracing::info!(migration = m.id, model = %switched.to_model, "gallery switched to the new model");
        Ok(switched)
    }
}
