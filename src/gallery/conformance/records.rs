//! Conformance tests of watchlists and subjects: create, read, update, delete, external references, paging and search.

use serde_json::json;

use super::{
    create_subject, create_watchlist, new_subject, new_watchlist, subject_created, subject_deleted,
    subject_updated, watchlist_created, watchlist_deleted,
};
use crate::gallery::error::{ConflictKind, GalleryError};
use crate::gallery::model::{NewWatchlist, SubjectPatch, SubjectQuery};
use crate::gallery::store::GalleryStore;

pub(crate) fn watchlist_crud_round_trip(store: &dyn GalleryStore) {
    let wanted = create_watchlist(store, "wanted");
    let missing = create_watchlist(store, "missing");
    assert_ne!(wanted.id, missing.id);
    assert_eq!(store.get_watchlist("wanted").expect("stored"), wanted);
    assert_eq!(
        store.list_watchlists().expect("listed"),
        vec![wanted.clone(), missing]
    );
    humantime::parse_rfc3339(&wanted.created_at).expect("created_at is RFC 3339");

    let duplicate = NewWatchlist {
        description: String::new(),
        alert_fpir: 0.01,
        ..new_watchlist("wanted")
    };
    assert_eq!(
        store
            .create_watchlist(duplicate, &watchlist_created)
            .expect_err("duplicate refused")
            .code(),
        "duplicate_watchlist"
    );

    store
        .delete_watchlist("wanted", watchlist_deleted("wanted"))
        .expect("empty watchlist deleted");
    assert_eq!(
        store.get_watchlist("wanted").expect_err("gone").code(),
        "watchlist_not_found"
    );
    assert_eq!(
        store
            .delete_watchlist("wanted", watchlist_deleted("wanted"))
            .expect_err("gone")
            .code(),
        "watchlist_not_found"
    );
    // Labels are never reused, so a stale index entry can never point at a newer watchlist.
    let again = create_watchlist(store, "wanted");
    assert!(again.id > wanted.id);
}

pub(crate) fn subject_crud_round_trip(store: &dyn GalleryStore) {
    create_watchlist(store, "wanted");
    create_watchlist(store, "missing");
    let created = create_subject(store, "wanted", "Jane Roe", Some("A-2024/1"));
    assert_eq!(created.watchlist, "wanted");
    assert_eq!(created.template_count, 0);
    assert_eq!(store.get_subject(created.id).expect("stored"), created);

    let replace = SubjectPatch {
        display_name: Some("Jane R. Roe".to_owned()),
        external_ref: Some(None),
        metadata: Some(json!({"note": "replaced"})),
        watchlist: Some("missing".to_owned()),
    };
    let updated = store
        .update_subject(created.id, replace, &subject_updated)
        .expect("subject updated");
    assert_eq!(updated.display_name, "Jane R. Roe");
    assert_eq!(updated.external_ref, None);
    assert_eq!(updated.metadata, json!({"note": "replaced"}));
    assert_eq!(updated.watchlist, "missing");
    assert_eq!(updated.created_at, created.created_at);
    assert_eq!(store.get_subject(created.id).expect("stored"), updated);

    let untouched = store
        .update_subject(created.id, SubjectPatch::default(), &subject_updated)
        .expect("empty patch");
    assert_eq!(untouched.display_name, updated.display_name);
    assert_eq!(untouched.metadata, updated.metadata);

    let refused = |id: i64, patch: SubjectPatch| {
        store
            .update_subject(id, patch, &subject_updated)
            .expect_err("patch refused")
            .code()
    };
    let blank = SubjectPatch {
        display_name: Some("  ".to_owned()),
        ..SubjectPatch::default()
    };
    assert_eq!(refused(created.id, blank), "invalid_display_name");
    let not_object = SubjectPatch {
        metadata: Some(json!("text")),
        ..SubjectPatch::default()
    };
    assert_eq!(refused(created.id, not_object), "invalid_metadata");
    let nowhere = SubjectPatch {
        watchlist: Some("nowhere".to_owned()),
        ..SubjectPatch::default()
    };
    assert_eq!(refused(created.id, nowhere), "watchlist_not_found");
    assert_eq!(
        store
            .get_subject(created.id + 100)
            .expect_err("absent")
            .code(),
        "subject_not_found"
    );
    assert_eq!(
        refused(created.id + 100, SubjectPatch::default()),
        "subject_not_found"
    );
}

