//! Conformance tests of the audit trail: the hash chain, one entry per change inside its transaction, and rollback
//! of a change whose entry is refused.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use super::{
    add_template, audit_entries, create_subject, create_watchlist, entry, new_subject,
    new_template, new_watchlist, observe, random_embedding, subject_created, subject_deleted,
    subject_updated, template_added, template_deleted, templates_added, watchlist_created,
    watchlist_deleted,
};
use crate::gallery::audit::{GENESIS_HASH, MAX_DETAILS_BYTES};
use crate::gallery::error::GalleryError;
use crate::gallery::model::{AuditEntry, AuditQuery, Subject, SubjectPatch, Template, Watchlist};
use crate::gallery::store::GalleryStore;

/// Entries every store must refuse, named for failure messages: one with a blank actor, and one whose details are
/// over the size cap, as a photo smuggled into the trail would be.
fn refused_entries() -> [(&'static str, AuditEntry); 2] {
    let blank_actor = AuditEntry {
        actor: "  ".to_owned(),
        ..entry("refused", "x".to_owned())
    };
    let oversized = AuditEntry {
        details: json!({"photo": "A".repeat(MAX_DETAILS_BYTES + 1)}),
        ..entry("refused", "x".to_owned())
    };
    [
        ("blank actor", blank_actor),
        ("oversized details", oversized),
    ]
}

pub(crate) fn the_audit_chain_links_every_entry_and_lists_newest_first(store: &dyn GalleryStore) {
    let ids: Vec<i64> = (0..5)
        .map(|index| {
            store
                .append_audit(entry("search", format!("probe-{index}")))
                .expect("appended")
        })
        .collect();
    assert!(
        ids.windows(2).all(|pair| pair[0] < pair[1]),
        "ids ascend: {ids:?}"
    );
    assert_eq!(store.verify_audit_chain().expect("intact"), 5);

    let page = store.list_audit(&AuditQuery::page(1, 2)).expect("page");
    assert_eq!(page.total, 5);
    assert_eq!(
        page.items
            .iter()
            .map(|record| record.id)
            .collect::<Vec<_>>(),
        vec![ids[4], ids[3]],
        "newest first"
    );
    assert_eq!(page.items[0].prev_hash, page.items[1].hash);
    assert_eq!(
        page.items[1].prev_hash,
        store.list_audit(&AuditQuery::page(2, 2)).expect("page").items[0].hash
    );
    assert_eq!(
        page.items[0].entry,
        entry("search", "probe-4".to_owned()),
        "details round trip exactly"
    );
    humantime::parse_rfc3339(&page.items[0].at).expect("at is RFC 3339");
    let oldest = store.list_audit(&AuditQuery::page(3, 2)).expect("last page");
    assert_eq!(oldest.items.len(), 1);
    assert_eq!(oldest.items[0].id, ids[0]);
    assert_eq!(oldest.items[0].prev_hash, GENESIS_HASH);

    let oversized = AuditEntry {
        details: json!({"photo": "A".repeat(20_000)}),
        ..entry("enroll", "x".to_owned())
    };
    assert_eq!(
        store.append_audit(oversized).expect_err("too big").code(),
        "invalid_audit_entry"
    );
    assert_eq!(audit_entries(store), 5);
}

/// Checks that the change just made appended exactly one entry, the one its closure made from `expected`'s
/// source, and returns the new count.
fn assert_one_appended(store: &dyn GalleryStore, before: usize, expected: &AuditEntry) -> usize {
    let newest = store.list_audit(&AuditQuery::page(1, 1)).expect("audit listed");
    assert_eq!(
        newest.total,
        before + 1,
        "`{}` appends exactly one entry",
        expected.action
    );
    assert_eq!(audit_entries(store), before + 1);
    assert_eq!(
        &newest.items[0].entry, expected,
        "`{}` appends the entry made from its result",
        expected.action
    );
    before + 1
}

pub(crate) fn every_change_appends_exactly_one_audit_entry_in_its_transaction(
    store: &dyn GalleryStore,
) {
    let mut rng = ChaCha8Rng::seed_from_u64(20);
    let mut count = audit_entries(store);

    let wanted = store
        .create_watchlist(new_watchlist("wanted"), &watchlist_created)
        .expect("created");
    count = assert_one_appended(store, count, &watchlist_created(&wanted));
    let missing = create_watchlist(store, "missing");
    count = assert_one_appended(store, count, &watchlist_created(&missing));
    let empty = create_watchlist(store, "empty");
    count = assert_one_appended(store, count, &watchlist_created(&empty));

    let jane = store
        .create_subject(
            new_subject("wanted", "Jane Roe", Some("N-1")),
            &subject_created,
        )
        .expect("created");
    // The entry names the id the store assigned, so it was made inside the change, not before it.
    assert_eq!(
        store.list_audit(&AuditQuery::page(1, 1)).expect("audit").items[0].entry.target,
        Some(format!("subject/{}", jane.id))
    );
    count = assert_one_appended(store, count, &subject_created(&jane));

    let moved = SubjectPatch {
        watchlist: Some("missing".to_owned()),
        ..SubjectPatch::default()
    };
    let updated = store
        .update_subject(jane.id, moved, &subject_updated)
        .expect("moved");
    assert_eq!(updated.watchlist, "missing");
    count = assert_one_appended(store, count, &subject_updated(&updated));

    let first = add_template(
        store,
        new_template(jane.id, "m", random_embedding(&mut rng, 4), 1),
    );
    count = assert_one_appended(store, count, &template_added(&first));

    let batch = (2..5)
        .map(|seed| new_template(jane.id, "m", random_embedding(&mut rng, 4), seed))
        .collect();
    let added = store
        .add_templates(batch, &templates_added)
        .expect("batch added");
    assert_eq!(added.len(), 3);
    count = assert_one_appended(store, count, &templates_added(&added));

    assert_eq!(store
        .delete_template(jane.id, first.id, template_deleted(first.id))
        .expect("deleted").len(), 1);
    count = assert_one_appended(store, count, &template_deleted(first.id));
    assert!(store
        .delete_template(jane.id, first.id, template_deleted(first.id))
        .expect("already gone").is_empty());
    assert_eq!(
        audit_entries(store),
        count,
        "deleting a missing template records nothing"
    );

    let removed = store
        .delete_subject(jane.id, &subject_deleted(jane.id))
        .expect("subject deleted");
    assert_eq!(
        removed,
        added.iter().map(|template| template.id).collect::<Vec<_>>()
    );
    count = assert_one_appended(store, count, &subject_deleted(jane.id)(removed.as_slice()));

    store
        .delete_watchlist("empty", watchlist_deleted("empty"))
        .expect("deleted");
    count = assert_one_appended(store, count, &watchlist_deleted("empty"));

    // A change the store refuses is not a change, so it records nothing either.
    store
        .create_watchlist(new_watchlist("wanted"), &watchlist_created)
        .expect_err("duplicate");
    store
        .delete_subject(jane.id, &subject_deleted(jane.id))
        .expect_err("already deleted");
    assert_eq!(audit_entries(store), count);

    assert_eq!(store.verify_audit_chain().expect("chain intact"), count);
}

pub(crate) fn a_change_whose_audit_entry_is_refused_leaves_nothing_behind(
    store: &dyn GalleryStore,
) {
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    create_watchlist(store, "wanted");
    create_watchlist(store, "missing");
    create_watchlist(store, "empty");
    let jane = create_subject(store, "wanted", "Jane Roe", Some("N-1"));
    let kept = add_template(
        store,
        new_template(jane.id, "m", random_embedding(&mut rng, 4), 1),
    );
    let before = observe(store);

    for (why, refused) in refused_entries() {
        let check = |change: &str, result: Result<(), GalleryError>| {
            let error = result.expect_err(change);
            assert_eq!(
                error.code(),
                "invalid_audit_entry",
                "{change} with a {why}: {error}"
            );
            assert_eq!(
                observe(store),
                before,
                "{change} with a {why} left something behind"
            );
        };
        let refuse = || refused.clone();
        check(
            "create_watchlist",
            store
                .create_watchlist(new_watchlist("extra"), &|_: &Watchlist| refuse())
                .map(drop),
        );
        check(
            "create_subject",
            store
                .create_subject(
                    new_subject("wanted", "John Doe", Some("N-2")),
                    &|_: &Subject| refuse(),
                )
                .map(drop),
        );
        // A move bumps the generation and relabels templates: all of it must roll back.
        let move_and_rename = SubjectPatch {
            display_name: Some("Jane R. Roe".to_owned()),
            watchlist: Some("missing".to_owned()),
            ..SubjectPatch::default()
        };
        check(
            "update_subject",
            store
                .update_subject(jane.id, move_and_rename, &|_: &Subject| refuse())
                .map(drop),
        );
        // A first template of a new model also registers the model: that must roll back too.
        let fresh_model = new_template(jane.id, "fresh-model", random_embedding(&mut rng, 6), 2);
        check(
            "add_template",
            store
                .add_template(fresh_model, &|_: &Template| refuse())
                .map(drop),
        );
        let batch = (3..5)
            .map(|seed| new_template(jane.id, "m", random_embedding(&mut rng, 4), seed))
            .collect();
        check(
            "add_templates",
            store
                .add_templates(batch, &|_: &[Template]| refuse())
                .map(drop),
        );
        check(
            "delete_template",
            store.delete_template(jane.id, kept.id, refuse()).map(drop),
        );
        check(
            "delete_subject",
            store
                .delete_subject(jane.id, &|_: &[i64]| refuse())
                .map(drop),
        );
        check(
            "delete_watchlist",
            store.delete_watchlist("empty", refuse()),
        );
    }

    assert_eq!(
        store.verify_audit_chain().expect("chain intact"),
        before.audit.len()
    );
    // Refusals leave no lock or half-state behind: the same changes go through with valid entries.
    store
        .delete_subject(jane.id, &subject_deleted(jane.id))
        .expect("subject deleted");
    store
        .delete_watchlist("empty", watchlist_deleted("empty"))
        .expect("watchlist deleted");
    assert_eq!(audit_entries(store), before.audit.len() + 2);
}
