//! Conformance tests of templates: enrolment and its validation, thumbnails, model binding and dimensions, cascades
//! on subject deletion, the index generation, and the lookups that assemble a search result.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::{
    add_template, create_subject, create_watchlist, entry, new_template, photo_hash,
    random_embedding, stream, subject_deleted, subject_updated, template_added, template_deleted,
    templates_added,
};
use crate::gallery::error::{GalleryError, InvalidKind};
use crate::gallery::model::{NewTemplate, SubjectPatch};
use crate::gallery::store::{GalleryStore, TemplateOwner};

pub(crate) fn templates_round_trip_with_thumbnails_and_photo_hashes(store: &dyn GalleryStore) {
    let watchlist = create_watchlist(store, "wanted");
    let subject = create_subject(store, "wanted", "Jane Roe", None);
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let embedding = random_embedding(&mut rng, 8);
    let mut with_thumbnail = new_template(subject.id, "arcface-r100", embedding.clone(), 1);
    with_thumbnail.photo_sha256 = with_thumbnail.photo_sha256.to_ascii_uppercase();
    let first = add_template(store, with_thumbnail.clone());
    assert_eq!(first.photo_sha256, photo_hash(1), "hash stored lowercase");
    assert_eq!(first.dimension, 8);
    assert!(first.has_thumbnail);
    let mut bare = new_template(subject.id, "arcface-r100", random_embedding(&mut rng, 8), 2);
    bare.thumbnail_jpeg = None;
    let second = add_template(store, bare);
    assert!(second.id > first.id);

    assert_eq!(
        store.list_templates(subject.id).expect("listed"),
        vec![first.clone(), second.clone()]
    );
    assert_eq!(
        store
            .get_subject(subject.id)
            .expect("subject")
            .template_count,
        2
    );
    assert_eq!(
        store.get_thumbnail(first.id).expect("thumbnail"),
        with_thumbnail.thumbnail_jpeg
    );
    assert_eq!(store.get_thumbnail(second.id).expect("no thumbnail"), None);
    assert_eq!(
        store
            .get_thumbnail(second.id + 1)
            .expect_err("absent")
            .code(),
        "template_not_found"
    );

    assert!(store.has_photo(subject.id, &photo_hash(1)).expect("lookup"));
    assert!(store
        .has_photo(subject.id, &photo_hash(1).to_ascii_uppercase())
        .expect("lookup"));
    assert!(!store.has_photo(subject.id, &photo_hash(3)).expect("lookup"));
    assert_eq!(
        store
            .has_photo(subject.id + 1, &photo_hash(1))
            .expect_err("absent")
            .code(),
        "subject_not_found"
    );

    let (_, streamed) = stream(store, "arcface-r100");
    assert_eq!(
        streamed[0],
        (first.id, watchlist.id, embedding),
        "embedding survives bit-exact"
    );
    assert_eq!(store.count_templates("arcface-r100").expect("count"), 2);

    let delete = |subject_id: i64, template_id: i64| {
        store.delete_template(subject_id, template_id, template_deleted(template_id))
    };
    assert_eq!(delete(subject.id, first.id).expect("deleted").len(), 1);
    assert!(delete(subject.id, first.id).expect("already gone").is_empty());
    assert_eq!(
        store.get_thumbnail(first.id).expect_err("gone").code(),
        "template_not_found"
    );
    assert_eq!(
        delete(subject.id + 1, second.id)
            .expect_err("absent")
            .code(),
        "subject_not_found"
    );
    // A template is only deleted through its own subject.
    let other = create_subject(store, "wanted", "John Doe", None);
    assert!(delete(other.id, second.id).expect("not this subject's").is_empty());
    assert_eq!(store.count_templates("arcface-r100").expect("count"), 1);
}

pub(crate) fn invalid_templates_are_refused_and_batches_are_all_or_nothing(
    store: &dyn GalleryStore,
) {
    create_watchlist(store, "wanted");
    let subject = create_subject(store, "wanted", "Jane Roe", None);
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let start = store.generation().expect("generation");
    let refused = |new: NewTemplate| {
        store
            .add_template(new, &template_added)
            .expect_err("template refused")
    };

    let mut nan = new_template(subject.id, "m", random_embedding(&mut rng, 4), 1);
    nan.embedding[2] = f32::NAN;
    assert_eq!(refused(nan).code(), "invalid_embedding");
    let mut png = new_template(subject.id, "m", random_embedding(&mut rng, 4), 1);
    png.thumbnail_jpeg = Some(b"\x89PNG\r\n".to_vec());
    assert_eq!(refused(png).code(), "invalid_thumbnail");
    let mut bad_hash = new_template(subject.id, "m", random_embedding(&mut rng, 4), 1);
    bad_hash.photo_sha256 = "abc".to_owned();
    assert_eq!(refused(bad_hash).code(), "invalid_photo_sha256");
    let orphan = new_template(subject.id + 1, "m", random_embedding(&mut rng, 4), 1);
    assert_eq!(refused(orphan).code(), "subject_not_found");

    let batch = vec![
        new_template(subject.id, "m", random_embedding(&mut rng, 4), 1),
        new_template(subject.id + 1, "m", random_embedding(&mut rng, 4), 2),
    ];
    assert_eq!(
        store
            .add_templates(batch, &templates_added)
            .expect_err("batch refused")
            .code(),
        "subject_not_found"
    );
    assert_eq!(
        store.count_templates("m").expect("count"),
        0,
        "nothing of the failed batch remains"
    );
    assert_eq!(store.generation().expect("generation"), start);
    assert!(matches!(
        store.add_template(new_template(subject.id, " ", vec![1.0], 1), &template_added),
        Err(GalleryError::Invalid {
            kind: InvalidKind::ModelId,
            ..
        })
    ));
}

