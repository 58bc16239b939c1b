//! The web console in a real browser: headless Debian Chromium, driven by playwright-core (tests/browser), against
//! a real server on loopback with real models and photos. An officer and two investigators sign in with their keys;
//! a search shows the right candidate first; a checkpoint alert arrives live and is acknowledged; a job is
//! submitted and watched to its end; one of its hits is confirmed by two reviewers and exported. Screenshots of
//! each step are saved under `target/console-screenshots/`. Needs `scripts/setup.sh` (chromium, node packages):
//! without them the test fails, it does not skip.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{photo_form, TestServer};
use facematch::http::ServerConfig;
use facematch::service::Role;
use serde_json::{json, Value};

const CHROMIUM: &str = "/usr/bin/chromium";

fn key(server: &TestServer, name: &str, role: Role) -> String {
    common::named_key(server, name, role, None)
}

/// Enrolls the first photo of each deepface identity as a subject `Person NN` of `wanted` (the photo of id05 that the
/// alert test expects); returns how many were enrolled.
async fn enroll_gallery(server: &TestServer) -> usize {
    let admin = server.client(Role::Admin);
    let r = admin.post(server.url("/v1/watchlists")).json(&json!({ "name": "wanted", "alert_fpir": 0.003 })).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let enroller = server.client(Role::Enroller);
    let mut enrolled = 0;
    for n in 1..=13 {
        let id = format!("id{n:02}");
        let dir = common::deepface().join(&id);
        let mut photos: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
        photos.sort();
        let photo = if id == "id05" { dir.join("img14.jpg") } else { photos[0].clone() };
        let body = json!({ "watchlist": "wanted", "display_name": format!("Person {n:02}"), "external_ref": format!("N-{n:03}") });
        let subject: Value = enroller.post(server.url("/v1/subjects")).json(&body).send().await.unwrap().json().await.unwrap();
        let url = server.url(&format!("/v1/subjects/{}/faces", subject["id"]));
        let r = enroller.post(url).multipart(photo_form(&[("photo", &photo)])).send().await.unwrap();
        if r.status() == 201 {
            enrolled += 1;
        } else {
            assert_ne!(id, "id05", "the alert's subject must enroll: {}", r.text().await.unwrap());
        }
    }
    enrolled
}

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn officers_and_investigators_work_through_the_console() {
    assert!(Path::new(CHROMIUM).exists(), "{CHROMIUM} is missing: scripts/setup.sh installs Debian's chromium");
    let runner = browser_dir().join("node_modules/playwright-core");
    assert!(runner.exists(), "{} is missing: scripts/setup.sh runs npm ci in tests/browser", runner.display());

    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), ServerConfig::default());
    let enrolled = enroll_gallery(&server).await;
    assert!(enrolled >= 10, "only {enrolled} of 13 enrolled");
    let keys = json!({
        "officer": key(&server, "Officer Ana", Role::Checkpoint),
        "desk": key(&server, "Officer Ben", Role::Checkpoint),
        "first": key(&server, "Examiner Carla", Role::Investigator),
        "second": key(&server, "Examiner Dev", Role::Investigator),
        "enroller": key(&server, "Enroller Eve", Role::Enroller),
    });
    let faces = common::deepface();
    let photos = json!({
        "probe": faces.join("id05/img15.jpg"),
        "probe_name": "Person 05",
        "job": [faces.join("id05/img13.jpg"), faces.join("id02/img27.jpg"), faces.join("id07/img30.jpg"), faces.join("id09/img39.jpg")],
        "enroll": faces.join("id08/img35.jpg"),
    });
    let screenshots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
    std::fs::create_dir_all(&screenshots).unwrap();
    let downloads = dir.path().join("downloads");
    std::fs::create_dir_all(&downloads).unwrap();

    let base = server.url("");
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(browser_dir().join("console.mjs"))
            .env("FACEMATCH_URL", base)
            .env("FACEMATCH_KEYS", keys.to_string())
            .env("FACEMATCH_PHOTOS", photos.to_string())
            .env("CHROMIUM", CHROMIUM)
            .env("SCREENSHOTS", &screenshots)
            .env("DOWNLOADS", &downloads)
            .output()
            .expect("node runs (scripts/setup.sh installs it)")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(output.status.success(), "the browser steps failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("all steps passed"), "{stdout}");

    // What the browser did is on record in the core: the second reviewer's decision confirmed the hit.
    let auditor = server.client(Role::Auditor);
    let trail: Value = auditor.get(server.url("/v1/audit?action=review_hit")).send().await.unwrap().json().await.unwrap();
    let actors: Vec<&str> = trail["items"].as_array().unwrap().iter().filter_map(|e| e["actor"].as_str()).collect();
    for reviewer in ["Examiner Carla (", "Examiner Dev ("] {
        assert!(actors.iter().any(|actor| actor.starts_with(reviewer)), "{reviewer} is not in {actors:?}");
    }
}
