//! Conformance tests of webhooks and their deliveries: made and deleted with their audit entries, fed from the hits
//! after each webhook's cursor by its filters, leased to one dispatcher at a time, and kept with every attempt.

use serde_json::json;

use super::{audit_entries, entry};
use crate::gallery::alerts::{Attempt, DeliveryState, NewWebhook, Webhook};
use crate::gallery::hits::{HitSource, NewHit, Person};
use crate::gallery::model::AuditEntry;
use crate::gallery::store::GalleryStore;

fn hit(watchlist: &str, source: HitSource) -> NewHit {
    NewHit {
        source,
        face: 0,
        watchlist: watchlist.to_owned(),
        subject_id: 1,
        template_id: 10,
        similarity: 0.7,
        decision_score: Some(0.7),
        fpir: Some(0.001),
        fpir_extrapolated: false,
        probe_jpeg: None,
        searched_by: Person { key_id: "0123456789ab".into(), name: "gate 3".into() },
        checkpoint: None,
        case: None,
        job_id: None,
    }
}

fn record(store: &dyn GalleryStore, hits: Vec<NewHit>) -> Vec<i64> {
    store.record_hits(hits, entry("search", "search".into())).expect("hits recorded").1.iter().map(|h| h.id).collect()
}

fn webhook(url: &str, watchlists: Option<&[&str]>, sources: &[HitSource]) -> NewWebhook {
    NewWebhook {
        url: url.to_owned(),
        watchlists: watchlists.map(|names| names.iter().map(|n| n.to_string()).collect()),
        sources: sources.to_vec(),
        description: Some("duty desk".into()),
        secret: format!("whsec_{}", "ab".repeat(32)),
        created_by: "admin (0123456789ab)".into(),
    }
}

fn made(w: &Webhook) -> AuditEntry {
    AuditEntry { details: json!({"url": w.url}), ..entry("create_webhook", format!("webhook/{}", w.id)) }
}

fn attempt(n: u32, status: Option<u16>) -> Attempt {
    Attempt { n, at: "2026-12-03T10:00:00.000Z".into(), status, error: status.is_none().then(|| "connection failed".into()) }
}

pub(crate) fn webhooks_are_made_listed_and_deleted_with_their_audit_entries(store: &dyn GalleryStore) {
    let before = audit_entries(store);
    let w = store.create_webhook(webhook("http://127.0.0.1:9/hook", Some(&["wanted"]), &[HitSource::Checkpoint]), &made).expect("made");
    assert_eq!(audit_entries(store), before + 1);
    assert_eq!((w.url.as_str(), w.watchlists.clone(), w.sources.clone()), ("http://127.0.0.1:9/hook", Some(vec!["wanted".into()]), vec![HitSource::Checkpoint]));
    assert_eq!(w.secret, format!("whsec_{}", "ab".repeat(32)), "the secret is kept to sign with");
    assert_eq!(store.get_webhook(w.id).expect("read"), w);
    assert_eq!(store.list_webhooks().expect("listed"), vec![w.clone()]);
    assert!(!serde_json::to_string(&w).unwrap().contains("abab"), "the secret never serialises");
    for bad in [webhook("ftp://x/", None, &[HitSource::Job]), webhook("http://x/", None, &[])] {
        store.create_webhook(bad, &made).expect_err("refused");
    }
    assert_eq!(audit_entries(store), before + 1, "refusals leave no entry");
    let gone = store.delete_webhook(w.id, &|w: &Webhook| entry("delete_webhook", format!("webhook/{}", w.id))).expect("deleted");
    assert_eq!(gone.id, w.id);
    assert_eq!(audit_entries(store), before + 2);
    assert_eq!(store.get_webhook(w.id).expect_err("gone").code(), "webhook_not_found");
    assert_eq!(store.delete_webhook(w.id, &|_: &Webhook| entry("x", "y".into())).expect_err("gone").code(), "webhook_not_found");
}

