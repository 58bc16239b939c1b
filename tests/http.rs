//! The HTTP service end to end: a real server on port 0, a real SQLite file, real models and real photos.
//! Enroll some identities, search others, restart, delete, and every refusal's code and status.

mod common;

use std::path::PathBuf;

use common::{photo_form, TestServer};
use facematch::http::ServerConfig;
use facematch::service::Role;
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

fn photos_of(id: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(common::deepface().join(id)).unwrap().map(|e| e.unwrap().path()).collect();
    v.sort();
    v
}

async fn expect_error(response: reqwest::Response, status: StatusCode, code: &str) -> Value {
    let got = response.status();
    let body: Value = response.json().await.expect("error bodies are JSON");
    assert_eq!(got, status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    body
}

async fn create_watchlist(server: &TestServer, name: &str, alert_fpir: f64) {
    let r = server.client(Role::Admin).post(server.url("/v1/watchlists")).json(&json!({ "name": name, "alert_fpir": alert_fpir })).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
}

async fn create_subject(server: &TestServer, watchlist: &str, name: &str) -> i64 {
    let r = server
        .client(Role::Enroller)
        .post(server.url("/v1/subjects"))
        .json(&json!({ "watchlist": watchlist, "display_name": name, "external_ref": format!("N-{name}") }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    r.json::<Value>().await.unwrap()["id"].as_i64().unwrap()
}

async fn enroll(server: &TestServer, subject: i64, photo: &std::path::Path) -> reqwest::Response {
    server
        .client(Role::Enroller)
        .post(server.url(&format!("/v1/subjects/{subject}/faces")))
        .multipart(photo_form(&[("photo", photo)]))
        .send()
        .await
        .unwrap()
}

async fn search(server: &TestServer, photo: &std::path::Path, mode: &str) -> Value {
    let form = photo_form(&[("photo", photo)]).text("mode", mode.to_string()).text("k", "5");
    let r = server
        .client(Role::Investigator)
        .post(server.url("/v1/search"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.unwrap()
}

fn top_subject(result: &Value) -> Option<i64> {
    result["faces"][0]["candidates"][0]["subject_id"].as_i64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enroll_search_restart_delete() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), ServerConfig::default());
    create_watchlist(&server, "wanted", 0.01).await;

    let listed = ["id01", "id02", "id03", "id04", "id05", "id06", "id07", "id08", "id09"];
    let mut subjects = Vec::new();
    for id in listed {
        let subject = create_subject(&server, "wanted", id).await;
        let first = &photos_of(id)[0];
        let r = enroll(&server, subject, first).await;
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        if status == StatusCode::UNPROCESSABLE_ENTITY && body["error"]["code"] == "several_faces" {
            // A group photo needs a choice: the test picks the first (best-scored) face explicitly.
            let form = photo_form(&[("photo", first)]).text("face", "0");
            let r = server.client(Role::Enroller).post(server.url(&format!("/v1/subjects/{subject}/faces"))).multipart(form).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::CREATED);
        } else {
            assert_eq!(status, StatusCode::CREATED, "{id}: {body}");
        }
        subjects.push((id, subject));
    }

    // Mated probes: the right subject ranks first.
    let mut correct = 0;
    let mut total = 0;
    let mut alerted = 0;
    for (id, subject) in &subjects {
        for probe in photos_of(id).iter().skip(1).take(2) {
            let result = search(&server, probe, "investigation").await;
            total += 1;
            if top_subject(&result) == Some(*subject) {
                correct += 1;
            }
            let candidates = result["faces"][0]["candidates"].as_array().unwrap();
            assert!(candidates.len() <= 5);
            assert!(candidates.windows(2).all(|w| w[0]["similarity"].as_f64() >= w[1]["similarity"].as_f64()));
            assert!(candidates.iter().all(|c| c["fpir_extrapolated"].is_boolean()), "{result}");
            // Identification mode answers exactly the investigation candidates that raise an alert.
            let identified = search(&server, probe, "identification").await;
            let alerts: Vec<&Value> = candidates.iter().filter(|c| c["alert"] == true).collect();
            let got: Vec<&Value> = identified["faces"][0]["candidates"].as_array().unwrap().iter().collect();
            let ids = |list: &[&Value]| list.iter().map(|c| c["template_id"].as_i64()).collect::<Vec<_>>();
            assert_eq!(ids(&got), ids(&alerts), "{}: {identified}", probe.display());
            alerted += alerts.len();
        }
    }
    assert!(correct as f64 >= 0.9 * total as f64, "rank-1 {correct}/{total}");
    assert!(alerted >= total / 2, "mated probes raise alerts at the watchlist's FPIR: {alerted} of {total}");

    // Strangers get no identification-mode match at the watchlist's FPIR.
    for id in ["id10", "id11", "id12", "id13"] {
        for probe in photos_of(id) {
            let result = search(&server, &probe, "identification").await;
            for face in result["faces"].as_array().unwrap() {
                assert_eq!(face["candidates"].as_array().unwrap().len(), 0, "{}: {face}", probe.display());
            }
        }
    }

    // Every search is in the audit trail with who and why, and the chain verifies.
    let audit: Value = server.client(Role::Auditor).get(server.url("/v1/audit?per_page=5")).send().await.unwrap().json().await.unwrap();
    let last = &audit["items"][0];
    assert_eq!(last["action"], "search");
    assert_eq!(last["actor"], format!("test investigator ({})", &server.key(Role::Investigator)[4..16]));
    assert_eq!(last["purpose"], "case 2026/114");
    assert!(!last.to_string().contains("embedding"), "no biometric data in audit: {last}");
    let verified: Value = server.client(Role::Auditor).get(server.url("/v1/audit/verify")).send().await.unwrap().json().await.unwrap();
    assert_eq!(verified["status"], "intact");

    // Restart on the same data directory: everything is still there.
    let (id, subject) = subjects[1];
    let probe = photos_of(id)[1].clone();
    server.stop();
    let server = TestServer::start(dir.path(), ServerConfig::default());
    let client = Client::new();
    let ready: Value = client.get(server.url("/readyz")).send().await.unwrap().json().await.unwrap();
    assert_eq!(ready["index"]["origin"], "loaded", "a graceful stop saves the index: {ready}");
    assert_eq!(ready["index"]["stats"]["live"], 9);
    assert_eq!(top_subject(&search(&server, &probe, "investigation").await), Some(subject));

    // Deletion really removes the subject from results.
    let r = server.client(Role::Enroller).delete(server.url(&format!("/v1/subjects/{subject}"))).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let result = search(&server, &probe, "investigation").await;
    assert!(result["faces"][0]["candidates"].as_array().unwrap().iter().all(|c| c["subject_id"] != subject));
    expect_error(server.client(Role::Investigator).get(server.url(&format!("/v1/subjects/{subject}"))).send().await.unwrap(), StatusCode::NOT_FOUND, "subject_not_found").await;

    // 1:1 verification, photo vs photo and photo vs subject.
    let (id0, subject0) = subjects[0];
    let p = photos_of(id0);
    let form = photo_form(&[("photo_a", &p[0]), ("photo_b", &p[1])]);
    let v: Value = server.client(Role::Checkpoint).post(server.url("/v1/verify")).multipart(form).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["decision"], "match", "{v}");
    let form = photo_form(&[("photo", &photos_of("id12")[0])]).text("subject_id", subject0.to_string());
    let v: Value = server.client(Role::Checkpoint).post(server.url("/v1/verify")).multipart(form).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["decision"], "no_match", "{v}");

    // Metrics and stats.
    let metrics = server.client(Role::Admin).get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("facematch_http_request_duration_seconds_bucket{route=\"/v1/search\""), "{metrics}");
    assert!(metrics.contains("facematch_stage_duration_seconds_bucket{stage=\"embed\""));
    assert!(metrics.contains("facematch_gallery_templates 8"));
    let stats: Value = server.client(Role::Admin).get(server.url("/v1/stats")).send().await.unwrap().json().await.unwrap();
    assert_eq!(stats["index"]["stats"]["live"], 8);

    // A second deletion passes the consolidation share (2 of 9 templates removed, default 0.2): the graph is
    // repaired around the tombstones and their slots are freed, and the removed face never comes back.
    let (id8, subject8) = subjects[8];
    let probe8 = &photos_of(id8)[1];
    let hit = search(&server, probe8, "investigation").await;
    let candidates = hit["faces"][0]["candidates"].as_array().unwrap();
    let template = candidates.iter().find(|c| c["subject_id"] == subject8).expect("enrolled subject is a candidate")
        ["template_id"]
        .as_i64()
        .unwrap();
    let r = server.client(Role::Enroller).delete(server.url(&format!("/v1/subjects/{subject8}/faces/{template}"))).send().await.unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let stats: Value = server.client(Role::Admin).get(server.url("/v1/stats")).send().await.unwrap().json().await.unwrap();
    let index = &stats["index"]["stats"];
    assert_eq!((index["live"].as_u64(), index["deleted"].as_u64(), index["free_slots"].as_u64()), (Some(7), Some(0), Some(2)), "{stats}");
    let result = search(&server, probe8, "investigation").await;
    assert!(result["faces"][0]["candidates"].as_array().unwrap().iter().all(|c| c["template_id"] != template));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_has_its_code_and_status() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), ServerConfig { max_body_bytes: 8 << 20, ..ServerConfig::default() });
    create_watchlist(&server, "missing", 0.003).await;
    let subject = create_subject(&server, "missing", "p1").await;
    let scratch = tempfile::tempdir().unwrap();

    // No face: a real photo's flat background patch.
    let blank = scratch.path().join("blank.png");
    image::RgbImage::from_pixel(320, 240, image::Rgb([90, 120, 150])).save(&blank).unwrap();
    expect_error(enroll(&server, subject, &blank).await, StatusCode::UNPROCESSABLE_ENTITY, "no_face_detected").await;
    // Several faces without a choice, then a choice out of range.
    let group = common::deepface().join("id04/img54.jpg");
    expect_error(enroll(&server, subject, &group).await, StatusCode::UNPROCESSABLE_ENTITY, "several_faces").await;
    let form = photo_form(&[("photo", &group)]).text("face", "40");
    let r = server.client(Role::Enroller).post(server.url(&format!("/v1/subjects/{subject}/faces"))).multipart(form).send().await.unwrap();
    expect_error(r, StatusCode::UNPROCESSABLE_ENTITY, "no_such_face").await;
    // Poor quality: a face too small for enrollment.
    let small = scratch.path().join("small.png");
    let photo = image::open(common::deepface().join("id05/img14.jpg")).unwrap().to_rgb8();
    image::imageops::resize(&photo, 110, 73, image::imageops::FilterType::Triangle).save(&small).unwrap();
    expect_error(enroll(&server, subject, &small).await, StatusCode::UNPROCESSABLE_ENTITY, "poor_quality").await;
    // Duplicate photo.
    let good = common::deepface().join("id05/img14.jpg");
    assert_eq!(enroll(&server, subject, &good).await.status(), StatusCode::CREATED);
    expect_error(enroll(&server, subject, &good).await, StatusCode::CONFLICT, "duplicate_photo").await;
    // Unsupported and corrupt photos.
    let text = scratch.path().join("notes.txt");
    std::fs::write(&text, "not a photo at all").unwrap();
    expect_error(enroll(&server, subject, &text).await, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_format").await;
    let cut = scratch.path().join("cut.jpg");
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() / 3]).unwrap();
    let r = enroll(&server, subject, &cut).await;
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    // A truncated JPEG either fails to decode or decodes grey at the bottom; both are answered, neither panics.
    assert!(status == StatusCode::UNPROCESSABLE_ENTITY || status == StatusCode::CREATED, "{status} {body}");
    // Too large a body.
    let huge = scratch.path().join("huge.jpg");
    std::fs::write(&huge, vec![0xFFu8; 9 << 20]).unwrap();
    let r = enroll(&server, subject, &huge).await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // The server closes a connection whose body it refused unread; a pooled client could pick that connection
    // again before it notices, so the rest goes through fresh ones.
    let client = Client::new();
    // Not multipart, bad JSON, unknown ids, unknown watchlist, bad id, unknown route and method.
    let r = server.client(Role::Investigator).post(server.url("/v1/search")).body("x").header("content-type", "text/plain").send().await.unwrap();
    expect_error(r, StatusCode::UNSUPPORTED_MEDIA_TYPE, "expected_multipart").await;
    let r = server.client(Role::Enroller).post(server.url("/v1/subjects")).header("content-type", "application/json").body("{nope").send().await.unwrap();
    expect_error(r, StatusCode::BAD_REQUEST, "invalid_json").await;
    let r = server.client(Role::Enroller).post(server.url("/v1/subjects")).body(r#"{"watchlist":"wanted","display_name":"x"}"#).send().await.unwrap();
    expect_error(r, StatusCode::UNSUPPORTED_MEDIA_TYPE, "expected_json").await;
    let r = server.client(Role::Enroller).post(server.url("/v1/subjects")).json(&json!({ "watchlist": "nowhere", "display_name": "x" })).send().await.unwrap();
    expect_error(r, StatusCode::NOT_FOUND, "watchlist_not_found").await;
    expect_error(enroll(&server, 999_999, &good).await, StatusCode::NOT_FOUND, "subject_not_found").await;
    expect_error(server.client(Role::Investigator).get(server.url("/v1/subjects/abc")).send().await.unwrap(), StatusCode::BAD_REQUEST, "invalid_id").await;
    expect_error(server.client(Role::Investigator).get(server.url("/v1/nothing")).send().await.unwrap(), StatusCode::NOT_FOUND, "route_not_found").await;
    expect_error(server.client(Role::Admin).put(server.url("/v1/stats")).send().await.unwrap(), StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
    let r = server.client(Role::Admin).post(server.url("/v1/watchlists")).json(&json!({ "name": "missing", "alert_fpir": 0.01 })).send().await.unwrap();
    expect_error(r, StatusCode::CONFLICT, "duplicate_watchlist").await;
    let r = server.client(Role::Admin).delete(server.url("/v1/watchlists/missing")).send().await.unwrap();
    expect_error(r, StatusCode::CONFLICT, "watchlist_not_empty").await;
    // Embedding searches: wrong dimension, zero vector.
    let r = server.client(Role::Investigator).post(server.url("/v1/search")).json(&json!({ "embedding": [0.1, 0.2], "mode": "investigation" })).send().await.unwrap();
    expect_error(r, StatusCode::UNPROCESSABLE_ENTITY, "dimension_mismatch").await;
    let r = server.client(Role::Investigator).post(server.url("/v1/search")).json(&json!({ "embedding": vec![0.0f32; 256] })).send().await.unwrap();
    expect_error(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_embedding").await;
    let form = reqwest::multipart::Form::new().text("mode", "investigation");
    let r = server.client(Role::Investigator).post(server.url("/v1/search")).multipart(form).send().await.unwrap();
    expect_error(r, StatusCode::BAD_REQUEST, "missing_photo").await;
    let form = photo_form(&[("photo", &good)]).text("mode", "guess");
    expect_error(server.client(Role::Investigator).post(server.url("/v1/search")).multipart(form).send().await.unwrap(), StatusCode::BAD_REQUEST, "invalid_field").await;
    // The server is still healthy after all of that.
    assert_eq!(client.get(server.url("/healthz")).send().await.unwrap().status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_queue_answers_503_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let config = ServerConfig { max_concurrent_analyses: 1, max_queued_analyses: 0, ..ServerConfig::default() };
    let server = TestServer::start(dir.path(), config);
    let client = server.client(Role::Investigator);
    let photo = common::deepface().join("id09/img40.jpg");
    let requests = (0..6).map(|_| {
        let form = photo_form(&[("photo", &photo)]).text("mode", "investigation");
        client.post(server.url("/v1/search")).multipart(form).send()
    });
    let responses = futures_join_all(requests).await;
    let busy: Vec<&reqwest::Response> = responses.iter().filter(|r| r.status() == StatusCode::SERVICE_UNAVAILABLE).collect();
    let fine = responses.iter().filter(|r| r.status() == StatusCode::OK).count();
    assert!(fine >= 1, "one request runs");
    assert!(!busy.is_empty(), "with one slot and no queue, concurrent photos are refused");
    assert_eq!(busy[0].headers().get("retry-after").unwrap(), "1");
}

async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<reqwest::Response>
where
    F: std::future::Future<Output = reqwest::Result<reqwest::Response>> + Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap().unwrap());
    }
    out
}

