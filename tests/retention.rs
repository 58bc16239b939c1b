//! Retention and erasure on a real server: a subject past its watchlist's retention period is deleted by the sweep
//! with its templates, thumbnails and kept face regions — no search finds it, nothing of it is left in the database
//! file — the sweep is audited, and the audit trail still answers who was on the watchlist before.

mod common;

use std::time::{Duration, SystemTime};

use common::{photo_form, TestServer};
use facematch::http::ServerConfig;
use facematch::service::{Principal, Role};
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn top_candidate(server: &TestServer, probe: &str) -> Option<i64> {
    let form = photo_form(&[("photo", &common::deepface().join(probe))]).text("mode", "investigation").text("k", "1");
    let r = server.client(Role::Investigator).post(server.url("/v1/search")).multipart(form).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let result: Value = r.json().await.unwrap();
    result["faces"][0]["candidates"][0]["subject_id"].as_i64()
}

fn rows(db: &rusqlite::Connection, sql: &str, subject: i64) -> i64 {
    db.query_row(sql, [subject], |r| r.get(0)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_subjects_are_erased_everywhere_and_the_trail_remembers_them() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), ServerConfig::default());
    let admin = server.client(Role::Admin);
    let enroller = server.client(Role::Enroller);
    for (name, retention) in [("wanted", json!(null)), ("missing", json!(30))] {
        let body = json!({ "name": name, "retention_days": retention });
        assert_eq!(admin.post(server.url("/v1/watchlists")).json(&body).send().await.unwrap().status(), 201);
    }
    let mut subjects = Vec::new();
    for (watchlist, photo) in [("wanted", "id05/img14.jpg"), ("missing", "id08/img34.jpg")] {
        let body = json!({ "watchlist": watchlist, "display_name": format!("on {watchlist}") });
        let subject: Value = enroller.post(server.url("/v1/subjects")).json(&body).send().await.unwrap().json().await.unwrap();
        let id = subject["id"].as_i64().unwrap();
        let form = photo_form(&[("photo", &common::deepface().join(photo))]);
        let r = enroller.post(server.url(&format!("/v1/subjects/{id}/faces"))).multipart(form).send().await.unwrap();
        assert_eq!(r.status(), 201);
        subjects.push(id);
    }
    let (kept, expiring) = (subjects[0], subjects[1]);
    assert_eq!(top_candidate(&server, "id05/img15.jpg").await, Some(kept));
    assert_eq!(top_candidate(&server, "id08/img35.jpg").await, Some(expiring));
    let enrolled_at = SystemTime::now();

    // Changing a retention period is the admin's, and audited.
    let r = enroller.patch(server.url("/v1/watchlists/missing")).json(&json!({ "retention_days": 1 })).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = admin.patch(server.url("/v1/watchlists/missing")).json(&json!({ "retention_days": 0 })).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let watchlist: Value =
        admin.patch(server.url("/v1/watchlists/missing")).json(&json!({ "retention_days": 10 })).send().await.unwrap().json().await.unwrap();
    assert_eq!(watchlist["retention_days"], 10);

    // Nothing has expired yet; eleven days on, the subject of `missing` has, and only it.
    let system = Principal::system("retention sweep");
    assert!(server.service.expire_subjects(SystemTime::now(), &system).unwrap().is_empty());
    let later = SystemTime::now() + Duration::from_secs(11 * 86_400);
    let expired = server.service.expire_subjects(later, &system).unwrap();
    assert_eq!(expired.iter().map(|e| e.subject_id).collect::<Vec<_>>(), vec![expiring]);
    assert!(server.service.expire_subjects(later, &system).unwrap().is_empty(), "a second sweep finds nothing left");

    // Gone from search, from the records and from the thumbnails; the other subject is untouched.
    assert_ne!(top_candidate(&server, "id08/img35.jpg").await, Some(expiring));
    assert_eq!(top_candidate(&server, "id05/img15.jpg").await, Some(kept));
    let investigator = server.client(Role::Investigator);
    let r = investigator.get(server.url(&format!("/v1/subjects/{expiring}"))).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let db = rusqlite::Connection::open(server.data_dir.join("gallery.sqlite3")).unwrap();
    assert_eq!(rows(&db, "SELECT count(*) FROM template WHERE subject_id = ?1", expiring), 0);
    assert_eq!(rows(&db, "SELECT count(*) FROM subject WHERE id = ?1", expiring), 0);
    assert_eq!(rows(&db, "SELECT count(*) FROM face WHERE subject_id = ?1", expiring), 0, "its kept face region went too");
    let thumbnails: i64 = db
        .query_row("SELECT count(*) FROM thumbnail WHERE template_id NOT IN (SELECT id FROM template)", [], |r| r.get(0))
        .unwrap();
    assert_eq!(thumbnails, 0, "no thumbnail outlives its template");
    assert_eq!(rows(&db, "SELECT count(*) FROM template WHERE subject_id = ?1", kept), 1);
    assert_eq!(rows(&db, "SELECT count(*) FROM face WHERE subject_id = ?1", kept), 1, "enrolment faces are kept by default");

    // The sweep is in the trail, by the system, naming the watchlist and its retention.
    let auditor = server.client(Role::Auditor);
    let page: Value = auditor
        .get(server.url(&format!("/v1/audit?action=expire_subject&subject={expiring}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["total"], 1, "{page}");
    let entry = &page["items"][0];
    assert_eq!((entry["role"].as_str(), entry["details"]["watchlist"].as_str()), (Some("system"), Some("missing")));
    assert_eq!(entry["details"]["retention_days"], 10);

    // Who was on `missing` while the subject was enrolled, and after it expired: answered from the trail.
    let on = |t: SystemTime| humantime::format_rfc3339_millis(t).to_string();
    let members = |report: &Value| -> Vec<i64> {
        report["subjects"].as_array().unwrap().iter().map(|s| s["subject_id"].as_i64().unwrap()).collect()
    };
    let url = |t: SystemTime| server.url(&format!("/v1/audit/membership?watchlist=missing&on={}", on(t)));
    let then: Value = auditor.get(url(enrolled_at)).send().await.unwrap().json().await.unwrap();
    assert_eq!(members(&then), vec![expiring], "{then}");
    let now: Value = auditor.get(url(SystemTime::now() + Duration::from_secs(60))).send().await.unwrap().json().await.unwrap();
    assert!(members(&now).is_empty(), "{now}");
    let before: Value = auditor.get(url(enrolled_at - Duration::from_secs(3600))).send().await.unwrap().json().await.unwrap();
    assert!(members(&before).is_empty(), "{before}");
    let r = investigator.get(url(enrolled_at)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "only auditors replay the trail");

    // A deletion by an enroller erases just as completely.
    let r = enroller.delete(server.url(&format!("/v1/subjects/{kept}"))).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_ne!(top_candidate(&server, "id05/img15.jpg").await, Some(kept));
    assert_eq!(rows(&db, "SELECT count(*) FROM template WHERE subject_id = ?1", kept), 0);
    assert_eq!(rows(&db, "SELECT count(*) FROM face WHERE subject_id = ?1", kept), 0);
    let verdict: Value = auditor.get(server.url("/v1/audit/verify")).send().await.unwrap().json().await.unwrap();
    assert_eq!(verdict["status"], "intact", "{verdict}");
}
