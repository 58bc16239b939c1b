//! Conformance: the serving model, kept enrolment faces and model migrations (state, progress, failures, switch).

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::{
    add_template, create_subject, create_watchlist, entry, new_template, random_embedding, template_deleted,
    templates_added,
};
use crate::gallery::hits::Person;
use crate::gallery::migration::{MigrationState, NewMigration, NewMigrationFailure, StoredFaceRef};
use crate::gallery::model::{Template, TemplateFace};
use crate::gallery::store::GalleryStore;

fn kept_face(seed: u8) -> TemplateFace {
    TemplateFace::Keep {
        jpeg: vec![0xFF, 0xD8, 0xFF, 0xE0, seed, 0xFF, 0xD9],
        geometry: serde_json::json!({ "scale": 1.0, "origin": [0, 0] }),
    }
}

fn new_migration(from: &str, to: &str) -> NewMigration {
    NewMigration {
        from_model: from.to_owned(),
        to_model: to.to_owned(),
        accept_gaps: false,
        started_by: Person { key_id: "a1b2c3".into(), name: "admin".into() },
        role: "admin".into(),
        purpose: Some("model upgrade".into()),
    }
}

pub(crate) fn the_first_serving_model_is_adopted_once(store: &dyn GalleryStore) {
    assert_eq!(store.serving_model().expect("read"), None);
    assert_eq!(store.adopt_serving_model("model-a").expect("adopt"), "model-a");
    assert_eq!(store.adopt_serving_model("model-b").expect("adopt again"), "model-a", "a recorded model stays");
    assert_eq!(store.serving_model().expect("read"), Some("model-a".into()));
}

pub(crate) fn a_migration_remakes_kept_faces_then_switches_what_listings_show(store: &dyn GalleryStore) {
    let mut rng = ChaCha8Rng::seed_from_u64(17);
    store.adopt_serving_model("model-a").expect("adopt");
    create_watchlist(store, "wanted");
    let jane = create_subject(store, "wanted", "Jane Roe", None);
    let john = create_subject(store, "wanted", "John Doe", None);
    let kept = add_template(store, new_template(jane.id, "model-a", random_embedding(&mut rng, 4), 1).with_face(kept_face(1)));
    let refused = add_template(store, new_template(jane.id, "model-a", random_embedding(&mut rng, 4), 2).with_face(kept_face(2)));
    let faceless = add_template(store, new_template(john.id, "model-a", random_embedding(&mut rng, 4), 3));
    assert!(kept.face_kept && !faceless.face_kept);

    let started = store.start_migration(new_migration("model-a", "model-b"), &|m| entry("start_migration", format!("migration/{}", m.id))).expect("start");
    assert_eq!(started.state, MigrationState::Running);
    assert_eq!((started.progress.unwrap().faces, started.progress.unwrap().done, started.progress.unwrap().remaining), (2, 0, 2));
    assert_eq!(started.progress.unwrap().subjects_without_template, 2);
    let again = store.start_migration(new_migration("model-a", "model-c"), &|m| entry("start_migration", format!("migration/{}", m.id)));
    assert_eq!(again.expect_err("one at a time").code(), "migration_in_progress");
    assert_eq!(store.record_faceless_templates(started.id).expect("record"), 1);
    assert_eq!(store.record_faceless_templates(started.id).expect("record again"), 1, "recorded once");

    let faces = store.faces_to_migrate(started.id, 0, 10).expect("faces");
    assert_eq!(faces.iter().map(|f| f.subject_id).collect::<Vec<_>>(), vec![jane.id, jane.id]);
    let later = store.faces_to_migrate(started.id, faces[0].id, 10).expect("faces after the first");
    assert_eq!(later.iter().map(|f| f.id).collect::<Vec<_>>(), vec![faces[1].id], "a worker reads on from its last face");
    assert_eq!(store.faces_to_migrate(started.id, 0, 1).expect("one").len(), 1, "at most `limit`");
    let remade = new_template(jane.id, "model-b", random_embedding(&mut rng, 8), 1).with_face(TemplateFace::Existing(faces[0].id));
    let failure = NewMigrationFailure {
        face: StoredFaceRef { face_id: faces[1].id, subject_id: jane.id },
        code: "poor_quality".into(),
        message: "sharpness 3.0 < 20.0".into(),
    };
    let added = store.add_migrated_templates(started.id, vec![remade], vec![failure], &templates_added).expect("migrated");
    assert_eq!(added.len(), 1);
    assert!(store.faces_to_migrate(started.id, 0, 10).expect("faces").is_empty(), "done or failed: nothing left");
    let progress = store.get_migration(started.id).expect("read").progress.unwrap();
    assert_eq!((progress.done, progress.failed, progress.remaining, progress.without_face), (1, 1, 0, 1));
    assert_eq!(progress.subjects_without_template, 1, "John has no face to remake");
    let failures = store.migration_failures(started.id, 1, 10).expect("failures");
    assert_eq!(failures.total, 2);
    assert_eq!(failures.items.iter().map(|f| f.code.as_str()).collect::<Vec<_>>(), vec!["no_face_kept", "poor_quality"]);
    assert_eq!(failures.items[0].template_id, Some(faceless.id));
    assert_eq!(failures.items[1].display_name.as_deref(), Some("Jane Roe"));

    // Listings show the serving model's templates only, before and after the switch.
    let listed = |id| store.list_templates(id).expect("list").iter().map(|t: &Template| t.model_id.clone()).collect::<Vec<_>>();
    assert_eq!(listed(jane.id), vec!["model-a", "model-a"]);
    assert_eq!(store.get_subject(jane.id).expect("jane").template_count, 2);
    let switched = store.switch_serving_model(started.id, entry("switch_model", "migration".into())).expect("switch");
    assert_eq!(switched.state, MigrationState::Switched);
    assert!(switched.finished_at.is_some());
    assert_eq!(store.serving_model().expect("read"), Some("model-b".into()));
    assert_eq!(listed(jane.id), vec!["model-b"]);
    assert_eq!(store.get_subject(john.id).expect("john").template_count, 0);
    let cancel = store.set_migration_state(started.id, MigrationState::Cancelled, entry("cancel_migration", "m".into()));
    assert_eq!(cancel.expect_err("over").code(), "migration_state");

    // Deleting the face's template of either model deletes the face and every template made of it.
    let mut removed = store.delete_template(jane.id, kept.id, template_deleted(kept.id)).expect("deleted");
    removed.sort();
    assert_eq!(removed, vec![kept.id, added[0].id]);
    assert_eq!(store.count_templates("model-b").expect("count"), 0);
    assert_eq!(store.list_migrations().expect("list")[0].progress.unwrap().faces, 1, "the refused face is still kept");
    assert_eq!(refused.subject_id, jane.id);
}