/// With the opt-in short walk, identification first asks the graph for one template (`hnsw_ef_identification = 1`);
/// a best template near the threshold must make it repeat the search in full, or a person listed twice (two
/// subjects, two watchlists) would come back once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identification_with_a_short_walk_still_returns_every_alerting_subject() {
    let dir = tempfile::tempdir().unwrap();
    let gallery = facematch::service::GalleryConfig {
        data_dir: dir.path().to_path_buf(),
        hnsw_ef_identification: Some(1),
        ..Default::default()
    };
    let server = TestServer::start_with(gallery, ServerConfig::default());
    create_watchlist(&server, "wanted", 0.01).await;
    create_watchlist(&server, "missing", 0.01).await;
    let twice = photos_of("id02");
    let mut listed = Vec::new();
    for (watchlist, photo) in [("wanted", &twice[0]), ("missing", &twice[1])] {
        let subject = create_subject(&server, watchlist, "id02").await;
        assert_eq!(enroll(&server, subject, photo).await.status(), StatusCode::CREATED);
        listed.push(subject);
    }
    for id in ["id03", "id04", "id05", "id06"] {
        let subject = create_subject(&server, "wanted", id).await;
        assert_eq!(enroll(&server, subject, &photos_of(id)[0]).await.status(), StatusCode::CREATED);
    }

    let mut checked = 0;
    for probe in &twice[2..] {
        let investigated = search(&server, probe, "investigation").await;
        let alerts: Vec<i64> = investigated["faces"][0]["candidates"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["alert"] == true)
            .map(|c| c["subject_id"].as_i64().unwrap())
            .collect();
        let identified = search(&server, probe, "identification").await;
        let got: Vec<i64> =
            identified["faces"][0]["candidates"].as_array().unwrap().iter().map(|c| c["subject_id"].as_i64().unwrap()).collect();
        assert_eq!(got, alerts, "{}: {identified}", probe.display());
        if alerts.len() == 2 {
            assert!(listed.iter().all(|s| alerts.contains(s)));
            checked += 1;
        }
    }
    assert!(checked >= 2, "probes of the twice-listed person alerted on both subjects only {checked} times");
}

