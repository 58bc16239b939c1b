//! Conformance tests of bulk search jobs: a job and its photos recorded with one audit entry, the queue claimed one
//! photo at a time, each photo finished once with its hits and audit entry, claims of a dead runner given back,
//! cancellation between photos, the list's filters and scope, and retention of jobs and hits' probe crops.

use super::hits::new_hit;
use super::{audit_entries, entry};
use crate::gallery::hits::{HitQuery, HitSource, NewHit, Person};
use crate::gallery::jobs::{Job, JobQuery, JobState, NewJob, NewJobPhoto, PhotoDone, ResultOrder};
use crate::gallery::store::GalleryStore;

fn new_job(case: &str, dir: &str, watchlists: Option<&[&str]>, photos: usize) -> NewJob {
    let mut list: Vec<NewJobPhoto> =
        (0..photos).map(|n| NewJobPhoto { name: format!("p{n}.jpg"), file: Some(format!("m{n}")), refusal: None }).collect();
    list.push(NewJobPhoto { name: "notes.txt".into(), file: None, refusal: Some(("not_an_image".into(), "text".into())) });
    NewJob {
        case: case.to_owned(),
        submitted_by: Person { key_id: "0123456789ab".into(), name: "examiner".into() },
        purpose: Some(format!("case {case}")),
        dir: dir.to_owned(),
        expires_at: "2030-01-01T00:00:00.000Z".into(),
        watchlists: watchlists.map(|names| names.iter().map(|n| n.to_string()).collect()),
        threshold_fpir: Some(0.01),
        k: 5,
        photos: list,
    }
}

fn create(store: &dyn GalleryStore, new: NewJob) -> Job {
    store.create_job(new, &|job: &Job| entry("submit_job", format!("job/{}", job.id))).expect("job created")
}

fn done(best: f32) -> PhotoDone {
    PhotoDone { refusal: None, faces: 1, best_score: Some(best) }
}

pub(crate) fn a_jobs_photos_are_claimed_one_at_a_time_and_finished_once(store: &dyn GalleryStore) {
    let before = audit_entries(store);
    let job = create(store, new_job("2026/300", "a1", Some(&["wanted"]), 2));
    assert_eq!(audit_entries(store), before + 1);
    assert_eq!((job.state, job.total, job.done, job.refused, job.k), (JobState::Queued, 3, 1, 1, 5));
    assert_eq!((job.refusals[0].photo.as_str(), job.refusals[0].code.as_str()), ("notes.txt", "not_an_image"));
    assert_eq!(store.get_job(job.id).expect("stored"), job);

    let first = store.claim_job_photo().expect("claim").expect("work");
    assert_eq!((first.job.id, first.n, first.name.as_str(), first.file.as_deref()), (job.id, 0, "p0.jpg", Some("m0")));
    assert_eq!((first.job.state, first.job.dir.as_str(), first.job.purpose.as_deref()), (JobState::Running, "a1", Some("case 2026/300")));
    let second = store.claim_job_photo().expect("claim").expect("work");
    assert_eq!(second.n, 1);
    assert!(store.claim_job_photo().expect("claim").is_none(), "no photo is claimed twice");

    let hit = NewHit { source: HitSource::Job, job_id: Some(job.id), ..new_hit("wanted", 7, Some("2026/300")) };
    let seen = std::cell::RefCell::new(Vec::new());
    let hits = store
        .finish_job_photo(job.id, 0, done(0.5), vec![hit], entry("search", format!("job/{}", job.id)), &|hits| {
            seen.borrow_mut().extend(hits.iter().map(|h| h.id));
            format!("{{\"photo\":\"p0.jpg\",\"hit\":{}}}", hits[0].id)
        })
        .expect("finished");
    assert_eq!(audit_entries(store), before + 2, "the photo's entry, with its hits and result");
    assert_eq!((hits.len(), hits[0].job_id, seen.into_inner()), (1, Some(job.id), vec![hits[0].id]));
    let again = store
        .finish_job_photo(job.id, 0, done(0.9), Vec::new(), entry("search", "again".into()), &|_| String::new())
        .expect("answered");
    assert!(again.is_empty());
    assert_eq!(audit_entries(store), before + 2, "a photo finished once is never recorded again");
    let running = store.get_job(job.id).expect("job");
    assert_eq!((running.state, running.done, running.hits, running.faces), (JobState::Running, 2, 1, 1));

    let refused = PhotoDone { refusal: Some(("decode_failed".into(), "bad".into())), faces: 0, best_score: None };
    store.finish_job_photo(job.id, 1, refused, Vec::new(), entry("search", "p1".into()), &|_| String::new()).expect("finished");
    let finished = store.get_job(job.id).expect("job");
    assert_eq!((finished.state, finished.done, finished.refused), (JobState::Done, 3, 2));
    assert!(finished.finished_at.is_some());

    let by_photo = store.job_results(job.id, ResultOrder::Photo, 0, 10).expect("results");
    assert_eq!(by_photo.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), vec!["p0.jpg", "p1.jpg", "notes.txt"]);
    assert_eq!(by_photo[0].result.as_deref(), Some(format!("{{\"photo\":\"p0.jpg\",\"hit\":{}}}", hits[0].id).as_str()));
    assert_eq!((by_photo[1].status.as_str(), by_photo[1].code.as_deref()), ("refused", Some("decode_failed")));
    assert_eq!(store.job_results(job.id, ResultOrder::Photo, 1, 1).expect("page")[0].n, 1);
    assert_eq!(store.job_results(job.id, ResultOrder::BestScore, 0, 1).expect("best")[0].best_score, Some(0.5));
    let of_job = store.list_hits(&HitQuery { job: Some(job.id), limit: 10, ..HitQuery::default() }).expect("hits");
    assert_eq!(of_job.items.len(), 1);
    assert!(store.list_hits(&HitQuery { job: Some(job.id + 1), limit: 10, ..HitQuery::default() }).expect("hits").items.is_empty());
    assert_eq!(store.get_job(job.id + 1).expect_err("none").code(), "job_not_found");
}