pub(crate) fn external_refs_are_unique_per_watchlist_and_findable(store: &dyn GalleryStore) {
    create_watchlist(store, "wanted");
    create_watchlist(store, "missing");
    let first = create_subject(store, "wanted", "Jane Roe", Some("N-17"));
    let other_list = create_subject(store, "missing", "John Doe", Some("N-17"));
    let clash = store.create_subject(
        new_subject("wanted", "Someone", Some("N-17")),
        &subject_created,
    );
    assert_eq!(
        clash.expect_err("clash refused").code(),
        "duplicate_external_ref"
    );
    let move_into_clash = SubjectPatch {
        watchlist: Some("wanted".to_owned()),
        ..SubjectPatch::default()
    };
    assert_eq!(
        store
            .update_subject(other_list.id, move_into_clash, &subject_updated)
            .expect_err("clash")
            .code(),
        "duplicate_external_ref"
    );

    let found = store
        .find_subject_by_external_ref("wanted", "N-17")
        .expect("lookup");
    assert_eq!(found.map(|subject| subject.id), Some(first.id));
    assert_eq!(
        store
            .find_subject_by_external_ref("wanted", "N-18")
            .expect("lookup"),
        None
    );
    assert_eq!(
        store
            .find_subject_by_external_ref("nowhere", "N-17")
            .expect_err("absent")
            .code(),
        "watchlist_not_found"
    );
}

pub(crate) fn subjects_paginate_and_search_by_substring(store: &dyn GalleryStore) {
    create_watchlist(store, "wanted");
    create_watchlist(store, "missing");
    let wanted_ids: Vec<i64> = (0..23)
        .map(|index| {
            create_subject(
                store,
                "wanted",
                &format!("Person {index:02}"),
                Some(&format!("W-{index}")),
            )
            .id
        })
        .collect();
    for index in 0..4 {
        create_subject(store, "missing", &format!("Lost Child {index}"), None);
    }

    let query = |watchlist: Option<&str>, q: Option<&str>, page, per_page| SubjectQuery {
        watchlist: watchlist.map(str::to_owned),
        q: q.map(str::to_owned),
        page,
        per_page,
        within: None,
    };
    let mut paged = Vec::new();
    for page in 1..=3 {
        let result = store
            .list_subjects(&query(Some("wanted"), None, page, 10))
            .expect("page listed");
        assert_eq!(result.total, 23);
        assert_eq!(result.items.len(), if page < 3 { 10 } else { 3 });
        paged.extend(result.items.into_iter().map(|subject| subject.id));
    }
    assert_eq!(paged, wanted_ids);
    let beyond = store
        .list_subjects(&query(Some("wanted"), None, 4, 10))
        .expect("empty page");
    assert!(beyond.items.is_empty());
    assert_eq!(beyond.total, 23);

    let all = store
        .list_subjects(&query(None, None, 1, 100))
        .expect("all listed");
    assert_eq!(all.total, 27);

    let by_name = store
        .list_subjects(&query(None, Some("person 1"), 1, 100))
        .expect("search");
    let names: Vec<_> = by_name
        .items
        .iter()
        .map(|subject| subject.display_name.as_str())
        .collect();
    assert_eq!(names.len(), 10, "Person 10..=19 match: {names:?}");
    assert!(names.iter().all(|name| name.starts_with("Person 1")));

    let by_ref = store
        .list_subjects(&query(None, Some("w-22"), 1, 100))
        .expect("search");
    assert_eq!(by_ref.total, 1);
    assert_eq!(by_ref.items[0].external_ref.as_deref(), Some("W-22"));

    let scoped = store
        .list_subjects(&query(Some("missing"), Some("child"), 1, 2))
        .expect("search");
    assert_eq!((scoped.total, scoped.items.len()), (4, 2));
    let blank_q = store
        .list_subjects(&query(Some("missing"), Some("  "), 1, 100))
        .expect("blank q");
    assert_eq!(blank_q.total, 4);

    let unknown = store.list_subjects(&query(Some("nowhere"), None, 1, 10));
    assert_eq!(
        unknown.expect_err("unknown watchlist").code(),
        "watchlist_not_found"
    );
    let page_zero = store.list_subjects(&query(None, None, 0, 10));
    assert_eq!(page_zero.expect_err("page 0").code(), "invalid_pagination");
}

pub(crate) fn delete_watchlist_refuses_a_non_empty_one(store: &dyn GalleryStore) {
    create_watchlist(store, "wanted");
    let subject = create_subject(store, "wanted", "Jane Roe", None);
    let error = store
        .delete_watchlist("wanted", watchlist_deleted("wanted"))
        .expect_err("non-empty refused");
    assert_eq!(error.code(), "watchlist_not_empty");
    assert!(matches!(
        error,
        GalleryError::Conflict {
            kind: ConflictKind::WatchlistNotEmpty,
            ..
        }
    ));
    store
        .delete_subject(subject.id, &subject_deleted(subject.id))
        .expect("subject deleted");
    store
        .delete_watchlist("wanted", watchlist_deleted("wanted"))
        .expect("now empty");
}