/// Sends one upload over a fresh plain TCP connection, the whole body whatever the server says, then reads the
/// answer: the status line and the JSON body.
fn upload_over_plain_tcp(base: &str, key: &str, path: &str, body_len: usize) -> std::io::Result<(u16, Value)> {
    use std::io::{Read, Write};
    let address = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address)?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(60)))?;
    let boundary = "facematch-oversized";
    let head = format!("--{boundary}\r\nContent-Disposition: form-data; name=\"photo\"; filename=\"huge.jpg\"\r\n\r\n");
    let tail = format!("\r\n--{boundary}--\r\n");
    let length = head.len() + body_len + tail.len();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n{head}"
    )?;
    let chunk = vec![0xFFu8; 64 << 10];
    let mut sent = 0;
    while sent < body_len {
        let n = chunk.len().min(body_len - sent);
        stream.write_all(&chunk[..n])?;
        sent += n;
    }
    stream.write_all(tail.as_bytes())?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    let text = String::from_utf8_lossy(&answer);
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    Ok((status, serde_json::from_str(body).unwrap_or(Value::String(body.to_string()))))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_uploads_always_get_the_413_json_error() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), ServerConfig { max_body_bytes: 8 << 20, ..ServerConfig::default() });
    create_watchlist(&server, "wanted", 0.01).await;
    let subject = create_subject(&server, "wanted", "p1").await;
    let base = server.base.clone();
    let (enroller, checkpoint) = (server.key(Role::Enroller).to_string(), server.key(Role::Checkpoint).to_string());
    let answers = tokio::task::spawn_blocking(move || {
        (0..20)
            .map(|i| {
                let (path, key) = if i % 2 == 0 {
                    (format!("/v1/subjects/{subject}/faces"), &enroller)
                } else {
                    ("/v1/search".to_string(), &checkpoint)
                };
                upload_over_plain_tcp(&base, key, &path, 9 << 20)
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    for (i, answer) in answers.into_iter().enumerate() {
        let (status, body) = answer.unwrap_or_else(|e| panic!("upload {i}: the client saw {e} instead of an answer"));
        assert_eq!(status, 413, "upload {i}: {body}");
        assert_eq!(body["error"]["code"], "request_too_large", "upload {i}: {body}");
    }
    // JSON routes refuse an oversized body with the same JSON error.
    let r = server.client(Role::Admin).post(server.url("/v1/watchlists")).header("content-type", "application/json").body(vec![b' '; 9 << 20]).send().await.unwrap();
    expect_error(r, StatusCode::PAYLOAD_TOO_LARGE, "request_too_large").await;
}
