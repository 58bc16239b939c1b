//! Conformance tests of hits: recorded with the entry of the search that found them, reviewed under the two-person
//! rule, acknowledged once, and listed in queues that filter and page by id.

use serde_json::json;

use super::{audit_entries, entry};
use crate::gallery::hits::{Decision, Hit, HitQuery, HitSource, HitState, NewHit, NewReview, Person};
use crate::gallery::model::AuditEntry;
use crate::gallery::store::GalleryStore;

fn person(key_id: &str, name: &str) -> Person {
    Person { key_id: key_id.to_owned(), name: name.to_owned() }
}

pub(super) fn new_hit(watchlist: &str, subject_id: i64, case: Option<&str>) -> NewHit {
    NewHit {
        source: HitSource::Checkpoint,
        face: 0,
        watchlist: watchlist.to_owned(),
        subject_id,
        template_id: subject_id * 10,
        similarity: 0.625,
        decision_score: Some(0.625),
        fpir: Some(0.0015),
        fpir_extrapolated: true,
        probe_jpeg: Some(vec![0xFF, 0xD8, 0xFF, 0xE0, subject_id as u8, 0xFF, 0xD9]),
        searched_by: person("0123456789ab", "gate 3 desk A"),
        checkpoint: Some("gate 3".to_owned()),
        case: case.map(str::to_owned),
        job_id: None,
    }
}

fn record(store: &dyn GalleryStore, hits: Vec<NewHit>) -> Vec<Hit> {
    store.record_hits(hits, entry("search", "search".into())).expect("hits recorded").1
}

fn reviewed(key_id: &str, name: &str, decision: Decision) -> NewReview {
    NewReview { reviewer: person(key_id, name), decision, comment: format!("{name}: {}", decision.as_str()) }
}

fn review_entry(hit: &Hit) -> AuditEntry {
    AuditEntry { details: json!({"state": hit.state}), ..entry("review_hit", format!("hit/{}", hit.id)) }
}

fn review(store: &dyn GalleryStore, id: i64, key_id: &str, name: &str, decision: Decision) -> Result<Hit, String> {
    store.review_hit(id, reviewed(key_id, name, decision), &review_entry).map_err(|e| e.code().to_owned())
}

fn all(state: Option<HitState>) -> HitQuery {
    HitQuery { state, limit: 100, ..HitQuery::default() }
}

pub(crate) fn hits_are_recorded_with_the_entry_of_their_search(store: &dyn GalleryStore) {
    let before = audit_entries(store);
    let (search_id, hits) = store
        .record_hits(vec![new_hit("wanted", 7, Some("2026/114")), new_hit("wanted", 8, None)], entry("search", "search".into()))
        .expect("recorded");
    assert_eq!(audit_entries(store), before + 1, "one entry for the search and all its hits");
    assert_eq!(store.audit_head().expect("head"), search_id as u64);
    assert_eq!(hits.len(), 2);
    let stored = store.get_hit(hits[0].id).expect("stored");
    assert_eq!(stored, hits[0]);
    assert_eq!((stored.search_id, stored.subject_id, stored.template_id), (search_id, 7, 70));
    assert_eq!((stored.similarity, stored.fpir, stored.fpir_extrapolated), (0.625, Some(0.0015), true));
    assert_eq!((stored.state, stored.source), (HitState::Undecided, HitSource::Checkpoint));
    assert_eq!((stored.case.as_deref(), stored.checkpoint.as_deref()), (Some("2026/114"), Some("gate 3")));
    assert_eq!(stored.searched_by, person("0123456789ab", "gate 3 desk A"));
    assert!(stored.has_probe && stored.reviews.is_empty() && stored.acknowledged_by.is_none());
    assert_eq!(store.get_hit_probe(hits[1].id).expect("probe"), Some(vec![0xFF, 0xD8, 0xFF, 0xE0, 8, 0xFF, 0xD9]));
    let without = NewHit { probe_jpeg: None, ..new_hit("wanted", 9, None) };
    let bare = record(store, vec![without]);
    assert_eq!(store.get_hit_probe(bare[0].id).expect("no probe"), None);
    assert!(!bare[0].has_probe);
    assert_eq!(store.get_hit(99_999).expect_err("missing").code(), "hit_not_found");
    assert_eq!(store.get_hit_probe(99_999).expect_err("missing").code(), "hit_not_found");

    // A bad hit refuses the whole record: no entry, no hit.
    let before = (audit_entries(store), store.list_hits(&all(None)).expect("listed").items.len());
    let not_jpeg = NewHit { probe_jpeg: Some(b"\x89PNG".to_vec()), ..new_hit("wanted", 1, None) };
    let error = store.record_hits(vec![new_hit("wanted", 1, None), not_jpeg], entry("search", "s".into())).expect_err("refused");
    assert_eq!(error.code(), "invalid_thumbnail");
    let bad_case = new_hit("wanted", 1, Some("line\nbreak"));
    assert_eq!(store.record_hits(vec![bad_case], entry("search", "s".into())).expect_err("refused").code(), "invalid_case");
    assert_eq!((audit_entries(store), store.list_hits(&all(None)).expect("listed").items.len()), before);
}

