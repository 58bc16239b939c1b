//! The `GalleryStore` conformance suite: the behaviour every store of record must show, written once against the trait.
//!
//! Each suite test is a `pub(crate) fn(&dyn GalleryStore)` that expects a fresh, empty store. A store's test module
//! runs the whole suite with `conformance_suite!(open_fn)`, so SQLite today and PostgreSQL later are held to one
//! contract; only tests that need one engine's files or internals live next to that engine.

mod alerts;
mod audit;
mod concurrency;
mod hits;
mod jobs;
mod migration;
mod records;
mod retention;
mod storage;
mod templates;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::model::{
    AuditEntry, AuditQuery, AuditRecord, GalleryStats, NewSubject, NewTemplate, NewWatchlist, Subject,
    SubjectQuery, Template, TemplateFace, Watchlist,
};
use super::store::GalleryStore;

// The macro and the engines' own tests name each suite test as `conformance::name`, whichever topic file holds it.
pub(crate) use self::{
    alerts::*, audit::*, concurrency::*, hits::*, jobs::*, migration::*, records::*, retention::*, storage::*, templates::*,
};

/// Expands to a `conformance` module with one `#[test]` per suite test, each against a fresh store from `$open`:
/// the name of a `fn() -> (Guard, impl GalleryStore)` in the invoking module, where the guard (a temporary
/// directory, a scratch database) keeps the store's backing alive until the test ends.
macro_rules! conformance_suite {
    ($open:ident) => {
        $crate::gallery::conformance::conformance_suite!(@tests $open;
            watchlist_crud_round_trip,
            subject_crud_round_trip,
            external_refs_are_unique_per_watchlist_and_findable,
            subjects_paginate_and_search_by_substring,
            delete_watchlist_refuses_a_non_empty_one,
            templates_round_trip_with_thumbnails_and_photo_hashes,
            invalid_templates_are_refused_and_batches_are_all_or_nothing,
            a_model_id_stays_bound_to_the_set_up_its_templates_were_made_with,
            dimension_mismatch_is_refused_and_models_never_mix,
            delete_subject_cascades_to_templates_and_thumbnails,
            generation_bumps_with_every_template_change_only,
            search_assembly_lookups_answer_in_one_call,
            the_audit_chain_links_every_entry_and_lists_newest_first,
            every_change_appends_exactly_one_audit_entry_in_its_transaction,
            a_change_whose_audit_entry_is_refused_leaves_nothing_behind,
            concurrent_readers_see_consistent_snapshots_during_writes,
            store_is_shared_across_threads_as_a_trait_object,
            watchlist_settings_change_and_retention_is_validated,
            expired_subjects_are_those_past_their_watchlists_retention,
            audit_filters_select_by_time_actor_action_subject_and_case,
            the_store_has_one_stable_uuid,
            the_audit_head_is_the_newest_entry_and_only_grows,
            a_checkpoint_keeps_every_row,
            a_full_store_refuses_writes_as_storage_unavailable_until_there_is_room,
            hits_are_recorded_with_the_entry_of_their_search,
            two_different_reviewers_decide_a_hit_and_nobody_reviews_twice,
            an_alert_is_acknowledged_once_and_a_jobs_hit_never,
            hit_queues_filter_and_page_by_id,
            a_jobs_photos_are_claimed_one_at_a_time_and_finished_once,
            claims_of_a_dead_runner_return_and_a_cancelled_job_is_not_claimed,
            jobs_list_newest_first_within_scope_and_expire,
            webhooks_are_made_listed_and_deleted_with_their_audit_entries,
            deliveries_follow_new_hits_by_filter_and_keep_every_attempt,
            the_first_serving_model_is_adopted_once,
            a_migration_remakes_kept_faces_then_switches_what_listings_show,
            a_cancelled_migration_keeps_its_templates_for_the_next,
        );
    };
    (@tests $open:ident; $($test:ident),+ $(,)?) => {
        mod conformance {
            $(
                #[test]
                fn $test() {
                    $crate::gallery::conformance::run(super::$open, $crate::gallery::conformance::$test);
                }
            )+
        }
    };
}
pub(crate) use conformance_suite;

/// Runs one suite test against a fresh store from `open`.
pub(crate) fn run<G, S: GalleryStore>(open: fn() -> (G, S), test: fn(&dyn GalleryStore)) {
    let (guard, store) = open();
    test(&store);
    // The store closes before its backing (e.g. the temporary directory holding its file) goes away.
    drop(store);
    drop(guard);
}

/// The suite's audit entry for a change to `target`. The float in the details must come back bit for bit.
pub(crate) fn entry(action: &str, target: String) -> AuditEntry {
    AuditEntry {
        actor: "alice".to_owned(),
        role: "analyst".to_owned(),
        action: action.to_owned(),
        purpose: Some("case 2024/117".to_owned()),
        target: Some(target),
        details: json!({"k": 10, "threshold": 0.30000000000000004}),
    }
}

pub(crate) fn watchlist_created(watchlist: &Watchlist) -> AuditEntry {
    AuditEntry {
        details: json!({"label": watchlist.id}),
        ..entry("create_watchlist", format!("watchlist/{}", watchlist.name))
    }
}

pub(crate) fn watchlist_deleted(name: &str) -> AuditEntry {
    entry("delete_watchlist", format!("watchlist/{name}"))
}

pub(crate) fn subject_created(subject: &Subject) -> AuditEntry {
    AuditEntry {
        details: json!({"watchlist": subject.watchlist}),
        ..entry("create_subject", format!("subject/{}", subject.id))
    }
}

