//! Crash safety and graceful shutdown with a real server process: `kill -9` in the middle of enrollments loses no
//! acknowledged template; SIGTERM finishes the request in flight and saves the index.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::process::{refused_start, serve_command, spawn_server};

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

fn all_photos() -> Vec<PathBuf> {
    let mut v = Vec::new();
    for rel in common::deepface_photos() {
        v.push(common::deepface().join(rel));
    }
    v
}

/// Clients with the data directory's first keys.
struct Callers {
    admin: Client,
    enroller: Client,
    auditor: Client,
}

fn callers(data_dir: &Path) -> Callers {
    let client = |role| common::client_with(&common::cli_key(data_dir, role));
    Callers { admin: client("admin"), enroller: client("enroller"), auditor: client("auditor") }
}

async fn setup_subject(callers: &Callers, base: &str) -> i64 {
    let client = &callers.enroller;
    let r = callers.admin.post(format!("{base}/v1/watchlists")).json(&json!({ "name": "wanted", "alert_fpir": 0.01 })).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = client
        .post(format!("{base}/v1/subjects"))
        .json(&json!({ "watchlist": "wanted", "display_name": "many photos" }))
        .send()
        .await
        .unwrap();
    r.json::<Value>().await.unwrap()["id"].as_i64().unwrap()
}

async fn enroll_face(client: &Client, base: &str, subject: i64, photo: &Path) -> reqwest::Result<reqwest::Response> {
    // `face=0`: group photos are fine here, the test is about durability.
    let form = common::photo_form(&[("photo", photo)]).text("face", "0");
    client.post(format!("{base}/v1/subjects/{subject}/faces")).multipart(form).send().await
}

async fn enrolled_templates(client: &Client, base: &str, subject: i64) -> Vec<i64> {
    let faces: Value = client.get(format!("{base}/v1/subjects/{subject}/faces")).send().await.unwrap().json().await.unwrap();
    faces["items"].as_array().unwrap().iter().map(|t| t["id"].as_i64().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_enrollment_loses_no_acknowledged_template() {
    let dir = tempfile::tempdir().unwrap();
    let callers = callers(dir.path());
    let mut server = spawn_server(dir.path());
    let client = callers.enroller.clone();
    let subject = setup_subject(&callers, &server.base).await;

    // Enroll concurrently from two tasks; kill the server once several were acknowledged, while others are in flight.
    let photos = all_photos();
    let acknowledged = std::sync::Arc::new(parking_lot::Mutex::new(Vec::<i64>::new()));
    let mut tasks = Vec::new();
    for half in [0usize, 1] {
        let (client, base, acknowledged) = (client.clone(), server.base.clone(), acknowledged.clone());
        let mine: Vec<PathBuf> = photos.iter().skip(half).step_by(2).cloned().collect();
        tasks.push(tokio::spawn(async move {
            for photo in mine {
                match enroll_face(&client, &base, subject, &photo).await {
                    Ok(r) if r.status() == StatusCode::CREATED => {
                        let body: Value = r.json().await.unwrap();
                        acknowledged.lock().push(body["results"][0]["template"]["id"].as_i64().unwrap());
                    }
                    Ok(_) => {}
                    Err(_) => break, // the server is gone
                }
            }
        }));
    }
    while acknowledged.lock().len() < 6 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.child.kill().expect("SIGKILL");
    server.child.wait().unwrap();
    for t in tasks {
        t.await.unwrap();
    }
    let acknowledged = acknowledged.lock().clone();
    assert!(acknowledged.len() >= 6);

    let mut server = spawn_server(dir.path());
    let stored = enrolled_templates(&client, &server.base, subject).await;
    for id in &acknowledged {
        assert!(stored.contains(id), "acknowledged template {id} lost after kill -9 (stored: {stored:?})");
    }
    // The index file was stale (no graceful save), so it was rebuilt from the store: search sees every template.
    let ready: Value = client.get(format!("{}/readyz", server.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(ready["index"]["stats"]["live"].as_u64().unwrap() as usize, stored.len(), "{ready}");
    assert_eq!(ready["index"]["origin"], "rebuilt");
    // The audit trail's hash chain is intact after the crash.
    let audit: Value = callers.auditor.get(format!("{}/v1/audit/verify", server.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(audit["status"], "intact", "{audit}");
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

/// A models folder whose manifests name the checkout's model files, with the default recognizer's mirror
/// augmentation switched on: the same model id and file, but templates of another kind.
fn models_with_the_recognizer_changed(dir: &Path) {
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    for entry in std::fs::read_dir(&models).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let mut text = String::new();
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            let line = match line.strip_prefix("file = \"") {
                Some(file) => format!("file = \"{}\"", models.join(file.trim_end_matches('"')).display()),
                None => line.to_string(),
            };
            text.push_str(&line);
            text.push('\n');
        }
        if path.file_stem().unwrap() == "face-reid-retail-0095" {
            assert!(text.contains("flip_augmentation = false"), "the default recognizer's manifest changed");
            text = text.replace("flip_augmentation = false", "flip_augmentation = true");
        }
        std::fs::write(dir.join(path.file_name().unwrap()), text).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_model_set_up_is_refused_and_its_gallery_kept() {
    let dir = tempfile::tempdir().unwrap();
    let callers = callers(dir.path());
    let mut server = spawn_server(dir.path());
    let client = callers.enroller.clone();
    let subject = setup_subject(&callers, &server.base).await;
    let photo = &all_photos()[0];
    assert_eq!(enroll_face(&client, &server.base, subject, photo).await.unwrap().status(), StatusCode::CREATED);
    server.child.kill().unwrap();
    server.child.wait().unwrap();

    // Same model id, templates of another kind: the service must not start and mix them with the enrolled one.
    let models = tempfile::tempdir().unwrap();
    models_with_the_recognizer_changed(models.path());
    let mut refused = serve_command(dir.path());
    refused.env("FACEMATCH_MODELS__DIR", models.path());
    let stderr = refused_start(refused);
    assert!(stderr.contains("another set-up of this model"), "{stderr}");

    // The original set-up still starts, with the enrolled template.
    let mut server = spawn_server(dir.path());
    assert_eq!(enrolled_templates(&client, &server.base, subject).await.len(), 1);
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_the_request_in_flight_and_saves_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let callers = callers(dir.path());
    let mut server = spawn_server(dir.path());
    let client = callers.enroller.clone();
    let subject = setup_subject(&callers, &server.base).await;
    let photo = common::deepface().join("id09/img40.jpg");
    let in_flight = {
        let (client, base, photo) = (client.clone(), server.base.clone(), photo.clone());
        tokio::spawn(async move { enroll_face(&client, &base, subject, &photo).await })
    };
    // SIGTERM only once the server has the enrollment in hand, so the test is about draining, not about timing.
    loop {
        let line = server.log.recv_timeout(Duration::from_secs(120)).expect("the server logs the request");
        if line.contains("request started") && line.contains("/faces") {
            break;
        }
    }
    let status = Command::new("kill").args(["-TERM", &server.child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let response = in_flight.await.unwrap().expect("the in-flight request is answered");
    assert_eq!(response.status(), StatusCode::CREATED);
    let exit = server.child.wait().unwrap();
    assert!(exit.success(), "graceful exit: {exit:?}");

    let mut server = spawn_server(dir.path());
    let ready: Value = client.get(format!("{}/readyz", server.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(ready["index"]["origin"], "loaded", "{ready}");
    assert_eq!(ready["index"]["stats"]["live"], 1);
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}