pub(crate) fn two_different_reviewers_decide_a_hit_and_nobody_reviews_twice(store: &dyn GalleryStore) {
    let hits = record(store, (1..=4).map(|s| new_hit("wanted", s, None)).collect());
    let (confirmed, rejected, disputed, doubted) = (hits[0].id, hits[1].id, hits[2].id, hits[3].id);
    let before = audit_entries(store);

    let first = review(store, confirmed, "aaaaaaaaaaaa", "examiner one", Decision::PotentialMatch).expect("first");
    assert_eq!(first.state, HitState::AwaitingSecond);
    // The same key, and the same person with another key (a rotated one), never make a second decision.
    assert_eq!(review(store, confirmed, "aaaaaaaaaaaa", "examiner one", Decision::PotentialMatch), Err("already_decided".into()));
    assert_eq!(review(store, confirmed, "aaaaaaaaaaaa", "someone else", Decision::NoCandidate), Err("already_decided".into()));
    assert_eq!(review(store, confirmed, "cccccccccccc", "examiner one", Decision::PotentialMatch), Err("already_decided".into()));
    let second = review(store, confirmed, "bbbbbbbbbbbb", "examiner two", Decision::PotentialMatch).expect("second");
    assert_eq!(second.state, HitState::Confirmed);
    assert_eq!(second.reviews.len(), 2);
    assert_eq!(second.reviews[0].reviewer, person("aaaaaaaaaaaa", "examiner one"));
    assert_eq!(second.reviews[1].comment, "examiner two: potential_match");
    assert_eq!(review(store, confirmed, "dddddddddddd", "examiner three", Decision::NoCandidate), Err("review_closed".into()));

    review(store, rejected, "aaaaaaaaaaaa", "examiner one", Decision::NoCandidate).expect("first");
    let hit = review(store, rejected, "bbbbbbbbbbbb", "examiner two", Decision::NoCandidate).expect("second");
    assert_eq!(hit.state, HitState::Rejected);

    review(store, disputed, "aaaaaaaaaaaa", "examiner one", Decision::PotentialMatch).expect("first");
    let hit = review(store, disputed, "bbbbbbbbbbbb", "examiner two", Decision::NoCandidate).expect("second");
    assert_eq!(hit.state, HitState::Disputed);
    // A dispute stays open to further reviewers and stays a dispute, every decision listed.
    let hit = review(store, disputed, "cccccccccccc", "examiner three", Decision::PotentialMatch).expect("third");
    assert_eq!((hit.state, hit.reviews.len()), (HitState::Disputed, 3));

    let hit = review(store, doubted, "aaaaaaaaaaaa", "examiner one", Decision::Inconclusive).expect("first");
    assert_eq!(hit.state, HitState::Disputed);

    // Exactly one entry per accepted decision; refusals leave none.
    assert_eq!(audit_entries(store), before + 8);
    let blank = NewReview { comment: "  ".into(), ..reviewed("eeeeeeeeeeee", "examiner five", Decision::Inconclusive) };
    assert_eq!(store.review_hit(doubted, blank, &review_entry).expect_err("no comment").code(), "invalid_comment");
    assert_eq!(review(store, 99_999, "eeeeeeeeeeee", "examiner five", Decision::Inconclusive), Err("hit_not_found".into()));
    assert_eq!(audit_entries(store), before + 8);
    assert_eq!(store.get_hit(doubted).expect("stored").reviews.len(), 1);
}