pub(crate) fn subject_updated(subject: &Subject) -> AuditEntry {
    AuditEntry {
        details: json!({"watchlist": subject.watchlist, "display_name": subject.display_name}),
        ..entry("update_subject", format!("subject/{}", subject.id))
    }
}

/// The closure gets only the removed template keys, so the subject id comes from the caller.
pub(crate) fn subject_deleted(subject_id: i64) -> impl Fn(&[i64]) -> AuditEntry {
    move |removed: &[i64]| AuditEntry {
        details: json!({"removed_templates": removed.len()}),
        ..entry("delete_subject", format!("subject/{subject_id}"))
    }
}

pub(crate) fn template_added(template: &Template) -> AuditEntry {
    AuditEntry {
        details: json!({"subject_id": template.subject_id, "model_id": template.model_id}),
        ..entry("enroll", format!("template/{}", template.id))
    }
}

/// Counts and a key range rather than every key: a seeding batch of ten thousand keys would not fit the details cap.
pub(crate) fn templates_added(templates: &[Template]) -> AuditEntry {
    let first = templates.first().map(|template| template.id);
    let last = templates.last().map(|template| template.id);
    AuditEntry {
        details: json!({"templates": templates.len(), "first": first, "last": last}),
        ..entry("enroll", format!("templates/{}", templates.len()))
    }
}

pub(crate) fn template_deleted(template_id: i64) -> AuditEntry {
    entry("delete_template", format!("template/{template_id}"))
}

pub(crate) fn new_watchlist(name: &str) -> NewWatchlist {
    NewWatchlist {
        name: name.to_owned(),
        description: format!("{name} persons"),
        alert_fpir: 0.003,
        retention_days: None,
    }
}

pub(crate) fn create_watchlist(store: &dyn GalleryStore, name: &str) -> Watchlist {
    store
        .create_watchlist(new_watchlist(name), &watchlist_created)
        .expect("watchlist created")
}

pub(crate) fn new_subject(watchlist: &str, name: &str, external_ref: Option<&str>) -> NewSubject {
    NewSubject {
        watchlist: watchlist.to_owned(),
        external_ref: external_ref.map(str::to_owned),
        display_name: name.to_owned(),
        metadata: json!({"nationality": "XX", "aliases": [name]}),
    }
}

pub(crate) fn create_subject(
    store: &dyn GalleryStore,
    watchlist: &str,
    name: &str,
    external_ref: Option<&str>,
) -> Subject {
    store
        .create_subject(new_subject(watchlist, name, external_ref), &subject_created)
        .expect("subject created")
}

pub(crate) fn photo_hash(seed: u64) -> String {
    hex::encode(Sha256::digest(seed.to_le_bytes()))
}

pub(crate) fn random_embedding(rng: &mut ChaCha8Rng, dimension: usize) -> Vec<f32> {
    (0..dimension)
        .map(|_| rng.random_range(-1.0f32..1.0))
        .collect()
}

pub(crate) fn new_template(
    subject_id: i64,
    model_id: &str,
    embedding: Vec<f32>,
    photo_seed: u64,
) -> NewTemplate {
    NewTemplate {
        subject_id,
        model_id: model_id.to_owned(),
        embedding,
        quality: json!({"sharpness": 0.8, "yaw": -3.5}),
        photo_sha256: photo_hash(photo_seed),
        thumbnail_jpeg: Some(vec![0xFF, 0xD8, 0xFF, 0xE0, photo_seed as u8, 0xFF, 0xD9]),
        face: TemplateFace::NotKept,
        enrolled_by: "operator-1".to_owned(),
    }
}

pub(crate) fn add_template(store: &dyn GalleryStore, new: NewTemplate) -> Template {
    store
        .add_template(new, &template_added)
        .expect("template added")
}

pub(crate) fn stream(store: &dyn GalleryStore, model_id: &str) -> (u64, Vec<(i64, u32, Vec<f32>)>) {
    let mut seen = Vec::new();
    let generation = store
        .for_each_template(model_id, &mut |key, label, embedding| {
            seen.push((key, label, embedding.to_vec()))
        })
        .expect("templates stream");
    (generation, seen)
}

pub(crate) fn audit_entries(store: &dyn GalleryStore) -> usize {
    store.stats().expect("stats").audit_entries
}

/// Everything a change could leave behind, as far as the trait can see.
#[derive(Debug, PartialEq)]
pub(crate) struct Observed {
    pub(crate) watchlists: Vec<Watchlist>,
    pub(crate) subjects: Vec<Subject>,
    pub(crate) templates: Vec<Template>,
    pub(crate) thumbnails: Vec<Option<Vec<u8>>>,
    pub(crate) generation: u64,
    pub(crate) stats: GalleryStats,
    pub(crate) audit: Vec<AuditRecord>,
}

/// Observes a small gallery (up to a thousand subjects and audit entries) completely.
pub(crate) fn observe(store: &dyn GalleryStore) -> Observed {
    let everyone = SubjectQuery {
        watchlist: None,
        q: None,
        page: 1,
        per_page: 1000,
        within: None,
    };
    let subjects = store
        .list_subjects(&everyone)
        .expect("subjects listed")
        .items;
    let templates: Vec<Template> = subjects
        .iter()
        .flat_map(|subject| store.list_templates(subject.id).expect("templates listed"))
        .collect();
    let thumbnails = templates
        .iter()
        .map(|template| store.get_thumbnail(template.id).expect("thumbnail read"))
        .collect();
    Observed {
        watchlists: store.list_watchlists().expect("watchlists listed"),
        subjects,
        templates,
        thumbnails,
        generation: store.generation().expect("generation"),
        stats: store.stats().expect("stats"),
        audit: store.list_audit(&AuditQuery::page(1, 1000)).expect("audit listed").items,
    }
}
