//! Moving a gallery to another recognizer on a real server with real models and photos: a gallery enrolled with
//! the default model is migrated to `dlib-resnet-v1` while the default serves, the template whose face was not kept
//! is listed and holds the switch until an admin accepts it, and afterwards the same people are found; the server
//! restarts on the new model and refuses the old one; the CLI moves it back. A migration stopped with its server
//! resumes on the next start and remakes every face exactly once.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{photo_form, TestServer};
use facematch::http::ServerConfig;
use facematch::service::{AlertsConfig, GalleryConfig, JobsConfig, Role};
use reqwest::StatusCode;
use serde_json::{json, Value};

const DEFAULT: &str = "face-reid-retail-0095";
const DLIB: &str = "dlib-resnet-v1";

/// The first `n` lfw-dev people (by name) with at least `photos` photos, each with their photos in name order.
fn people(n: usize, photos: usize) -> Vec<(String, Vec<PathBuf>)> {
    let root = common::shared_dir().join("faces").join("lfw-dev");
    let mut names: Vec<_> = std::fs::read_dir(&root).expect("lfw-dev").map(|e| e.unwrap().path()).filter(|p| p.is_dir()).collect();
    names.sort();
    names
        .into_iter()
        .filter_map(|dir| {
            let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
            files.sort();
            (files.len() >= photos).then(|| (dir.file_name().unwrap().to_string_lossy().into_owned(), files))
        })
        .take(n)
        .collect()
}

fn gallery(dir: &std::path::Path, keep_faces: bool) -> GalleryConfig {
    GalleryConfig { data_dir: dir.to_path_buf(), keep_enrolment_faces: keep_faces, ..Default::default() }
}

fn start(recognizer: &str, gallery: GalleryConfig, pause_ms: u64) -> TestServer {
    let jobs = JobsConfig { pause_ms, ..Default::default() };
    TestServer::start_serving(recognizer, gallery, ServerConfig::default(), common::test_access(), jobs, AlertsConfig::default())
}