pub(crate) fn a_model_id_stays_bound_to_the_set_up_its_templates_were_made_with(
    store: &dyn GalleryStore,
) {
    create_watchlist(store, "wanted");
    let subject = create_subject(store, "wanted", "Jane Roe", None);
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    // As in a gallery made before fingerprints: a template whose model has a dimension but no fingerprint yet.
    add_template(
        store,
        new_template(subject.id, "model-a", random_embedding(&mut rng, 4), 1),
    );
    // The first start records the loaded model's fingerprint; the same set-up binds again.
    store
        .bind_model("model-a", 4, &"a".repeat(64))
        .expect("adopts the fingerprint");
    store
        .bind_model("model-a", 4, &"a".repeat(64))
        .expect("same set-up");
    let changed = store
        .bind_model("model-a", 4, &"b".repeat(64))
        .expect_err("another set-up");
    assert_eq!(changed.code(), "model_changed");
    assert!(
        changed.to_string().contains("restore the model"),
        "{changed}"
    );
    let dimension = store
        .bind_model("model-a", 5, &"a".repeat(64))
        .expect_err("dimension");
    assert_eq!(dimension.code(), "dimension_mismatch");
    // A new model id is bound on first use, before it has any template.
    store
        .bind_model("model-b", 8, &"c".repeat(64))
        .expect("new model");
    assert_eq!(
        store
            .bind_model("model-b", 8, &"d".repeat(64))
            .expect_err("changed")
            .code(),
        "model_changed"
    );
    assert_eq!(
        stream(store, "model-a").1.len(),
        1,
        "binding changes no template"
    );
}

pub(crate) fn dimension_mismatch_is_refused_and_models_never_mix(store: &dyn GalleryStore) {
    create_watchlist(store, "wanted");
    let subject = create_subject(store, "wanted", "Jane Roe", None);
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let a = add_template(
        store,
        new_template(subject.id, "model-a", random_embedding(&mut rng, 4), 1),
    );
    let mismatch = store.add_template(
        new_template(subject.id, "model-a", random_embedding(&mut rng, 5), 2),
        &template_added,
    );
    assert_eq!(
        mismatch.expect_err("dimension mismatch").code(),
        "dimension_mismatch"
    );
    let b = add_template(
        store,
        new_template(subject.id, "model-b", random_embedding(&mut rng, 5), 3),
    );

    // Deleting every template does not free the model id for another dimension.
    assert_eq!(store
        .delete_template(subject.id, a.id, template_deleted(a.id))
        .expect("deleted").len(), 1);
    let still = store.add_template(
        new_template(subject.id, "model-a", random_embedding(&mut rng, 5), 4),
        &template_added,
    );
    assert_eq!(still.expect_err("still 4-d").code(), "dimension_mismatch");

    let (_, only_b) = stream(store, "model-b");
    assert_eq!(
        only_b.iter().map(|(key, _, _)| *key).collect::<Vec<_>>(),
        vec![b.id]
    );
    assert!(stream(store, "model-a").1.is_empty());
    assert!(stream(store, "model-c").1.is_empty());
    let stats = store.stats().expect("stats");
    let models: Vec<_> = stats
        .models
        .iter()
        .map(|m| (m.model_id.as_str(), m.dimension, m.templates))
        .collect();
    assert_eq!(models, vec![("model-a", 4, 0), ("model-b", 5, 1)]);
}

