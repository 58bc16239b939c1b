//! Conformance tests of watchlist settings, retention queries and the audit trail's filters and hash listing.

use super::{create_subject, create_watchlist, entry, watchlist_created};
use crate::gallery::model::{AuditQuery, WatchlistPatch};
use crate::gallery::store::GalleryStore;

pub(crate) fn watchlist_settings_change_and_retention_is_validated(store: &dyn GalleryStore) {
    create_watchlist(store, "wanted");
    let patch = WatchlistPatch { retention_days: Some(Some(30)), alert_fpir: Some(0.01), ..Default::default() };
    let changed = store.update_watchlist("wanted", patch, &watchlist_created).expect("updated");
    assert_eq!((changed.retention_days, changed.alert_fpir), (Some(30), 0.01));
    assert_eq!(store.get_watchlist("wanted").expect("stored"), changed);
    let cleared = store
        .update_watchlist("wanted", WatchlistPatch { retention_days: Some(None), ..Default::default() }, &watchlist_created)
        .expect("cleared");
    assert_eq!(cleared.retention_days, None);
    let audit_before = store.stats().expect("stats").audit_entries;
    for days in [0, 36_501] {
        let patch = WatchlistPatch { retention_days: Some(Some(days)), ..Default::default() };
        let error = store.update_watchlist("wanted", patch, &watchlist_created).expect_err("refused");
        assert_eq!(error.code(), "invalid_retention");
    }
    let missing = store.update_watchlist("nowhere", WatchlistPatch::default(), &watchlist_created);
    assert_eq!(missing.expect_err("no such watchlist").code(), "watchlist_not_found");
    assert_eq!(store.stats().expect("stats").audit_entries, audit_before, "refused changes leave no audit entry");
}

pub(crate) fn expired_subjects_are_those_past_their_watchlists_retention(store: &dyn GalleryStore) {
    create_watchlist(store, "wanted");
    create_watchlist(store, "kept");
    let old = create_subject(store, "wanted", "Old Case", None);
    let kept = create_subject(store, "kept", "Kept Case", None);
    let patch = WatchlistPatch { retention_days: Some(Some(10)), ..Default::default() };
    store.update_watchlist("wanted", patch, &watchlist_created).expect("retention set");
    let updated = humantime::parse_rfc3339_weak(&old.updated_at).expect("updated_at");
    let day = std::time::Duration::from_secs(86_400);
    let at = |t: std::time::SystemTime| humantime::format_rfc3339_millis(t).to_string();
    assert!(store.expired_subjects(&at(updated + 9 * day)).expect("query").is_empty());
    let expired = store.expired_subjects(&at(updated + 11 * day)).expect("query");
    assert_eq!(expired.len(), 1, "only the subject of the watchlist with a retention period: {expired:?}");
    assert_eq!((expired[0].subject_id, expired[0].watchlist.as_str(), expired[0].retention_days), (old.id, "wanted", 10));
    assert!(store.expired_subjects(&at(updated + 400 * day)).expect("query").iter().all(|s| s.subject_id != kept.id));
}

pub(crate) fn audit_filters_select_by_time_actor_action_subject_and_case(store: &dyn GalleryStore) {
    create_watchlist(store, "wanted");
    let subject = create_subject(store, "wanted", "Jane Roe", None);
    let mut search = entry("search", "search/1".into());
    search.actor = "gate 3 (0123456789ab)".into();
    search.purpose = Some("case 2026/114".into());
    store.append_audit(search).expect("appended");
    let mut view = entry("view_thumbnail", format!("subject/{}/faces/7", subject.id));
    view.purpose = Some("case 2026/200".into());
    store.append_audit(view).expect("appended");
    let total = store.list_audit(&AuditQuery::page(1, 100)).expect("all").total;
    let count = |query: AuditQuery| store.list_audit(&query).expect("filtered").total;
    assert_eq!(count(AuditQuery { action: Some("search".into()), ..AuditQuery::page(1, 10) }), 1);
    assert_eq!(count(AuditQuery { actor: Some("0123456789ab".into()), ..AuditQuery::page(1, 10) }), 1);
    assert_eq!(count(AuditQuery { case: Some("2026/200".into()), ..AuditQuery::page(1, 10) }), 1);
    // A subject's entries: its creation and the view of one of its faces, not another subject's.
    assert_eq!(count(AuditQuery { subject: Some(subject.id), ..AuditQuery::page(1, 10) }), 2);
    assert_eq!(count(AuditQuery { subject: Some(subject.id * 10 + 1), ..AuditQuery::page(1, 10) }), 0);
    let newest = store.list_audit(&AuditQuery::page(1, 1)).expect("newest").items[0].at.clone();
    let later = humantime::parse_rfc3339_weak(&newest).expect("time") + std::time::Duration::from_secs(1);
    let later = humantime::format_rfc3339_millis(later).to_string();
    assert_eq!(count(AuditQuery { until: Some(later.clone()), ..AuditQuery::page(1, 10) }), total);
    assert_eq!(count(AuditQuery { since: Some(later), ..AuditQuery::page(1, 10) }), 0);
    let oldest = store.list_audit(&AuditQuery { oldest_first: true, ..AuditQuery::page(1, 1) }).expect("oldest");
    assert_eq!(oldest.items[0].id, 1);
    // The hash listing walks the chain in order from any point.
    let hashes = store.audit_hashes(0, 100).expect("hashes");
    assert_eq!(hashes.len(), total);
    assert!(hashes.windows(2).all(|pair| pair[0].0 < pair[1].0));
    assert_eq!(store.audit_hashes(hashes[1].0, 1).expect("page"), vec![hashes[2].clone()]);
}