async fn json_of(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn new_subject(server: &TestServer, name: &str) -> i64 {
    let body = json!({ "watchlist": "wanted", "display_name": name });
    let (status, subject) = json_of(server.client(Role::Enroller).post(server.url("/v1/subjects")).json(&body).send().await.unwrap()).await;
    assert_eq!(status, 201, "{subject}");
    subject["id"].as_i64().unwrap()
}

async fn enroll(server: &TestServer, subject: i64, photo: &std::path::Path) {
    let (status, body) = try_enroll(server, subject, photo).await;
    assert_eq!(status, 201, "enrol {}: {body}", photo.display());
}

/// Enrols the photo's best-scored face (lfw-dev photos may show others beside the person).
async fn try_enroll(server: &TestServer, subject: i64, photo: &std::path::Path) -> (StatusCode, Value) {
    let form = photo_form(&[("photo", photo)]).text("face", "0");
    let url = server.url(&format!("/v1/subjects/{subject}/faces"));
    json_of(server.client(Role::Enroller).post(url).multipart(form).send().await.unwrap()).await
}

/// The best candidate of an investigation-mode search of `photo`: (model id, subject id, similarity).
async fn best(server: &TestServer, photo: &std::path::Path) -> (String, i64, f64) {
    let form = photo_form(&[("photo", photo)]).text("mode", "investigation").text("k", "1");
    let (status, body) = json_of(server.client(Role::Investigator).post(server.url("/v1/search")).multipart(form).send().await.unwrap()).await;
    assert_eq!(status, 200, "{body}");
    let candidate = &body["faces"][0]["candidates"][0];
    (body["model_id"].as_str().unwrap().to_owned(), candidate["subject_id"].as_i64().unwrap(), candidate["similarity"].as_f64().unwrap())
}

async fn serving(server: &TestServer) -> String {
    let (_, ready) = json_of(reqwest::get(server.url("/readyz")).await.unwrap()).await;
    ready["model"].as_str().unwrap().to_owned()
}

/// Polls the migration until it leaves `running` (or `until` says), within two minutes.
async fn wait_for(server: &TestServer, id: i64, until: impl Fn(&Value) -> bool) -> Value {
    let admin = server.client(Role::Admin);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (status, report) = json_of(admin.get(server.url(&format!("/v1/models/migrations/{id}"))).send().await.unwrap()).await;
        assert_eq!(status, 200, "{report}");
        if until(&report) {
            return report;
        }
        assert!(Instant::now() < deadline, "the migration did not get there in time: {report}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gallery_moves_to_another_model_and_finds_the_same_people() {
    let dir = tempfile::tempdir().unwrap();
    let people = people(12, 2);

    // One subject enrolled while the gallery kept no faces: the migration cannot remake it.
    let server = start(DEFAULT, gallery(dir.path(), false), 0);
    let admin = server.client(Role::Admin);
    assert_eq!(admin.post(server.url("/v1/watchlists")).json(&json!({ "name": "wanted" })).send().await.unwrap().status(), 201);
    let (faceless_name, faceless_photos) = &people[0];
    let faceless = new_subject(&server, faceless_name).await;
    enroll(&server, faceless, &faceless_photos[0]).await;
    server.stop();

    let server = start(DEFAULT, gallery(dir.path(), true), 0);
    let mut subjects = vec![faceless];
    for (name, photos) in &people[1..] {
        let id = new_subject(&server, name).await;
        enroll(&server, id, &photos[0]).await;
        subjects.push(id);
    }
    let mut before = Vec::new();
    for (person, _) in people.iter().enumerate() {
        let (model, found, _) = best(&server, &people[person].1[1]).await;
        assert_eq!(model, DEFAULT);
        before.push(found);
    }
    let right = before.iter().zip(&subjects).filter(|(found, subject)| found == subject).count();
    assert!(right >= 11, "the default model finds {right} of 12 people: the test's photos are not what it assumes");

    let admin = server.client(Role::Admin);
    let (status, started) = json_of(admin.post(server.url("/v1/models/migrations")).json(&json!({ "to": DLIB })).send().await.unwrap()).await;
    assert_eq!(status, 202, "{started}");
    assert_eq!((started["from_model"].as_str(), started["to_model"].as_str()), (Some(DEFAULT), Some(DLIB)));
    let id = started["id"].as_i64().unwrap();
    let again = admin.post(server.url("/v1/models/migrations")).json(&json!({ "to": DLIB })).send().await.unwrap();
    let (status, refused) = json_of(again).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("migration_in_progress")));

    // Every kept face is remade; the subject without one holds the switch, and the default model serves meanwhile.
    let report = wait_for(&server, id, |r| r["migration"]["state"] != "running").await;
    let migration = &report["migration"];
    assert_eq!(migration["state"], "ready", "{report}");
    let progress = &migration["progress"];
    let failures = report["failures"]["items"].as_array().unwrap();
    // The new model's own alignment decides its quality figures: a face it finds too blurred is listed, not dropped.
    let refused: Vec<i64> = failures.iter().filter(|f| f["code"] == "poor_quality").map(|f| f["subject_id"].as_i64().unwrap()).collect();
    let faceless_listed: Vec<&Value> = failures.iter().filter(|f| f["code"] == "no_face_kept").collect();
    assert_eq!(refused.len() + faceless_listed.len(), failures.len(), "{report}");
    assert!(refused.len() <= 2, "dlib refuses {} of 11 faces: {report}", refused.len());
    assert_eq!(progress["faces"].as_u64(), Some(11));
    assert_eq!(progress["done"].as_u64(), Some(11 - refused.len() as u64), "{report}");
    assert_eq!(progress["failed"].as_u64(), Some(refused.len() as u64));
    assert_eq!(progress["without_face"].as_u64(), Some(1));
    assert_eq!(progress["subjects_without_template"].as_u64(), Some(1 + refused.len() as u64), "one face each");
    assert_eq!(faceless_listed.len(), 1, "{report}");
    assert_eq!(faceless_listed[0]["subject_id"].as_i64(), Some(faceless));
    assert_eq!(faceless_listed[0]["display_name"].as_str(), Some(faceless_name.as_str()));
    assert_eq!(serving(&server).await, DEFAULT);
    assert_eq!(best(&server, &people[3].1[1]).await.0, DEFAULT);

    let (status, switched) = json_of(admin.post(server.url(&format!("/v1/models/migrations/{id}/switch"))).send().await.unwrap()).await;
    assert_eq!((status, switched["state"].as_str()), (StatusCode::OK, Some("switched")), "{switched}");
    assert_eq!(serving(&server).await, DLIB);
    for (person, (name, photos)) in people.iter().enumerate().skip(1).filter(|(p, _)| !refused.contains(&subjects[*p])) {
        let (model, found, _) = best(&server, &photos[1]).await;
        assert_eq!(model, DLIB);
        if before[person] == subjects[person] {
            assert_eq!(found, subjects[person], "{name}: found by the default model, not after the move to dlib");
        }
        // A template made from the kept face is the one an enrolment of the photo with dlib would make.
        let (_, itself, similarity) = best(&server, &photos[0]).await;
        assert_eq!(itself, subjects[person]);
        assert!(similarity >= 0.99, "{name}: the enrolled photo matches its migrated template at {similarity:.4} only");
    }
    let subject: Value = server.client(Role::Enroller).get(server.url(&format!("/v1/subjects/{}", subjects[1]))).send().await.unwrap().json().await.unwrap();
    assert_eq!(subject["template_count"], 1, "listings show the serving model's templates: {subject}");
    let audit: Value = server.client(Role::Auditor).get(server.url("/v1/audit?per_page=1000")).send().await.unwrap().json().await.unwrap();
    let actions: Vec<&str> = audit["items"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    for action in ["start_migration", "migrate_faces", "hold_migration", "switch_model"] {
        assert!(actions.contains(&action), "no {action} in the audit trail");
    }
    let auditor_key = server.key(Role::Auditor).to_owned();
    server.stop();

    // An auditor verifies the trail whatever model the command line's configuration names.
    let verified = std::process::Command::new(env!("CARGO_BIN_EXE_facematch"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["audit", "verify", "--data-dir"])
        .arg(dir.path())
        .env("FACEMATCH_API_KEY", &auditor_key)
        .env("FACEMATCH_LOG", "warn")
        .output()
        .expect("facematch runs");
    let verdict = String::from_utf8_lossy(&verified.stdout);
    assert!(verified.status.success() && verdict.contains("\"intact\""), "{verdict}{}", String::from_utf8_lossy(&verified.stderr));

    // The gallery serves dlib from now on: the server starts on it, and refuses the old model with a clear error.
    let refused = facematch::service::WatchlistService::open(
        std::sync::Arc::new(common::pipeline(DEFAULT)),
        gallery(dir.path(), true),
        common::config_for(DEFAULT).quality,
    )
    .err()
    .expect("the old model is refused");
    assert_eq!(refused.code(), "serving_model_differs", "{refused}");
    let server = start(DLIB, gallery(dir.path(), true), 0);
    assert_eq!(best(&server, &people[5].1[1]).await.1, subjects[5]);

    // And back with the command line: the default model's templates are all there, so it switches at once.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_facematch"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["models", "migrate", "--to", DEFAULT, "--purpose", "move back", "--server", &server.base, "--key"])
        .arg(server.key(Role::Admin))
        .env("FACEMATCH_LOG", "warn")
        .output()
        .expect("facematch runs");
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "models migrate failed:\n{stdout}\n{stderr}");
    let back: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!((back["state"].as_str(), back["to_model"].as_str()), (Some("switched"), Some(DEFAULT)));
    assert!(stderr.contains("models.recognizer = \"face-reid-retail-0095\""), "{stderr}");
    assert_eq!(serving(&server).await, DEFAULT);
    assert_eq!(best(&server, &people[0].1[1]).await.1, faceless, "the default model's templates were kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_stopped_with_its_server_resumes_and_remakes_each_face_once() {
    let dir = tempfile::tempdir().unwrap();
    // Three batches of faces, and a rest between batches long enough to stop the server after the first.
    let server = start(DEFAULT, gallery(dir.path(), true), 1500);
    let admin = server.client(Role::Admin);
    assert_eq!(admin.post(server.url("/v1/watchlists")).json(&json!({ "name": "wanted" })).send().await.unwrap().status(), 201);
    let people = people(20, 2);
    let mut enrolled = 0;
    for (name, photos) in &people {
        let id = new_subject(&server, name).await;
        for photo in &photos[..2] {
            let (status, body) = try_enroll(&server, id, photo).await;
            match status {
                StatusCode::CREATED => enrolled += 1,
                _ => assert_eq!(body["error"]["code"], "poor_quality", "{}: {body}", photo.display()),
            }
        }
    }
    assert!(enrolled > 32, "only {enrolled} of 40 photos enrolled: more than two batches are needed");
    // Gaps accepted: a subject whose faces dlib refuses does not hold the switch this test is about.
    let body = json!({ "to": DLIB, "accept_gaps": true });
    let (status, started) = json_of(admin.post(server.url("/v1/models/migrations")).json(&body).send().await.unwrap()).await;
    assert_eq!(status, 202, "{started}");
    let id = started["id"].as_i64().unwrap();
    let midway = wait_for(&server, id, |r| r["migration"]["progress"]["done"].as_u64() > Some(0)).await;
    assert_eq!(midway["migration"]["state"], "running", "{midway}");
    server.stop();

    let server = start(DEFAULT, gallery(dir.path(), true), 0);
    let report = wait_for(&server, id, |r| r["migration"]["state"] != "running").await;
    let progress = &report["migration"]["progress"];
    assert_eq!(report["migration"]["state"], "switched", "{report}");
    let (done, failed) = (progress["done"].as_u64().unwrap(), progress["failed"].as_u64().unwrap());
    assert_eq!((progress["faces"].as_u64(), done + failed), (Some(enrolled), enrolled), "{report}");
    let audit: Value = server.client(Role::Auditor).get(server.url("/v1/audit?per_page=1000&action=migrate_faces")).send().await.unwrap().json().await.unwrap();
    let entries = audit["items"].as_array().unwrap();
    assert!(entries.len() >= 3, "three batches or more: {}", entries.len());
    let remade: u64 = entries.iter().map(|e| e["details"]["templates"].as_u64().unwrap()).sum();
    assert_eq!(remade, done, "every face remade exactly once across the restart");
    assert_eq!(serving(&server).await, DLIB, "the switch happened on the server that finished the migration");
    let stats: Value = admin_stats(&server).await;
    assert_eq!(stats["index"]["stats"]["live"].as_u64(), Some(done), "{stats}");
}

async fn admin_stats(server: &TestServer) -> Value {
    server.client(Role::Admin).get(server.url("/v1/stats")).send().await.unwrap().json().await.unwrap()
}