pub(crate) fn delete_subject_cascades_to_templates_and_thumbnails(store: &dyn GalleryStore) {
    create_watchlist(store, "wanted");
    let subject = create_subject(store, "wanted", "Jane Roe", None);
    let keeper = create_subject(store, "wanted", "John Doe", None);
    let mut rng = ChaCha8Rng::seed_from_u64(10);
    let batch = (0..3)
        .map(|seed| new_template(subject.id, "m", random_embedding(&mut rng, 4), seed))
        .collect();
    let added = store
        .add_templates(batch, &templates_added)
        .expect("batch added");
    let kept = add_template(
        store,
        new_template(keeper.id, "m", random_embedding(&mut rng, 4), 9),
    );

    let removed = store
        .delete_subject(subject.id, &subject_deleted(subject.id))
        .expect("subject deleted");
    assert_eq!(
        removed,
        added.iter().map(|template| template.id).collect::<Vec<_>>()
    );
    assert_eq!(
        store.get_subject(subject.id).expect_err("gone").code(),
        "subject_not_found"
    );
    assert_eq!(
        store
            .delete_subject(subject.id, &subject_deleted(subject.id))
            .expect_err("gone")
            .code(),
        "subject_not_found"
    );
    for template in &added {
        assert_eq!(
            store.get_thumbnail(template.id).expect_err("gone").code(),
            "template_not_found"
        );
    }
    assert!(
        store.get_thumbnail(kept.id).expect("kept").is_some(),
        "the other subject's thumbnail stays"
    );
    let (_, streamed) = stream(store, "m");
    assert_eq!(
        streamed.iter().map(|(key, _, _)| *key).collect::<Vec<_>>(),
        vec![kept.id]
    );
}

pub(crate) fn generation_bumps_with_every_template_change_only(store: &dyn GalleryStore) {
    create_watchlist(store, "wanted");
    create_watchlist(store, "missing");
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let generation = || store.generation().expect("generation");
    let start = generation();
    let subject = create_subject(store, "wanted", "Jane Roe", None);
    assert_eq!(
        generation(),
        start,
        "a subject without templates changes no index"
    );

    let first = add_template(
        store,
        new_template(subject.id, "m", random_embedding(&mut rng, 4), 1),
    );
    assert_eq!(generation(), start + 1);
    let batch = (2..5)
        .map(|seed| new_template(subject.id, "m", random_embedding(&mut rng, 4), seed))
        .collect();
    store.add_templates(batch, &templates_added).expect("batch");
    assert_eq!(generation(), start + 2);

    let rename = SubjectPatch {
        display_name: Some("Jane R.".to_owned()),
        ..SubjectPatch::default()
    };
    store
        .update_subject(subject.id, rename, &subject_updated)
        .expect("renamed");
    assert_eq!(generation(), start + 2, "a rename keeps labels");
    let moved = SubjectPatch {
        watchlist: Some("missing".to_owned()),
        ..SubjectPatch::default()
    };
    store
        .update_subject(subject.id, moved, &subject_updated)
        .expect("moved");
    assert_eq!(generation(), start + 3, "a move changes the labels");

    assert_eq!(store
        .delete_template(subject.id, first.id, template_deleted(first.id))
        .expect("deleted").len(), 1);
    assert_eq!(generation(), start + 4);
    assert!(store
        .delete_template(subject.id, first.id, template_deleted(first.id))
        .expect("absent").is_empty());
    assert_eq!(generation(), start + 4);

    store
        .append_audit(entry("search", "probe".to_owned()))
        .expect("audited");
    store
        .delete_subject(subject.id, &subject_deleted(subject.id))
        .expect("deleted");
    let (streamed_generation, streamed) = stream(store, "m");
    assert_eq!(streamed_generation, start + 5);
    assert!(streamed.is_empty());
    assert_eq!(store.stats().expect("stats").generation, start + 5);
}

pub(crate) fn search_assembly_lookups_answer_in_one_call(store: &dyn GalleryStore) {
    let wanted = create_watchlist(store, "wanted");
    let missing = create_watchlist(store, "missing");
    let jane = create_subject(store, "wanted", "Jane Roe", None);
    let john = create_subject(store, "missing", "John Doe", Some("M-1"));
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let t1 = add_template(
        store,
        new_template(jane.id, "m", random_embedding(&mut rng, 4), 1),
    );
    let t2 = add_template(
        store,
        new_template(john.id, "m", random_embedding(&mut rng, 4), 2),
    );

    let owners = store
        .template_owners(&[t2.id, t1.id, t2.id + 1000])
        .expect("owners");
    assert_eq!(owners.len(), 2);
    assert_eq!(
        owners[&t1.id],
        TemplateOwner {
            subject_id: jane.id,
            label: wanted.id
        }
    );
    assert_eq!(
        owners[&t2.id],
        TemplateOwner {
            subject_id: john.id,
            label: missing.id
        }
    );
    assert!(store.template_owners(&[]).expect("empty").is_empty());

    let subjects = store
        .subjects_by_ids(&[john.id, jane.id, john.id + 1000])
        .expect("subjects");
    assert_eq!(subjects.len(), 2);
    assert_eq!(subjects[&jane.id].template_count, 1);
    assert_eq!(subjects[&john.id].watchlist, "missing");
    assert_eq!(
        subjects[&john.id],
        store.get_subject(john.id).expect("same record")
    );
    assert!(store.subjects_by_ids(&[]).expect("empty").is_empty());
}