pub(crate) fn deliveries_follow_new_hits_by_filter_and_keep_every_attempt(store: &dyn GalleryStore) {
    assert_eq!(store.latest_hit_id().expect("newest"), 0);
    let earlier = record(store, vec![hit("wanted", HitSource::Checkpoint)]);
    assert_eq!(store.latest_hit_id().expect("newest"), earlier[0]);
    let wanted = store.create_webhook(webhook("http://h/a", Some(&["wanted"]), &[HitSource::Checkpoint]), &made).expect("made");
    let every = store.create_webhook(webhook("http://h/b", None, &[HitSource::Checkpoint, HitSource::Job]), &made).expect("made");
    let ids = record(
        store,
        vec![hit("wanted", HitSource::Checkpoint), hit("other", HitSource::Checkpoint), hit("wanted", HitSource::Job)],
    );
    // Only hits after the webhook was made; each webhook by its filters; once only, however often it runs.
    assert_eq!(store.enqueue_deliveries(1_000).expect("enqueued"), 1 + 3);
    assert_eq!(store.enqueue_deliveries(1_000).expect("enqueued again"), 0);
    let page = store.list_deliveries(wanted.id, None, 100).expect("listed");
    assert_eq!(page.items.iter().map(|d| d.hit_id).collect::<Vec<_>>(), vec![ids[0]]);
    let first = &page.items[0];
    assert_eq!((first.state, first.attempts.len(), first.webhook_id), (DeliveryState::Pending, 0, wanted.id));
    assert!(first.next_attempt_at.is_some());
    let page = store.list_deliveries(every.id, None, 2).expect("listed");
    assert_eq!((page.items.iter().map(|d| d.hit_id).collect::<Vec<_>>(), page.next_after), (vec![ids[0], ids[1]], Some(page.items[1].id)));
    assert_eq!(store.list_deliveries(every.id, page.next_after, 2).expect("page 2").items[0].hit_id, ids[2]);
    assert_eq!(store.list_deliveries(99_999, None, 10).expect_err("none").code(), "webhook_not_found");
    assert_eq!(store.list_deliveries(every.id, None, 0).expect_err("limit").code(), "invalid_webhook_query");

    // Not due before their time; a claim leases them, so a second dispatcher takes nothing meanwhile.
    assert!(store.claim_deliveries(999, 5_000, 10).expect("none due").is_empty());
    let claimed = store.claim_deliveries(1_000, 5_000, 3).expect("claimed");
    assert_eq!(claimed.len(), 3);
    assert_eq!(store.claim_deliveries(1_000, 5_000, 10).expect("the rest").len(), 1);
    assert!(store.claim_deliveries(4_999, 9_000, 10).expect("leased").is_empty());

    // Attempts are appended; a retry is due when it says; a final state is never due again.
    let d = claimed[0].id;
    let retry = store.record_attempt(d, attempt(1, Some(500)), DeliveryState::Pending, Some(6_000)).expect("recorded");
    assert_eq!((retry.state, retry.attempts.clone()), (DeliveryState::Pending, vec![attempt(1, Some(500))]));
    assert!(store.claim_deliveries(5_999, 9_000, 10).expect("not yet").iter().all(|c| c.id != d));
    assert_eq!(store.claim_deliveries(6_000, 9_000, 10).expect("due").iter().filter(|c| c.id == d).count(), 1);
    store.record_attempt(d, attempt(2, None), DeliveryState::Pending, Some(7_000)).expect("recorded");
    let done = store.record_attempt(d, attempt(3, Some(204)), DeliveryState::Delivered, None).expect("recorded");
    assert_eq!((done.state, done.attempts.len(), done.next_attempt_at.clone()), (DeliveryState::Delivered, 3, None));
    assert_eq!(done.attempts[1], attempt(2, None));
    assert!(store.claim_deliveries(i64::MAX, i64::MAX, 100).expect("after").iter().all(|c| c.id != d));

    // Acknowledgements and decisions number their hits' changes, newest last; a stream asks for those after its own.
    let changes = store.latest_hit_change().expect("changes");
    let by = Person { key_id: "0123456789ab".into(), name: "gate 3".into() };
    store.acknowledge_hit(ids[1], by, &|h: &crate::gallery::hits::Hit| entry("acknowledge_hit", format!("hit/{}", h.id))).expect("acknowledged");
    let review = crate::gallery::hits::NewReview {
        reviewer: Person { key_id: "aaaaaaaaaaaa".into(), name: "examiner".into() },
        decision: crate::gallery::hits::Decision::Inconclusive,
        comment: "cannot tell".into(),
    };
    store.review_hit(ids[0], review, &|h: &crate::gallery::hits::Hit| entry("review_hit", format!("hit/{}", h.id))).expect("reviewed");
    assert_eq!(store.latest_hit_change().expect("changes"), changes + 2);
    let query = crate::gallery::hits::HitQuery { limit: 10, ..Default::default() };
    let changed = store.changed_hits(changes, &query).expect("changed");
    assert_eq!(changed.iter().map(|(seq, h)| (*seq, h.id)).collect::<Vec<_>>(), vec![(changes + 1, ids[1]), (changes + 2, ids[0])]);
    assert!(changed[0].1.acknowledged_by.is_some() && changed[1].1.reviews.len() == 1);
    assert_eq!(store.changed_hits(changes + 1, &query).expect("after").len(), 1);
    let within = crate::gallery::hits::HitQuery { within: Some(vec!["wanted".into()]), ..query };
    assert_eq!(store.changed_hits(changes, &within).expect("within").iter().map(|(_, h)| h.id).collect::<Vec<_>>(), vec![ids[0]]);

    // Deleting a webhook takes its deliveries with it.
    store.delete_webhook(every.id, &|w: &Webhook| entry("delete_webhook", format!("webhook/{}", w.id))).expect("deleted");
    assert!(store.claim_deliveries(i64::MAX, i64::MAX, 100).expect("after").iter().all(|c| c.webhook_id == wanted.id));
}
