//! The served OpenAPI document describes what the server really answers: every route is exercised on a real
//! server with real photos, and every answer — successes and refusals — must have its status documented for that
//! operation and a body that validates against the documented schema.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{photo_form, TestServer};
use facematch::http::ServerConfig;
use facematch::service::Role;
use reqwest::{Client, Method, RequestBuilder};
use serde_json::{json, Value};

/// Checks answers against the served document and remembers which operations answered with what.
struct Checker {
    document: Value,
    /// (method, path template) → statuses seen.
    seen: BTreeMap<(String, String), BTreeSet<u16>>,
}

impl Checker {
    /// Sends `request` for the operation `method path` and checks its answer; returns the status and JSON body.
    async fn check(&mut self, method: &str, path: &str, request: RequestBuilder) -> (u16, Value) {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let content_type =
            response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        // A stream never ends: its head is what is checked.
        let streaming = content_type.starts_with("text/event-stream");
        let bytes = if streaming { Default::default() } else { response.bytes().await.unwrap() };
        let operation = &self.document["paths"][path][method];
        assert!(operation.is_object(), "{method} {path} is not in the document");
        let documented = &operation["responses"][status.to_string()];
        assert!(documented.is_object(), "{method} {path} answered {status}, which its operation does not document");
        let media = content_type.split(';').next().unwrap_or_default().trim().to_owned();
        let content = &documented["content"][&media];
        assert!(content.is_object(), "{method} {path} {status}: content type {media} is not documented: {documented}");
        let body = if media == "application/json" && !streaming {
            let body: Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{method} {path} {status}: not JSON: {e}"));
            let mut schema = content["schema"].clone();
            schema["components"] = self.document["components"].clone();
            let validator = jsonschema::validator_for(&schema).unwrap_or_else(|e| panic!("{method} {path}: schema: {e}"));
            let errors: Vec<String> = validator.iter_errors(&body).map(|e| format!("{} at {}", e, e.instance_path())).collect();
            assert!(errors.is_empty(), "{method} {path} {status}: the body does not match its schema: {errors:?}\n{body}");
            body
        } else {
            Value::Null
        };
        self.seen.entry((method.to_owned(), path.to_owned())).or_default().insert(status);
        (status, body)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_of_every_route_matches_the_served_document() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), ServerConfig { max_body_bytes: 4 << 20, ..ServerConfig::default() });
    let client = Client::new();
    let document: Value = client.get(server.url("/v1/openapi.json")).send().await.unwrap().json().await.unwrap();
    let mut c = Checker { document, seen: BTreeMap::new() };
    let url = |p: &str| server.url(p);
    let req = |method: Method, p: &str| {
        let role = common::role_for(&method, p);
        client.request(method, url(p)).bearer_auth(server.key(role)).header("x-facematch-purpose", "openapi test")
    };
    let as_role = |role: Role, method: Method, p: &str| client.request(method, url(p)).bearer_auth(server.key(role));
    let photo = common::deepface().join("id05/img14.jpg");
    let probe = common::deepface().join("id05/img15.jpg");
    let other = common::deepface().join("id08/img34.jpg");
    let scratch = tempfile::tempdir().unwrap();
    let blank = scratch.path().join("blank.png");
    image::RgbImage::from_pixel(320, 240, image::Rgb([90, 120, 150])).save(&blank).unwrap();

    // Operations.
    c.check("get", "/healthz", req(Method::GET, "/healthz")).await;
    c.check("get", "/readyz", req(Method::GET, "/readyz")).await;
    c.check("get", "/metrics", req(Method::GET, "/metrics")).await;
    c.check("get", "/v1/openapi.json", req(Method::GET, "/v1/openapi.json")).await;
    {
        // A site that closes the document: it needs a key like everything else.
        let closed_dir = tempfile::tempdir().unwrap();
        let gallery = facematch::service::GalleryConfig { data_dir: closed_dir.path().to_path_buf(), ..Default::default() };
        let access = facematch::service::AccessConfig { open_openapi: false, ..common::test_access() };
        let closed = TestServer::start_with_access(gallery, ServerConfig::default(), access);
        assert_eq!(c.check("get", "/v1/openapi.json", client.get(closed.url("/v1/openapi.json"))).await.0, 401);
        let with_key = client.get(closed.url("/v1/openapi.json")).bearer_auth(closed.key(Role::Checkpoint));
        assert_eq!(c.check("get", "/v1/openapi.json", with_key).await.0, 200);
    }
    c.check("get", "/v1/stats", req(Method::GET, "/v1/stats")).await;
    assert_eq!(c.check("get", "/v1/stats", client.get(url("/v1/stats"))).await.0, 401);
    assert_eq!(c.check("get", "/metrics", as_role(Role::Checkpoint, Method::GET, "/metrics")).await.0, 403);

    // Watchlists.
    let wl = "/v1/watchlists";
    let (s, _) = c.check("post", wl, req(Method::POST, wl).json(&json!({ "name": "wanted", "alert_fpir": 0.01 }))).await;
    assert_eq!(s, 201);
    assert_eq!(c.check("post", wl, req(Method::POST, wl).json(&json!({ "name": "wanted" }))).await.0, 409);
    assert_eq!(c.check("post", wl, req(Method::POST, wl).header("content-type", "application/json").body("{nope")).await.0, 400);
    assert_eq!(c.check("post", wl, req(Method::POST, wl).body(r#"{"name":"plain"}"#)).await.0, 415);
    assert_eq!(c.check("post", wl, req(Method::POST, wl).json(&json!({ "name": "Bad Name!" }))).await.0, 422);
    assert_eq!(c.check("post", wl, req(Method::POST, wl).body(vec![b' '; 5 << 20])).await.0, 413);
    assert_eq!(c.check("get", wl, req(Method::GET, wl)).await.0, 200);
    assert_eq!(c.check("get", wl, as_role(Role::Auditor, Method::GET, wl)).await.0, 403);
    let one = "/v1/watchlists/{name}";
    assert_eq!(c.check("get", one, req(Method::GET, "/v1/watchlists/wanted")).await.0, 200);
    assert_eq!(c.check("get", one, req(Method::GET, "/v1/watchlists/nowhere")).await.0, 404);
    let (s, changed) = c.check("patch", one, req(Method::PATCH, "/v1/watchlists/wanted").json(&json!({ "retention_days": 3650 }))).await;
    assert_eq!((s, &changed["retention_days"]), (200, &json!(3650)));
    assert_eq!(c.check("patch", one, req(Method::PATCH, "/v1/watchlists/wanted").json(&json!({ "retention_days": 0 }))).await.0, 422);
    assert_eq!(c.check("patch", one, req(Method::PATCH, "/v1/watchlists/nowhere").json(&json!({}))).await.0, 404);
    assert_eq!(c.check("patch", one, req(Method::PATCH, "/v1/watchlists/wanted").header("content-type", "application/json").body("{nope")).await.0, 400);

    // Subjects.
    let subjects = "/v1/subjects";
    let new = json!({ "watchlist": "wanted", "display_name": "Jane Roe", "external_ref": "A-1", "metadata": { "note": "x" } });
    let (s, subject) = c.check("post", subjects, req(Method::POST, subjects).json(&new)).await;
    assert_eq!(s, 201);
    let id = subject["id"].as_i64().unwrap();
    assert_eq!(c.check("post", subjects, req(Method::POST, subjects).json(&new)).await.0, 409);
    let nowhere = json!({ "watchlist": "nowhere", "display_name": "x" });
    assert_eq!(c.check("post", subjects, req(Method::POST, subjects).json(&nowhere)).await.0, 404);
    assert_eq!(c.check("get", subjects, req(Method::GET, "/v1/subjects?q=jane")).await.0, 200);
    assert_eq!(c.check("get", subjects, req(Method::GET, "/v1/subjects?page=x")).await.0, 400);
    assert_eq!(c.check("get", subjects, req(Method::GET, "/v1/subjects?page=0")).await.0, 400);
    assert_eq!(c.check("get", subjects, req(Method::GET, "/v1/subjects?watchlist=nowhere")).await.0, 404);
    let subject_path = "/v1/subjects/{id}";
    let this = format!("/v1/subjects/{id}");
    assert_eq!(c.check("get", subject_path, req(Method::GET, &this)).await.0, 200);
    assert_eq!(c.check("get", subject_path, req(Method::GET, "/v1/subjects/abc")).await.0, 400);
    assert_eq!(c.check("get", subject_path, req(Method::GET, "/v1/subjects/999999")).await.0, 404);
    let patch = json!({ "display_name": "Jane R. Roe", "external_ref": null });
    assert_eq!(c.check("patch", subject_path, req(Method::PATCH, &this).json(&patch)).await.0, 200);
    assert_eq!(c.check("patch", subject_path, req(Method::PATCH, "/v1/subjects/999999").json(&patch)).await.0, 404);
    assert_eq!(c.check("patch", subject_path, req(Method::PATCH, &this).json(&json!({ "display_name": "" }))).await.0, 422);

    // Enrolment and faces.
    let faces = "/v1/subjects/{id}/faces";
    let these = format!("/v1/subjects/{id}/faces");
    let (s, report) = c.check("post", faces, req(Method::POST, &these).multipart(photo_form(&[("photo", &photo)]))).await;
    assert_eq!(s, 201);
    let template = report["results"][0]["template"]["id"].as_i64().unwrap();
    assert_eq!(c.check("post", faces, req(Method::POST, &these).multipart(photo_form(&[("photo", &photo)]))).await.0, 409);
    assert_eq!(c.check("post", faces, req(Method::POST, &these).multipart(photo_form(&[("photo", &blank)]))).await.0, 422);
    let several = photo_form(&[("photo", &blank), ("photo2", &photo)]);
    assert_eq!(c.check("post", faces, req(Method::POST, &these).multipart(several)).await.0, 422);
    let mixed = photo_form(&[("photo", &blank), ("photo2", &other)]);
    assert_eq!(c.check("post", faces, req(Method::POST, &these).multipart(mixed)).await.0, 201);
    assert_eq!(c.check("post", faces, req(Method::POST, &these).body("x")).await.0, 415);
    let empty = reqwest::multipart::Form::new().text("face", "0");
    assert_eq!(c.check("post", faces, req(Method::POST, &these).multipart(empty)).await.0, 400);
    let unknown = photo_form(&[("photo", &probe)]);
    assert_eq!(c.check("post", faces, req(Method::POST, "/v1/subjects/999999/faces").multipart(unknown)).await.0, 404);
    assert_eq!(c.check("get", faces, req(Method::GET, &these)).await.0, 200);
    assert_eq!(c.check("get", faces, req(Method::GET, "/v1/subjects/999999/faces")).await.0, 404);
    assert_eq!(c.check("get", faces, req(Method::GET, "/v1/subjects/x/faces")).await.0, 400);
    let thumb = "/v1/subjects/{id}/faces/{template}/thumbnail";
    assert_eq!(c.check("get", thumb, req(Method::GET, &format!("{these}/{template}/thumbnail"))).await.0, 200);
    assert_eq!(c.check("get", thumb, req(Method::GET, &format!("{these}/999999/thumbnail"))).await.0, 404);
    assert_eq!(c.check("get", thumb, req(Method::GET, &format!("{these}/x/thumbnail"))).await.0, 400);

    // Search and verification.
    let search = "/v1/search";
    let form = photo_form(&[("photo", &probe)]).text("mode", "investigation").text("k", "3");
    let (s, result) = c.check("post", search, req(Method::POST, search).multipart(form)).await;
    assert_eq!(s, 200);
    assert_eq!(result["faces"][0]["candidates"][0]["subject_id"], id);
    let form = photo_form(&[("photo", &probe)]);
    assert_eq!(c.check("post", search, req(Method::POST, search).multipart(form)).await.0, 200);
    let stats: Value = as_role(Role::Admin, Method::GET, "/v1/stats").send().await.unwrap().json().await.unwrap();
    let dimension = stats["gallery"]["models"][0]["dimension"].as_u64().unwrap() as usize;
    let mut embedding = vec![0.0f32; dimension];
    embedding[0] = 1.0;
    let by_embedding = json!({ "embedding": embedding, "mode": "investigation", "k": 2 });
    assert_eq!(c.check("post", search, req(Method::POST, search).json(&by_embedding)).await.0, 200);
    let wrong = json!({ "embedding": [0.1, 0.2] });
    assert_eq!(c.check("post", search, req(Method::POST, search).json(&wrong)).await.0, 422);
    assert_eq!(c.check("post", search, req(Method::POST, search).body("x").header("content-type", "text/plain")).await.0, 415);
    let missing = reqwest::multipart::Form::new().text("mode", "investigation");
    assert_eq!(c.check("post", search, req(Method::POST, search).multipart(missing)).await.0, 400);
    let restricted = photo_form(&[("photo", &probe)]).text("watchlists", "nowhere");
    assert_eq!(c.check("post", search, req(Method::POST, search).multipart(restricted)).await.0, 404);
    let huge = scratch.path().join("huge.jpg");
    std::fs::write(&huge, vec![0xFFu8; 5 << 20]).unwrap();
    assert_eq!(c.check("post", search, req(Method::POST, search).multipart(photo_form(&[("photo", &huge)]))).await.0, 413);
    let verify = "/v1/verify";
    let pair = photo_form(&[("photo_a", &photo), ("photo_b", &probe)]);
    assert_eq!(c.check("post", verify, req(Method::POST, verify).multipart(pair)).await.0, 200);
    let against = photo_form(&[("photo", &probe)]).text("subject_id", id.to_string());
    assert_eq!(c.check("post", verify, req(Method::POST, verify).multipart(against)).await.0, 200);
    let alone = photo_form(&[("photo", &probe)]);
    assert_eq!(c.check("post", verify, req(Method::POST, verify).multipart(alone)).await.0, 400);
    let faceless = photo_form(&[("photo_a", &blank), ("photo_b", &probe)]);
    assert_eq!(c.check("post", verify, req(Method::POST, verify).multipart(faceless)).await.0, 422);

    // Hits and their review.
    let form = photo_form(&[("photo", &probe)]).text("checkpoint", "gate 3").text("case", "2026/114");
    let (s, alert) = c.check("post", search, as_role(Role::Checkpoint, Method::POST, search).multipart(form)).await;
    assert_eq!(s, 200);
    let hit = alert["hits"][0].as_i64().unwrap_or_else(|| panic!("the checkpoint search alerts: {alert}"));
    let hits = "/v1/hits";
    assert_eq!(c.check("get", hits, req(Method::GET, "/v1/hits?state=undecided&case=2026/114")).await.0, 200);
    assert_eq!(c.check("get", hits, req(Method::GET, "/v1/hits?state=maybe")).await.0, 400);
    let one_hit = "/v1/hits/{id}";
    assert_eq!(c.check("get", one_hit, req(Method::GET, &format!("/v1/hits/{hit}"))).await.0, 200);
    assert_eq!(c.check("get", one_hit, req(Method::GET, "/v1/hits/999999")).await.0, 404);
    assert_eq!(c.check("get", one_hit, req(Method::GET, "/v1/hits/x")).await.0, 400);
    let probe_jpg = "/v1/hits/{id}/probe.jpg";
    assert_eq!(c.check("get", probe_jpg, req(Method::GET, &format!("/v1/hits/{hit}/probe.jpg"))).await.0, 200);
    assert_eq!(c.check("get", probe_jpg, req(Method::GET, "/v1/hits/999999/probe.jpg")).await.0, 404);
    let acknowledge = "/v1/hits/{id}/acknowledge";
    assert_eq!(c.check("post", acknowledge, req(Method::POST, &format!("/v1/hits/{hit}/acknowledge"))).await.0, 200);
    assert_eq!(c.check("post", acknowledge, req(Method::POST, &format!("/v1/hits/{hit}/acknowledge"))).await.0, 409);
    let decisions = "/v1/hits/{id}/decisions";
    let decided = format!("/v1/hits/{hit}/decisions");
    let decision = json!({ "decision": "potential_match", "comment": "same ear" });
    assert_eq!(c.check("post", decisions, req(Method::POST, &decided).json(&decision)).await.0, 201);
    assert_eq!(c.check("post", decisions, req(Method::POST, &decided).json(&decision)).await.0, 409);
    let blank = json!({ "decision": "no_candidate", "comment": " " });
    assert_eq!(c.check("post", decisions, req(Method::POST, &decided).json(&blank)).await.0, 422);
    let unknown = json!({ "decision": "maybe", "comment": "x" });
    assert_eq!(c.check("post", decisions, req(Method::POST, &decided).json(&unknown)).await.0, 400);
    let export = "/v1/cases/{case}/confirmed";
    assert_eq!(c.check("get", export, req(Method::GET, "/v1/cases/2026%2F114/confirmed")).await.0, 200);
    assert_eq!(c.check("get", export, as_role(Role::Checkpoint, Method::GET, "/v1/cases/2026%2F114/confirmed")).await.0, 403);

    // Bulk search jobs.
    let jobs = "/v1/jobs";
    let form = photo_form(&[("photo", &probe), ("photo", &other)]).text("case", "2026/114").text("watchlist", "wanted");
    let (s, job) = c.check("post", jobs, req(Method::POST, jobs).multipart(form)).await;
    assert_eq!(s, 202, "{job}");
    let job_id = job["id"].as_i64().unwrap();
    let without_case = photo_form(&[("photo", &probe)]);
    assert_eq!(c.check("post", jobs, req(Method::POST, jobs).multipart(without_case)).await.0, 400);
    let nowhere = photo_form(&[("photo", &probe)]).text("case", "x").text("watchlist", "nowhere");
    assert_eq!(c.check("post", jobs, req(Method::POST, jobs).multipart(nowhere)).await.0, 404);
    assert_eq!(c.check("post", jobs, req(Method::POST, jobs).body("x")).await.0, 415);
    assert_eq!(c.check("post", jobs, as_role(Role::Checkpoint, Method::POST, jobs).multipart(photo_form(&[("photo", &probe)]))).await.0, 403);
    assert_eq!(c.check("get", jobs, req(Method::GET, "/v1/jobs?case=2026/114")).await.0, 200);
    assert_eq!(c.check("get", jobs, req(Method::GET, "/v1/jobs?state=maybe")).await.0, 400);
    let one_job = "/v1/jobs/{id}";
    let started = std::time::Instant::now();
    loop {
        let (s, now) = c.check("get", one_job, req(Method::GET, &format!("/v1/jobs/{job_id}"))).await;
        assert_eq!(s, 200);
        if now["state"] == "done" {
            break;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(60), "{now}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(c.check("get", one_job, req(Method::GET, "/v1/jobs/999999")).await.0, 404);
    let results = "/v1/jobs/{id}/results";
    assert_eq!(c.check("get", results, req(Method::GET, &format!("/v1/jobs/{job_id}/results"))).await.0, 200);
    assert_eq!(c.check("get", results, req(Method::GET, &format!("/v1/jobs/{job_id}/results?format=csv&sort=best_score"))).await.0, 200);
    assert_eq!(c.check("get", results, req(Method::GET, &format!("/v1/jobs/{job_id}/results?format=xml"))).await.0, 400);
    let cancel = "/v1/jobs/{id}/cancel";
    assert_eq!(c.check("post", cancel, req(Method::POST, &format!("/v1/jobs/{job_id}/cancel"))).await.0, 200);
    assert_eq!(c.check("post", cancel, req(Method::POST, "/v1/jobs/x/cancel")).await.0, 400);

    // Audit.
    assert_eq!(c.check("get", "/v1/audit", req(Method::GET, "/v1/audit?per_page=5")).await.0, 200);
    assert_eq!(c.check("get", "/v1/audit", req(Method::GET, "/v1/audit?page=-1")).await.0, 400);
    assert_eq!(c.check("get", "/v1/audit", req(Method::GET, "/v1/audit?per_page=5000")).await.0, 422);
    assert_eq!(c.check("get", "/v1/audit/verify", req(Method::GET, "/v1/audit/verify")).await.0, 200);
    assert_eq!(c.check("get", "/v1/audit/verify", as_role(Role::Investigator, Method::GET, "/v1/audit/verify")).await.0, 403);
    assert_eq!(c.check("get", "/v1/audit", req(Method::GET, "/v1/audit?action=search&since=2026-01-01T00:00:00Z")).await.0, 200);
    assert_eq!(c.check("get", "/v1/audit", req(Method::GET, "/v1/audit?since=yesterday")).await.0, 400);
    let members = "/v1/audit/membership";
    let (s, report) = c.check("get", members, req(Method::GET, "/v1/audit/membership?watchlist=wanted&on=2030-01-01T00:00:00Z")).await;
    assert_eq!(s, 200, "{report}");
    assert_eq!(c.check("get", members, req(Method::GET, "/v1/audit/membership?watchlist=wanted")).await.0, 400);

    // The calling key: every key may ask who it is; the role's permissions by their stable names.
    let (s, me) = c.check("get", "/v1/me", as_role(Role::Investigator, Method::GET, "/v1/me")).await;
    assert_eq!(s, 200, "{me}");
    assert_eq!(me["role"], "investigator");
    assert!(me["permissions"].as_array().unwrap().iter().any(|p| p == "review_hits"), "{me}");
    assert!(!me["permissions"].as_array().unwrap().iter().any(|p| p == "manage_keys"), "{me}");
    assert_eq!(c.check("get", "/v1/me", client.get(url("/v1/me")).bearer_auth("fmk_nonsense")).await.0, 401);

    // Keys.
    let keys = "/v1/keys";
    let new_key = json!({ "name": "gate 3", "role": "checkpoint", "watchlists": ["wanted"] });
    let (s, issued) = c.check("post", keys, req(Method::POST, keys).json(&new_key)).await;
    assert_eq!(s, 201);
    let key_id = issued["key"]["id"].as_str().unwrap().to_owned();
    assert_eq!(c.check("post", keys, req(Method::POST, keys).json(&json!({ "name": "x", "role": "system" }))).await.0, 400);
    assert_eq!(c.check("post", keys, as_role(Role::Investigator, Method::POST, keys).json(&new_key)).await.0, 403);
    assert_eq!(c.check("get", keys, req(Method::GET, keys)).await.0, 200);
    assert_eq!(c.check("get", keys, client.get(url(keys)).bearer_auth("fmk_nonsense")).await.0, 401);
    let rotate = "/v1/keys/{id}/rotate";
    let (s, rotated) = c.check("post", rotate, req(Method::POST, &format!("/v1/keys/{key_id}/rotate"))).await;
    assert_eq!(s, 201);
    assert_eq!(c.check("post", rotate, req(Method::POST, &format!("/v1/keys/{key_id}/rotate"))).await.0, 409);
    let revoke = "/v1/keys/{id}/revoke";
    let new_id = rotated["key"]["id"].as_str().unwrap().to_owned();
    assert_eq!(c.check("post", revoke, req(Method::POST, &format!("/v1/keys/{new_id}/revoke"))).await.0, 200);
    assert_eq!(c.check("post", revoke, req(Method::POST, "/v1/keys/000000000000/revoke")).await.0, 404);

    // Alerts: the stream (its head), webhooks and their deliveries.
    let stream = "/v1/alerts/stream";
    assert_eq!(c.check("get", stream, req(Method::GET, "/v1/alerts/stream?after=0&source=checkpoint")).await.0, 200);
    assert_eq!(c.check("get", stream, req(Method::GET, "/v1/alerts/stream?source=camera")).await.0, 400);
    assert_eq!(c.check("get", stream, as_role(Role::Admin, Method::GET, stream)).await.0, 403);
    let webhooks = "/v1/webhooks";
    let new_webhook = json!({ "url": "http://127.0.0.1:9/hook", "watchlists": ["wanted"], "sources": ["checkpoint"] });
    let (s, made) = c.check("post", webhooks, req(Method::POST, webhooks).json(&new_webhook)).await;
    assert_eq!(s, 201, "{made}");
    assert!(made["secret"].as_str().unwrap().starts_with("whsec_"));
    let bad_url = json!({ "url": "ftp://example.org/" });
    assert_eq!(c.check("post", webhooks, req(Method::POST, webhooks).json(&bad_url)).await.0, 422);
    assert_eq!(c.check("post", webhooks, req(Method::POST, webhooks).json(&json!({ "uri": "x" }))).await.0, 400);
    assert_eq!(c.check("get", webhooks, req(Method::GET, webhooks)).await.0, 200);
    assert_eq!(c.check("get", webhooks, as_role(Role::Checkpoint, Method::GET, webhooks)).await.0, 403);
    let deliveries = "/v1/webhooks/{id}/deliveries";
    let listed = format!("/v1/webhooks/{}/deliveries", made["id"]);
    assert_eq!(c.check("get", deliveries, req(Method::GET, &listed)).await.0, 200);
    assert_eq!(c.check("get", deliveries, req(Method::GET, &format!("{listed}?limit=0"))).await.0, 400);
    assert_eq!(c.check("get", deliveries, req(Method::GET, "/v1/webhooks/999999/deliveries")).await.0, 404);
    let one_webhook = "/v1/webhooks/{id}";
    assert_eq!(c.check("delete", one_webhook, req(Method::DELETE, &format!("/v1/webhooks/{}", made["id"]))).await.0, 200);
    assert_eq!(c.check("delete", one_webhook, req(Method::DELETE, &format!("/v1/webhooks/{}", made["id"]))).await.0, 404);

    // Model migrations, on a gallery that keeps no enrolment faces: a migration then always waits for a decision
    // (its subject would have no template of the new model), so every state is reached without a race.
    {
        let faceless_dir = tempfile::tempdir().unwrap();
        let gallery = facematch::service::GalleryConfig {
            data_dir: faceless_dir.path().to_path_buf(),
            keep_enrolment_faces: false,
            ..Default::default()
        };
        let other = TestServer::start_with(gallery, ServerConfig::default());
        let admin = |method: Method, p: &str| client.request(method, other.url(p)).bearer_auth(other.key(Role::Admin));
        assert_eq!(admin(Method::POST, "/v1/watchlists").json(&json!({ "name": "wanted" })).send().await.unwrap().status(), 201);
        let enroller = |method: Method, p: &str| client.request(method, other.url(p)).bearer_auth(other.key(Role::Enroller));
        let subject: Value = enroller(Method::POST, "/v1/subjects")
            .json(&json!({ "watchlist": "wanted", "display_name": "Jane Roe" }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let faces_url = format!("/v1/subjects/{}/faces", subject["id"]);
        let enrolled = enroller(Method::POST, &faces_url).multipart(photo_form(&[("photo", &photo)])).send().await.unwrap();
        assert_eq!(enrolled.status(), 201);
        let migrations = "/v1/models/migrations";
        let one = "/v1/models/migrations/{id}";
        let to_dlib = json!({ "to": "dlib-resnet-v1" });
        let first = migrate_until_ready(&mut c, &other, &client).await;
        let cancel = "/v1/models/migrations/{id}/cancel";
        assert_eq!(c.check("post", cancel, admin(Method::POST, &format!("{first}/cancel"))).await.0, 200);
        assert_eq!(c.check("post", cancel, admin(Method::POST, &format!("{first}/cancel"))).await.0, 409);
        let switch = "/v1/models/migrations/{id}/switch";
        assert_eq!(c.check("post", switch, admin(Method::POST, &format!("{first}/switch"))).await.0, 409);
        let second = migrate_until_ready(&mut c, &other, &client).await;
        assert_eq!(c.check("post", switch, admin(Method::POST, &format!("{second}/switch"))).await.0, 200);
        assert_eq!(c.check("post", switch, admin(Method::POST, "/v1/models/migrations/999999/switch")).await.0, 404);
        assert_eq!(c.check("post", cancel, admin(Method::POST, "/v1/models/migrations/x/cancel")).await.0, 400);
        assert_eq!(c.check("get", one, admin(Method::GET, "/v1/models/migrations/999999")).await.0, 404);
        let unknown = json!({ "to": "no-such-model" });
        assert_eq!(c.check("post", migrations, admin(Method::POST, migrations).json(&unknown)).await.0, 422);
        assert_eq!(c.check("post", migrations, admin(Method::POST, migrations).json(&to_dlib)).await.0, 409, "serving it");
        assert_eq!(c.check("post", migrations, admin(Method::POST, migrations).json(&json!({ "model": "x" }))).await.0, 400);
        assert_eq!(c.check("get", migrations, admin(Method::GET, migrations)).await.0, 200);
        let checkpoint = client.get(other.url(migrations)).bearer_auth(other.key(Role::Checkpoint));
        assert_eq!(c.check("get", migrations, checkpoint).await.0, 403);
    }

    // Deletions.
    let face = "/v1/subjects/{id}/faces/{template}";
    assert_eq!(c.check("delete", face, req(Method::DELETE, &format!("{these}/{template}"))).await.0, 200);
    assert_eq!(c.check("delete", face, req(Method::DELETE, &format!("{these}/{template}"))).await.0, 404);
    assert_eq!(c.check("delete", face, req(Method::DELETE, &format!("{these}/x"))).await.0, 400);
    assert_eq!(c.check("delete", one, req(Method::DELETE, "/v1/watchlists/wanted")).await.0, 409);
    assert_eq!(c.check("delete", subject_path, req(Method::DELETE, &this)).await.0, 200);
    assert_eq!(c.check("delete", subject_path, req(Method::DELETE, &this)).await.0, 404);
    assert_eq!(c.check("delete", subject_path, req(Method::DELETE, "/v1/subjects/x")).await.0, 400);
    assert_eq!(c.check("delete", one, req(Method::DELETE, "/v1/watchlists/wanted")).await.0, 200);
    assert_eq!(c.check("delete", one, req(Method::DELETE, "/v1/watchlists/wanted")).await.0, 404);

    // The schemas have teeth: a search answer with a wrong type or a missing field does not validate.
    let mut schema = c.document["paths"]["/v1/search"]["post"]["responses"]["200"]["content"]["application/json"]["schema"].clone();
    schema["components"] = c.document["components"].clone();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let mut broken = result.clone();
    broken["faces"][0]["candidates"][0]["fpir_extrapolated"] = json!("no");
    assert!(!validator.is_valid(&broken), "a string where a boolean belongs must not validate");
    broken.as_object_mut().unwrap().remove("search_id");
    assert!(!validator.is_valid(&broken));
    assert!(validator.is_valid(&result));

    // Every documented operation was exercised, with a success and, where it documents any, a refusal.
    for (path, operations) in c.document["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            let seen = c.seen.get(&(method.clone(), path.clone())).unwrap_or_else(|| panic!("{method} {path} was never exercised"));
            assert!(seen.iter().any(|s| *s < 300), "{method} {path}: no success exercised ({seen:?})");
            let documents_errors = operation["responses"].as_object().unwrap().keys().any(|s| s.starts_with('4'));
            assert!(!documents_errors || seen.iter().any(|s| *s >= 400), "{method} {path}: no refusal exercised ({seen:?})");
        }
    }
}

/// Starts a migration to dlib on `server` (whose gallery keeps no faces) and waits until it waits for a decision;
/// returns its path.
async fn migrate_until_ready(c: &mut Checker, server: &TestServer, client: &Client) -> String {
    let admin = |method: Method, p: &str| client.request(method, server.url(p)).bearer_auth(server.key(Role::Admin));
    let migrations = "/v1/models/migrations";
    let (s, started) = c.check("post", migrations, admin(Method::POST, migrations).json(&json!({ "to": "dlib-resnet-v1" }))).await;
    assert_eq!(s, 202, "{started}");
    let path = format!("/v1/models/migrations/{}", started["id"]);
    loop {
        let (s, report) = c.check("get", "/v1/models/migrations/{id}", admin(Method::GET, &path)).await;
        assert_eq!(s, 200, "{report}");
        if report["migration"]["state"] == "ready" {
            return path;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_and_methods_answer_with_the_error_shape() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), ServerConfig::default());
    let client = Client::new();
    let r = client.get(server.url("/v1/nothing")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "route_not_found");
    let r = client.put(server.url("/v1/stats")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "method_not_allowed");
}