pub(crate) fn claims_of_a_dead_runner_return_and_a_cancelled_job_is_not_claimed(store: &dyn GalleryStore) {
    let first = create(store, new_job("2026/301", "b1", None, 2));
    let second = create(store, new_job("2026/302", "b2", None, 1));
    assert_eq!(store.claim_job_photo().expect("claim").expect("work").n, 0);
    assert_eq!(store.resume_jobs("2000-01-01T00:00:00.000Z").expect("resumed"), 0, "a fresh claim is kept");
    assert_eq!(store.resume_jobs("2100-01-01T00:00:00.000Z").expect("resumed"), 1);
    assert!(store.get_job(first.id).expect("job").run_started_at.is_some());

    let before = audit_entries(store);
    let cancelled = store.cancel_job(first.id, &|job: &Job| entry("cancel_job", format!("job/{}", job.id))).expect("cancelled");
    assert_eq!((cancelled.state, audit_entries(store)), (JobState::Cancelled, before + 1));
    let next = store.claim_job_photo().expect("claim").expect("work");
    assert_eq!(next.job.id, second.id, "a cancelled job's photos are never claimed");
    let unchanged = store.cancel_job(first.id, &|job: &Job| entry("cancel_job", format!("job/{}", job.id))).expect("answered");
    assert_eq!((unchanged.state, audit_entries(store)), (JobState::Cancelled, before + 1));
}

pub(crate) fn jobs_list_newest_first_within_scope_and_expire(store: &dyn GalleryStore) {
    let all = create(store, new_job("2026/310", "c1", None, 1));
    let wanted = create(store, new_job("2026/311", "c2", Some(&["wanted"]), 1));
    let both = create(store, new_job("2026/311", "c3", Some(&["wanted", "other"]), 1));
    let ids = |query: JobQuery| store.list_jobs(&query).expect("list").items.iter().map(|j| j.id).collect::<Vec<_>>();
    let page = |limit| JobQuery { limit, ..JobQuery::default() };
    assert_eq!(ids(page(10)), vec![both.id, wanted.id, all.id]);
    assert_eq!(ids(JobQuery { case: Some("2026/311".into()), ..page(10) }), vec![both.id, wanted.id]);
    assert_eq!(ids(JobQuery { within: Some(vec!["wanted".into()]), ..page(10) }), vec![wanted.id]);
    assert_eq!(ids(JobQuery { state: Some(JobState::Done), ..page(10) }), Vec::<i64>::new());
    let first = store.list_jobs(&page(2)).expect("page");
    assert_eq!(first.next_after, Some(wanted.id));
    assert_eq!(ids(JobQuery { after: first.next_after, ..page(2) }), vec![all.id]);
    assert_eq!(store.list_jobs(&page(0)).expect_err("refused").code(), "invalid_job_query");

    // A job's hit keeps its row and loses its crop with the job; a checkpoint hit loses its crop by age alone.
    let claimed = store.claim_job_photo().expect("claim").expect("work");
    let hit = NewHit { source: HitSource::Job, job_id: Some(claimed.job.id), ..new_hit("wanted", 7, None) };
    let hits = store
        .finish_job_photo(claimed.job.id, claimed.n, done(0.4), vec![hit], entry("search", "x".into()), &|_| "{}".into())
        .expect("finished");
    assert!(store.expired_jobs("2029-12-31T00:00:00.000Z").expect("none yet").is_empty());
    let expired = store.expired_jobs("2030-01-02T00:00:00.000Z").expect("expired");
    assert_eq!(expired.len(), 3);
    store.expire_job(claimed.job.id, entry("expire_job", "job".into())).expect("expired");
    assert_eq!(store.expired_jobs("2030-01-02T00:00:00.000Z").expect("expired").len(), 2);
    let kept = store.get_hit(hits[0].id).expect("the hit stays");
    assert!(!kept.has_probe);
    assert!(store.job_results(claimed.job.id, ResultOrder::Photo, 0, 10).expect("results").is_empty());

    let (_, checkpoint) = store.record_hits(vec![new_hit("wanted", 8, None)], entry("search", "s".into())).expect("recorded");
    assert!(store.expire_hit_probes("2000-01-01T00:00:00.000Z", &|_| entry("expire_hit_probes", "h".into())).expect("none").is_empty());
    let before = audit_entries(store);
    let cleared = store.expire_hit_probes("2100-01-01T00:00:00.000Z", &|_| entry("expire_hit_probes", "h".into())).expect("cleared");
    assert_eq!((cleared, audit_entries(store)), (vec![checkpoint[0].id], before + 1));
    assert!(!store.get_hit(checkpoint[0].id).expect("kept").has_probe);
}