pub(crate) fn a_cancelled_migration_keeps_its_templates_for_the_next(store: &dyn GalleryStore) {
    let mut rng = ChaCha8Rng::seed_from_u64(18);
    store.adopt_serving_model("model-a").expect("adopt");
    create_watchlist(store, "wanted");
    let jane = create_subject(store, "wanted", "Jane Roe", None);
    add_template(store, new_template(jane.id, "model-a", random_embedding(&mut rng, 4), 1).with_face(kept_face(1)));
    add_template(store, new_template(jane.id, "model-a", random_embedding(&mut rng, 4), 2).with_face(kept_face(2)));
    let first = store.start_migration(new_migration("model-a", "model-b"), &|m| entry("start_migration", format!("migration/{}", m.id))).expect("start");
    let face = store.faces_to_migrate(first.id, 0, 1).expect("faces")[0].id;
    let remade = new_template(jane.id, "model-b", random_embedding(&mut rng, 8), 1).with_face(TemplateFace::Existing(face));
    store.add_migrated_templates(first.id, vec![remade], Vec::new(), &templates_added).expect("migrated");
    let cancelled = store.set_migration_state(first.id, MigrationState::Cancelled, entry("cancel_migration", "m".into())).expect("cancel");
    assert_eq!(cancelled.state, MigrationState::Cancelled);
    assert_eq!(store.active_migration().expect("active"), None);
    let late = new_template(jane.id, "model-b", random_embedding(&mut rng, 8), 2).with_face(TemplateFace::Existing(face));
    assert_eq!(
        store.add_migrated_templates(first.id, vec![late], Vec::new(), &templates_added).expect_err("over").code(),
        "migration_state"
    );
    let second = store.start_migration(new_migration("model-a", "model-b"), &|m| entry("start_migration", format!("migration/{}", m.id))).expect("start again");
    assert_eq!((second.progress.unwrap().done, second.progress.unwrap().remaining), (1, 1), "the first run's template counts");
    assert_eq!(store.faces_to_migrate(second.id, 0, 10).expect("faces").len(), 1);
    assert_eq!(store.serving_model().expect("read"), Some("model-a".into()), "nothing switched");
}