pub(crate) fn an_alert_is_acknowledged_once_and_a_jobs_hit_never(store: &dyn GalleryStore) {
    let alert = record(store, vec![new_hit("wanted", 1, None)])[0].id;
    let from_job = record(store, vec![NewHit { source: HitSource::Job, ..new_hit("wanted", 2, None) }])[0].id;
    let before = audit_entries(store);
    let acknowledge = |id: i64, name: &str| {
        store
            .acknowledge_hit(id, person("0123456789ab", name), &|hit: &Hit| entry("acknowledge_hit", format!("hit/{}", hit.id)))
            .map_err(|e| e.code().to_owned())
    };
    let hit = acknowledge(alert, "gate 3 desk A").expect("acknowledged");
    assert_eq!(hit.acknowledged_by, Some(person("0123456789ab", "gate 3 desk A")));
    assert!(hit.acknowledged_at.is_some());
    assert_eq!(hit.state, HitState::Undecided, "acknowledging is not reviewing");
    assert_eq!(acknowledge(alert, "gate 4"), Err("already_acknowledged".into()));
    assert_eq!(acknowledge(from_job, "gate 3 desk A"), Err("not_an_alert".into()));
    assert_eq!(acknowledge(99_999, "gate 3 desk A"), Err("hit_not_found".into()));
    assert_eq!(audit_entries(store), before + 1);
    assert_eq!(store.get_hit(alert).expect("stored").acknowledged_by, hit.acknowledged_by);
}

pub(crate) fn hit_queues_filter_and_page_by_id(store: &dyn GalleryStore) {
    let mut hits = record(store, (1..=5).map(|s| new_hit("wanted", s, Some("2026/114"))).collect());
    hits.extend(record(store, vec![new_hit("other", 6, Some("2026/200"))]));
    let job = NewHit { source: HitSource::Job, checkpoint: None, ..new_hit("other", 7, None) };
    hits.extend(record(store, vec![job]));
    review(store, hits[1].id, "aaaaaaaaaaaa", "examiner one", Decision::PotentialMatch).expect("reviewed");
    let ids = |query: HitQuery| -> Vec<i64> { store.list_hits(&query).expect("listed").items.iter().map(|h| h.id).collect() };
    let id = |i: usize| hits[i].id;

    assert_eq!(ids(all(None)), hits.iter().map(|h| h.id).collect::<Vec<_>>(), "oldest first");
    assert_eq!(ids(all(Some(HitState::AwaitingSecond))), vec![id(1)]);
    assert_eq!(ids(HitQuery { watchlist: Some("other".into()), ..all(None) }), vec![id(5), id(6)]);
    assert_eq!(ids(HitQuery { case: Some("2026/200".into()), ..all(None) }), vec![id(5)]);
    assert_eq!(ids(HitQuery { source: Some(HitSource::Job), ..all(None) }), vec![id(6)]);
    assert_eq!(ids(HitQuery { checkpoint: Some("gate 3".into()), ..all(None) }).len(), 6);
    assert_eq!(ids(HitQuery { within: Some(vec!["other".into()]), ..all(None) }), vec![id(5), id(6)]);
    assert!(ids(HitQuery { within: Some(vec![]), ..all(None) }).is_empty(), "a key limited to no watchlist sees none");
    // Open alerts: checkpoint hits nobody acknowledged (the job's hit is no alert).
    store.acknowledge_hit(id(0), person("0123456789ab", "gate 3"), &|h: &Hit| entry("acknowledge_hit", format!("hit/{}", h.id))).expect("acknowledged");
    assert_eq!(ids(HitQuery { open: true, ..all(None) }), vec![id(1), id(2), id(3), id(4), id(5)]);
    let listed = store.list_hits(&all(Some(HitState::AwaitingSecond))).expect("listed");
    assert_eq!(listed.items[0].reviews.len(), 1, "queues carry the decisions");

    // Keyset pages: each continues after the last id of the one before, and the last says so.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store.list_hits(&HitQuery { after, limit: 3, ..HitQuery::default() }).expect("page");
        seen.extend(page.items.iter().map(|h| h.id));
        match page.next_after {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, ids(all(None)));
    for limit in [0, 501] {
        let error = store.list_hits(&HitQuery { limit, ..HitQuery::default() }).expect_err("refused");
        assert_eq!(error.code(), "invalid_hit_query");
    }
}
