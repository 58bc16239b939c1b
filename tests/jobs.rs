//! Investigators' bulk search jobs on a real server with real models and photos: a zip of enrolled people,
//! strangers and hostile members is searched with per-member refusals, its hits name the job, its results agree as
//! JSON lines and CSV; a job is cancelled between photos; a job stopped with its server resumes on the next one
//! without searching a photo twice; and a job past its retention is swept, its hits kept without their crops.

mod common;

use std::io::Write;
use std::time::{Duration, Instant, SystemTime};

use common::{photo_form, TestServer};
use facematch::http::ServerConfig;
use facematch::service::{GalleryConfig, JobsConfig, Principal, Role};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use zip::write::SimpleFileOptions;

fn photo(path: &str) -> Vec<u8> {
    std::fs::read(common::deepface().join(path)).unwrap()
}

/// A zip of `(name, bytes)` members, deflated, with one directory entry.
fn zip_of(members: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    writer.add_directory("folder/", options).unwrap();
    for (name, bytes) in members {
        writer.start_file(*name, options).unwrap();
        writer.write_all(bytes).unwrap();
    }
    writer.finish().unwrap().into_inner()
}

async fn json_of(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Watchlist `wanted` with Jane (id05) and John (id08) enrolled; returns their subject ids.
async fn gallery(server: &TestServer) -> (i64, i64) {
    let admin = server.client(Role::Admin);
    assert_eq!(admin.post(server.url("/v1/watchlists")).json(&json!({ "name": "wanted" })).send().await.unwrap().status(), 201);
    let enroller = server.client(Role::Enroller);
    let mut ids = Vec::new();
    for (name, enrolled) in [("Jane Roe", "id05/img14.jpg"), ("John Doe", "id08/img34.jpg")] {
        let body = json!({ "watchlist": "wanted", "display_name": name });
        let (_, subject) = json_of(enroller.post(server.url("/v1/subjects")).json(&body).send().await.unwrap()).await;
        let id = subject["id"].as_i64().unwrap();
        let form = photo_form(&[("photo", &common::deepface().join(enrolled))]);
        let r = enroller.post(server.url(&format!("/v1/subjects/{id}/faces"))).multipart(form).send().await.unwrap();
        assert_eq!(r.status(), 201);
        ids.push(id);
    }
    (ids[0], ids[1])
}

async fn submit(server: &TestServer, client: &Client, archive: Vec<u8>, case: &str) -> Value {
    let part = reqwest::multipart::Part::bytes(archive).file_name("photos.zip");
    let form = reqwest::multipart::Form::new().text("case", case.to_owned()).part("archive", part);
    let (status, job) = json_of(client.post(server.url("/v1/jobs")).multipart(form).send().await.unwrap()).await;
    assert_eq!(status, 202, "{job}");
    job
}

/// Polls the job until `done` says so (or fails after two minutes).
async fn wait_for(server: &TestServer, client: &Client, id: i64, done: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        let (status, job) = json_of(client.get(server.url(&format!("/v1/jobs/{id}"))).send().await.unwrap()).await;
        assert_eq!(status, 200, "{job}");
        if done(&job) {
            return job;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "job {id} did not get there: {job}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn audit(server: &TestServer) -> Vec<Value> {
    let auditor = server.client(Role::Auditor);
    let page: Value = auditor.get(server.url("/v1/audit?per_page=1000")).send().await.unwrap().json().await.unwrap();
    page["items"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zip_job_is_searched_with_refusals_per_member_and_its_results_agree() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), ServerConfig::default());
    let (jane, john) = gallery(&server).await;
    let investigator = server.client(Role::Investigator);

    let inner = zip_of(&[("x.jpg", photo("id05/img15.jpg"))]);
    let archive = zip_of(&[
        ("folder/jane.jpg", photo("id05/img15.jpg")),
        ("jane-again.jpg", photo("id05/img13.jpg")),
        ("john.jpg", photo("id08/img35.jpg")),
        ("stranger-1.jpg", photo("id01/img1.jpg")),
        ("stranger-2.jpg", photo("id02/img26.jpg")),
        ("../evil.jpg", photo("id05/img15.jpg")),
        ("inner.zip", inner.clone()),
        ("sneaky.jpg", inner),
        ("notes.txt", b"not a photo at all".to_vec()),
        ("bomb.jpg", vec![0u8; 40 << 20]),
    ]);
    let job = submit(&server, &investigator, archive, "2026/300").await;
    let id = job["id"].as_i64().unwrap();
    assert_eq!((job["case"].as_str(), job["k"].as_u64(), job["total"].as_u64()), (Some("2026/300"), Some(5), Some(10)), "{job}");
    assert_eq!(job["submitted_by"]["name"], "test investigator");
    let codes: std::collections::BTreeMap<String, String> = job["refusals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["photo"].as_str().unwrap().to_owned(), r["code"].as_str().unwrap().to_owned()))
        .collect();
    let expected: std::collections::BTreeMap<String, String> = [
        ("../evil.jpg", "unsafe_path"),
        ("inner.zip", "nested_archive"),
        ("sneaky.jpg", "nested_archive"),
        ("notes.txt", "not_an_image"),
        ("bomb.jpg", "too_large"),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_owned(), b.to_owned()))
    .collect();
    assert_eq!(codes, expected);
    let bombs: Vec<_> = std::fs::read_dir(dir.path().join("jobs")).unwrap().flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap()).collect();
    assert_eq!(bombs.len(), 5, "only the five photos are kept on disk");

    let job = wait_for(&server, &investigator, id, |job| job["state"] == "done").await;
    assert_eq!((job["done"].as_u64(), job["refused"].as_u64()), (Some(10), Some(5)), "{job}");
    assert!(job["faces"].as_u64().unwrap() >= 5 && job["finished_at"].is_string() && job["eta_s"].is_null(), "{job}");

    // Hits name the job, and Jane's photo made one on Jane.
    let (status, hits) = json_of(investigator.get(server.url(&format!("/v1/hits?job={id}"))).send().await.unwrap()).await;
    assert_eq!(status, 200);
    let hits = hits["items"].as_array().unwrap().clone();
    assert_eq!(hits.len() as u64, job["hits"].as_u64().unwrap());
    assert!(hits.iter().all(|h| h["source"] == "job" && h["job_id"] == id && h["case"] == "2026/300" && h["has_probe"] == true));
    assert!(hits.iter().any(|h| h["subject_id"] == jane), "{hits:?}");
    let (_, others) = json_of(investigator.get(server.url(&format!("/v1/hits?job={}", id + 1))).send().await.unwrap()).await;
    assert_eq!(others["items"], json!([]));

    // JSON lines: one per photo, the right subject first, hit ids as the hits say.
    let text = investigator.get(server.url(&format!("/v1/jobs/{id}/results"))).send().await.unwrap().text().await.unwrap();
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 10);
    let line = |name: &str| lines.iter().find(|l| l["photo"] == name).unwrap_or_else(|| panic!("no line for {name}"));
    for (name, subject) in [("folder/jane.jpg", jane), ("jane-again.jpg", jane), ("john.jpg", john)] {
        let first = &line(name)["faces"][0]["candidates"][0];
        assert_eq!(first["subject_id"], subject, "{name}: {}", line(name));
        assert!(line(name)["faces"][0]["box"]["width"].as_f64().unwrap() > 10.0);
    }
    assert_eq!((line("notes.txt")["status"].as_str(), line("notes.txt")["code"].as_str()), (Some("refused"), Some("not_an_image")));
    let mut hit_ids_in_lines: Vec<i64> = lines
        .iter()
        .flat_map(|l| l["faces"].as_array().unwrap().iter().flat_map(|f| f["candidates"].as_array().unwrap().iter()))
        .filter_map(|c| c["hit_id"].as_i64())
        .collect();
    hit_ids_in_lines.sort_unstable();
    let mut hit_ids: Vec<i64> = hits.iter().map(|h| h["id"].as_i64().unwrap()).collect();
    hit_ids.sort_unstable();
    assert_eq!(hit_ids_in_lines, hit_ids);

    // CSV: one row per candidate, the same candidates.
    let csv = investigator.get(server.url(&format!("/v1/jobs/{id}/results?format=csv"))).send().await.unwrap().text().await.unwrap();
    let mut rows = csv.lines();
    assert_eq!(rows.next(), Some("photo,status,code,face,rank,watchlist,subject_id,display_name,similarity,fpir,hit_id"));
    let mut from_csv: Vec<(String, String)> = rows
        .map(|r| r.split(',').map(str::to_owned).collect::<Vec<_>>())
        .filter(|f| !f[6].is_empty())
        .map(|f| (f[0].clone(), f[6].clone()))
        .collect();
    let mut from_lines: Vec<(String, String)> = lines
        .iter()
        .flat_map(|l| {
            let photo = l["photo"].as_str().unwrap().to_owned();
            l["faces"].as_array().unwrap().iter().flat_map(move |f| {
                let photo = photo.clone();
                f["candidates"].as_array().unwrap().iter().map(move |c| (photo.clone(), c["subject_id"].to_string()))
            })
        })
        .collect();
    from_csv.sort();
    from_lines.sort();
    assert!(!from_lines.is_empty());
    assert_eq!(from_csv, from_lines);

    // Best score first.
    let sorted = investigator.get(server.url(&format!("/v1/jobs/{id}/results?sort=best_score"))).send().await.unwrap().text().await.unwrap();
    let scores: Vec<Option<f64>> = sorted.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()["best_score"].as_f64()).collect();
    assert_eq!(scores.len(), 10);
    let known: Vec<f64> = scores.iter().map_while(|s| *s).collect();
    assert!(known.len() >= 5 && known.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    assert!(scores[known.len()..].iter().all(Option::is_none));

    // Listed for investigators, by case; not for a checkpoint.
    let (_, page) = json_of(investigator.get(server.url("/v1/jobs?case=2026/300")).send().await.unwrap()).await;
    assert_eq!(page["items"][0]["id"], id);
    let (status, _) = json_of(server.client(Role::Checkpoint).get(server.url("/v1/jobs")).send().await.unwrap()).await;
    assert_eq!(status, 403);

    let trail = audit(&server).await;
    let target = format!("job/{id}");
    let of = |action: &str| trail.iter().filter(|e| e["action"] == action && e["target"] == target.as_str()).count();
    assert_eq!((of("submit_job"), of("export_job_results"), of("search")), (1, 3, 5));
    assert!(!serde_json::to_string(&trail).unwrap().contains("embedding\":["));

    // Past its retention the photos, results and crops go; the hits and the job's row stay.
    let swept = server.service.expire_jobs(SystemTime::now() + Duration::from_secs(91 * 86_400), &Principal::system("test")).unwrap();
    assert_eq!(swept, vec![id]);
    assert_eq!(std::fs::read_dir(dir.path().join("jobs")).unwrap().count(), 0);
    let (_, kept) = json_of(investigator.get(server.url(&format!("/v1/hits?job={id}"))).send().await.unwrap()).await;
    assert_eq!(kept["items"].as_array().unwrap().len(), hits.len());
    assert!(kept["items"].as_array().unwrap().iter().all(|h| h["has_probe"] == false));
    let text = investigator.get(server.url(&format!("/v1/jobs/{id}/results"))).send().await.unwrap().text().await.unwrap();
    assert_eq!(text, "");
    assert_eq!(audit(&server).await.iter().filter(|e| e["action"] == "expire_job" && e["target"] == target.as_str()).count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_stopped_with_its_server_resumes_without_redoing_a_photo_and_a_cancelled_one_stays_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let gallery_config = GalleryConfig { data_dir: dir.path().to_path_buf(), ..Default::default() };
    let slow = JobsConfig { pause_ms: 500, ..JobsConfig::default() };
    let server = TestServer::start_with_jobs(gallery_config.clone(), ServerConfig::default(), common::test_access(), slow);
    gallery(&server).await;
    let investigator = server.client(Role::Investigator);
    let photos = ["id05/img15.jpg", "id05/img13.jpg", "id08/img35.jpg", "id01/img1.jpg", "id02/img26.jpg", "id08/img36.jpg"];
    let members: Vec<(String, Vec<u8>)> = photos.iter().map(|p| (p.replace('/', "-"), photo(p))).collect();
    let members: Vec<(&str, Vec<u8>)> = members.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
    let first = submit(&server, &investigator, zip_of(&members), "2026/301").await["id"].as_i64().unwrap();
    let second = submit(&server, &investigator, zip_of(&members), "2026/302").await["id"].as_i64().unwrap();

    let running = wait_for(&server, &investigator, first, |job| job["done"].as_u64() >= Some(2)).await;
    assert_eq!(running["state"], "running");
    assert!(running["eta_s"].as_f64().is_some_and(|eta| eta > 0.0) && running["started_at"].is_string(), "{running}");
    let (status, cancelled) = json_of(investigator.post(server.url(&format!("/v1/jobs/{second}/cancel"))).send().await.unwrap()).await;
    assert_eq!((status, cancelled["state"].as_str(), cancelled["done"].as_u64()), (StatusCode::OK, Some("cancelled"), Some(0)), "{cancelled}");
    server.stop();

    let server = TestServer::start_with_jobs(gallery_config, ServerConfig::default(), common::test_access(), JobsConfig::default());
    let investigator = server.client(Role::Investigator);
    let (_, stopped) = json_of(investigator.get(server.url(&format!("/v1/jobs/{first}"))).send().await.unwrap()).await;
    assert!(stopped["done"].as_u64().unwrap() < 6, "the first server finished the job before it stopped: {stopped}");
    let done = wait_for(&server, &investigator, first, |job| job["state"] == "done").await;
    assert_eq!(done["done"].as_u64(), Some(6));

    // Every photo was searched exactly once, across both servers.
    let trail = audit(&server).await;
    let searched: Vec<u64> = trail
        .iter()
        .filter(|e| e["action"] == "search" && e["target"] == format!("job/{first}").as_str())
        .map(|e| e["details"]["photo"].as_u64().unwrap())
        .collect();
    let mut distinct = searched.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!((searched.len(), distinct), (6, vec![0, 1, 2, 3, 4, 5]));

    // The cancelled job stays cancelled; cancelling again changes nothing.
    let (_, second_now) = json_of(investigator.get(server.url(&format!("/v1/jobs/{second}"))).send().await.unwrap()).await;
    assert_eq!((second_now["state"].as_str(), second_now["done"].as_u64()), (Some("cancelled"), Some(0)));
    assert!(!trail.iter().any(|e| e["action"] == "search" && e["target"] == format!("job/{second}").as_str()));
    let (status, again) = json_of(investigator.post(server.url(&format!("/v1/jobs/{first}/cancel"))).send().await.unwrap()).await;
    assert_eq!((status, again["state"].as_str()), (StatusCode::OK, Some("done")));
    assert_eq!(trail.iter().filter(|e| e["action"] == "cancel_job").count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_submits_a_folder_follows_it_and_writes_its_results() {
    let dir = tempfile::tempdir().unwrap();
    // A job's upload has its own limit (`jobs.max_bytes`): these photos together exceed the one-request limit.
    let server = TestServer::start(dir.path(), ServerConfig { max_body_bytes: 1 << 20, ..ServerConfig::default() });
    let (jane, _) = gallery(&server).await;
    let folder = tempfile::tempdir().unwrap();
    std::fs::write(folder.path().join("a.jpg"), photo("id05/img15.jpg")).unwrap();
    std::fs::write(folder.path().join("b.jpg"), photo("id01/img1.jpg")).unwrap();
    std::fs::write(folder.path().join("readme.txt"), "not sent").unwrap();
    let facematch = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_facematch"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(args)
            .env("FACEMATCH_SERVER", &server.base)
            .env("FACEMATCH_API_KEY", server.key(Role::Investigator))
            .env("FACEMATCH_LOG", "warn")
            .output()
            .expect("the facematch binary runs")
    };
    let submitted = tokio::task::block_in_place(|| facematch(&["jobs", "submit", folder.path().to_str().unwrap(), "--case", "2026/303"]));
    assert!(submitted.status.success(), "{}", String::from_utf8_lossy(&submitted.stderr));
    let job: Value = serde_json::from_slice(&submitted.stdout).expect("the finished job as JSON");
    assert_eq!((job["state"].as_str(), job["total"].as_u64(), job["refused"].as_u64()), (Some("done"), Some(2), Some(0)), "{job}");
    let id = job["id"].as_i64().unwrap().to_string();
    let sent = photo("id05/img15.jpg").len() + photo("id01/img1.jpg").len();
    assert!(sent > 1 << 20, "the upload must exceed the one-request limit to prove the job's own: {sent} bytes");

    let csv = folder.path().join("results.csv");
    let written = tokio::task::block_in_place(|| facematch(&["jobs", "results", &id, "--format", "csv", "-o", csv.to_str().unwrap()]));
    assert!(written.status.success(), "{}", String::from_utf8_lossy(&written.stderr));
    let text = std::fs::read_to_string(&csv).unwrap();
    assert!(text.starts_with("photo,status,code,face,rank,"), "{text}");
    assert!(text.lines().any(|row| row.starts_with("a.jpg,searched,,0,1,wanted,") && row.contains(&format!(",{jane},"))), "{text}");

    let status = tokio::task::block_in_place(|| facematch(&["jobs", "status", &id]));
    assert_eq!(serde_json::from_slice::<Value>(&status.stdout).unwrap()["id"].as_i64().map(|n| n.to_string()), Some(id.clone()));
    let refused = tokio::task::block_in_place(|| {
        std::process::Command::new(env!("CARGO_BIN_EXE_facematch"))
            .args(["jobs", "status", &id, "--server", &server.base, "--key", server.key(Role::Checkpoint)])
            .env_remove("FACEMATCH_API_KEY")
            .output()
            .unwrap()
    });
    assert!(!refused.status.success() && String::from_utf8_lossy(&refused.stderr).contains("forbidden"));
}
