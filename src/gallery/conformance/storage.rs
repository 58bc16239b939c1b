//! Conformance tests of the store's own upkeep: its identity, checkpoints, and refusing writes as
//! `storage_unavailable` when it is full, then taking them again once there is room, without reopening.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::{add_template, create_subject, create_watchlist, entry, new_template, random_embedding, stream, template_added};
use crate::gallery::model::AuditEntry;
use crate::gallery::error::GalleryError;
use crate::gallery::store::GalleryStore;

pub(crate) fn the_store_has_one_stable_uuid(store: &dyn GalleryStore) {
    let id = store.store_id().expect("store id");
    let groups: Vec<usize> = id.split('-').map(str::len).collect();
    assert_eq!(groups, [8, 4, 4, 4, 12], "{id} is not a UUID");
    assert!(id.chars().all(|c| c == '-' || c.is_ascii_hexdigit() && !c.is_ascii_uppercase()), "{id}");
    assert_eq!(&id[14..15], "4", "{id} is not a random (version 4) UUID");
    create_watchlist(store, "wanted");
    store.checkpoint().expect("checkpoint");
    assert_eq!(store.store_id().expect("store id"), id, "a store keeps its identity across changes");
}

pub(crate) fn the_audit_head_is_the_newest_entry_and_only_grows(store: &dyn GalleryStore) {
    assert_eq!(store.audit_head().expect("head"), 0, "a new store has no entry");
    create_watchlist(store, "wanted");
    let first = store.audit_head().expect("head");
    assert!(first > 0, "a change writes its entry");
    let used = store.append_audit(entry("search", "probe".to_owned())).expect("appended");
    assert_eq!(store.audit_head().expect("head"), used as u64);
    let refused = store.append_audit(AuditEntry { actor: " ".to_owned(), ..entry("search", "probe".to_owned()) });
    assert!(refused.is_err(), "a blank actor is refused");
    assert_eq!(store.audit_head().expect("head"), used as u64, "a refused entry leaves the head where it was");
}

pub(crate) fn a_checkpoint_keeps_every_row(store: &dyn GalleryStore) {
    create_watchlist(store, "wanted");
    let subject = create_subject(store, "wanted", "Jane Roe", None);
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let added = add_template(store, new_template(subject.id, "m", random_embedding(&mut rng, 8), 1));
    let before = stream(store, "m");
    store.checkpoint().expect("checkpoint");
    store.checkpoint().expect("a second checkpoint with nothing to fold");
    assert_eq!(stream(store, "m"), before);
    assert_eq!(before.1[0].0, added.id);
    store.verify_audit_chain().expect("audit chain intact");
}

pub(crate) fn a_full_store_refuses_writes_as_storage_unavailable_until_there_is_room(store: &dyn GalleryStore) {
    create_watchlist(store, "wanted");
    let subject = create_subject(store, "wanted", "Jane Roe", None);
    store.writable().expect("a fresh store is writable");
    // A cap at the current size: the next write that needs a page is refused like a write to a full disk.
    store.cap_size(Some(1)).expect("cap");
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let generation = store.generation().expect("generation");
    let refused = (1..200u64)
        .map(|seed| store.add_template(new_template(subject.id, "m", random_embedding(&mut rng, 512), seed), &template_added))
        .find_map(Result::err)
        .expect("a capped store runs out of room");
    assert!(matches!(refused, GalleryError::StorageUnavailable { .. }), "{refused:?}");
    assert_eq!(refused.code(), "storage_unavailable");
    let refused_again = store.writable().expect_err("readiness reports the full store");
    assert_eq!(refused_again.code(), "storage_unavailable");
    let kept = store.generation().expect("reads go on while writes are refused");
    assert!(kept >= generation);

    store.cap_size(None).expect("room again");
    store.writable().expect("writable again without reopening");
    add_template(store, new_template(subject.id, "m", random_embedding(&mut rng, 512), 1000));
    store.verify_audit_chain().expect("the refused writes left the audit chain intact");
}
