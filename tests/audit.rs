//! The audit trail is complete and atomic with the changes it records: every changing HTTP route and CLI command,
//! on a real server or binary over a real SQLite file, leaves exactly one entry naming the action, the caller and
//! the object; a refused change leaves none; and a change whose audit entry cannot be written does not happen.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{photo_form, TestServer};
use facematch::http::ServerConfig;
use facematch::service::Role;
use reqwest::{Client, RequestBuilder, StatusCode};
use serde_json::{json, Value};

/// The request with the key of `role` and a stated purpose.
fn as_caller(server: &TestServer, request: RequestBuilder, role: &str) -> RequestBuilder {
    let role: Role = role.parse().unwrap();
    request.bearer_auth(server.key(role)).header("x-facematch-purpose", "case 2026/7")
}

async fn audit_page(client: &Client, server: &TestServer) -> Value {
    let r = as_caller(server, client.get(server.url("/v1/audit?per_page=200")), "auditor").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.unwrap()
}

/// Runs `request`, expects `status`, and returns its body with the audit entries it added (oldest first).
async fn audited(client: &Client, server: &TestServer, request: RequestBuilder, status: StatusCode) -> (Value, Vec<Value>) {
    let before = audit_page(client, server).await["total"].as_u64().unwrap();
    let response = request.send().await.unwrap();
    let got = response.status();
    let body: Value = if response.headers().get("content-type").is_some_and(|v| v == "image/jpeg") {
        json!({ "jpeg_bytes": response.bytes().await.unwrap().len() })
    } else {
        response.json().await.unwrap()
    };
    assert_eq!(got, status, "{body}");
    let page = audit_page(client, server).await;
    let added = (page["total"].as_u64().unwrap() - before) as usize;
    let mut entries: Vec<Value> = page["items"].as_array().unwrap()[..added].to_vec();
    entries.reverse();
    (body, entries)
}

fn assert_one(entries: &[Value], action: &str, role: &str, target: Option<&str>) {
    assert_eq!(entries.len(), 1, "exactly one audit entry for {action}: {entries:?}");
    let entry = &entries[0];
    assert_eq!(entry["action"], action, "{entry}");
    // Keys are named `test <role>` (tests/common) or by the CLI test; the audit adds the key's public id.
    let actor = entry["actor"].as_str().unwrap();
    assert!(actor.starts_with(&format!("test {role} (")) && actor.ends_with(')'), "{entry}");
    assert_eq!(entry["role"], role, "{entry}");
    assert_eq!(entry["purpose"], "case 2026/7", "{entry}");
    assert_eq!(entry["target"].as_str(), target, "{entry}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_changing_route_leaves_exactly_one_audit_entry_and_a_refusal_none() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), ServerConfig::default());
    let client = Client::new();
    let photo = common::deepface().join("id05/img14.jpg");
    let probe = common::deepface().join("id05/img15.jpg");

    let request = as_caller(&server, client.post(server.url("/v1/watchlists")), "admin").json(&json!({ "name": "wanted" }));
    let (_, entries) = audited(&client, &server, request, StatusCode::CREATED).await;
    assert_one(&entries, "create_watchlist", "admin", Some("watchlist/wanted"));

    let request = as_caller(&server, client.post(server.url("/v1/subjects")), "enroller")
        .json(&json!({ "watchlist": "wanted", "display_name": "Jane Roe", "external_ref": "A-1" }));
    let (subject, entries) = audited(&client, &server, request, StatusCode::CREATED).await;
    let id = subject["id"].as_i64().unwrap();
    assert_one(&entries, "create_subject", "enroller", Some(&format!("subject/{id}")));

    let request = as_caller(&server, client.patch(server.url(&format!("/v1/subjects/{id}"))), "enroller")
        .json(&json!({ "display_name": "Jane R. Roe" }));
    let (_, entries) = audited(&client, &server, request, StatusCode::OK).await;
    assert_one(&entries, "update_subject", "enroller", Some(&format!("subject/{id}")));

    let request = as_caller(&server, client.post(server.url(&format!("/v1/subjects/{id}/faces"))), "enroller")
        .multipart(photo_form(&[("photo", &photo)]));
    let (enrolled, entries) = audited(&client, &server, request, StatusCode::CREATED).await;
    let template = enrolled["results"][0]["template"]["id"].as_i64().unwrap();
    assert_one(&entries, "enroll", "enroller", Some(&format!("subject/{id}/faces/{template}")));

    // Uses are audited like changes: a search, a 1:1 comparison, a view of an enrolled face.
    let form = photo_form(&[("photo", &probe)]).text("mode", "investigation");
    let request = as_caller(&server, client.post(server.url("/v1/search")), "investigator").multipart(form);
    let (_, entries) = audited(&client, &server, request, StatusCode::OK).await;
    assert_one(&entries, "search", "investigator", None);
    let form = photo_form(&[("photo", &probe)]).text("subject_id", id.to_string());
    let request = as_caller(&server, client.post(server.url("/v1/verify")), "checkpoint").multipart(form);
    let (_, entries) = audited(&client, &server, request, StatusCode::OK).await;
    assert_one(&entries, "verify", "checkpoint", Some(&format!("subject/{id}")));
    let url = server.url(&format!("/v1/subjects/{id}/faces/{template}/thumbnail"));
    let (_, entries) = audited(&client, &server, as_caller(&server, client.get(url), "investigator"), StatusCode::OK).await;
    assert_one(&entries, "view_thumbnail", "investigator", Some(&format!("subject/{id}/faces/{template}")));

    // Refused changes leave nothing: a duplicate watchlist, an unknown watchlist, a duplicate photo, a non-empty
    // watchlist, a template that is not there.
    let refusals = [
        (as_caller(&server, client.post(server.url("/v1/watchlists")), "admin").json(&json!({ "name": "wanted" })), StatusCode::CONFLICT),
        (
            as_caller(&server, client.post(server.url("/v1/subjects")), "enroller").json(&json!({ "watchlist": "nowhere", "display_name": "x" })),
            StatusCode::NOT_FOUND,
        ),
        (
            as_caller(&server, client.post(server.url(&format!("/v1/subjects/{id}/faces"))), "enroller").multipart(photo_form(&[("photo", &photo)])),
            StatusCode::CONFLICT,
        ),
        (as_caller(&server, client.delete(server.url("/v1/watchlists/wanted")), "admin"), StatusCode::CONFLICT),
        (as_caller(&server, client.delete(server.url(&format!("/v1/subjects/{id}/faces/999999"))), "enroller"), StatusCode::NOT_FOUND),
    ];
    for (request, status) in refusals {
        let (body, entries) = audited(&client, &server, request, status).await;
        assert!(entries.is_empty(), "a refusal ({body}) must not be audited as a change: {entries:?}");
    }

    let url = server.url(&format!("/v1/subjects/{id}/faces/{template}"));
    let (_, entries) = audited(&client, &server, as_caller(&server, client.delete(url), "enroller"), StatusCode::OK).await;
    assert_one(&entries, "delete_template", "enroller", Some(&format!("subject/{id}/faces/{template}")));

    let url = server.url(&format!("/v1/subjects/{id}"));
    let (_, entries) = audited(&client, &server, as_caller(&server, client.delete(url), "enroller"), StatusCode::OK).await;
    assert_one(&entries, "delete_subject", "enroller", Some(&format!("subject/{id}")));

    let url = server.url("/v1/watchlists/wanted");
    let (_, entries) = audited(&client, &server, as_caller(&server, client.delete(url), "admin"), StatusCode::OK).await;
    assert_one(&entries, "delete_watchlist", "admin", Some("watchlist/wanted"));

    let r = as_caller(&server, client.get(server.url("/v1/audit/verify")), "auditor").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let verdict: Value = r.json().await.unwrap();
    assert_eq!(verdict["status"], "intact");

    // A caller without a key, or whose role may not make the change, is refused before anything happens.
    let request = client.post(server.url("/v1/watchlists")).header("x-facematch-role", "admin").json(&json!({ "name": "x" }));
    let (body, entries) = audited(&client, &server, request, StatusCode::UNAUTHORIZED).await;
    assert_eq!(body["error"]["code"], "missing_key");
    assert!(entries.is_empty());
    let request = as_caller(&server, client.post(server.url("/v1/watchlists")), "enroller").json(&json!({ "name": "x" }));
    let (body, entries) = audited(&client, &server, request, StatusCode::FORBIDDEN).await;
    assert_eq!(body["error"]["code"], "forbidden");
    assert!(entries.is_empty());
}

/// Makes every audit append of the gallery in `data_dir` fail, as a full disk or a broken audit table would.
fn break_audit(data_dir: &Path) {
    let db = rusqlite::Connection::open(data_dir.join("gallery.sqlite3")).unwrap();
    db.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
    db.execute_batch("CREATE TRIGGER audit_unavailable BEFORE INSERT ON audit BEGIN SELECT RAISE(ABORT, 'audit unavailable'); END;")
        .unwrap();
}

fn repair_audit(data_dir: &Path) {
    let db = rusqlite::Connection::open(data_dir.join("gallery.sqlite3")).unwrap();
    db.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
    db.execute_batch("DROP TRIGGER audit_unavailable;").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_whose_audit_entry_cannot_be_written_does_not_happen() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), ServerConfig::default());
    let client = Client::new();
    let photo = common::deepface().join("id05/img14.jpg");
    let r = as_caller(&server, client.post(server.url("/v1/watchlists")), "admin").json(&json!({ "name": "wanted" })).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = as_caller(&server, client.post(server.url("/v1/subjects")), "enroller")
        .json(&json!({ "watchlist": "wanted", "display_name": "Jane Roe" }))
        .send()
        .await
        .unwrap();
    let id = r.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    let stats_before: Value = as_caller(&server, client.get(server.url("/v1/stats")), "admin").send().await.unwrap().json().await.unwrap();

    break_audit(dir.path());
    let attempts = [
        as_caller(&server, client.post(server.url("/v1/watchlists")), "admin").json(&json!({ "name": "other" })),
        as_caller(&server, client.post(server.url("/v1/subjects")), "enroller").json(&json!({ "watchlist": "wanted", "display_name": "x" })),
        as_caller(&server, client.patch(server.url(&format!("/v1/subjects/{id}"))), "enroller").json(&json!({ "display_name": "changed" })),
        as_caller(&server, client.post(server.url(&format!("/v1/subjects/{id}/faces"))), "enroller").multipart(photo_form(&[("photo", &photo)])),
        as_caller(&server, client.delete(server.url(&format!("/v1/subjects/{id}"))), "enroller"),
        as_caller(&server, client.delete(server.url("/v1/watchlists/wanted")), "admin"),
    ];
    for request in attempts {
        let r = request.send().await.unwrap();
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        // The client learns the change failed: nothing was acknowledged.
        assert!(status.is_server_error() || status == StatusCode::CONFLICT, "{status} {body}");
    }
    repair_audit(dir.path());

    let stats_after: Value = as_caller(&server, client.get(server.url("/v1/stats")), "admin").send().await.unwrap().json().await.unwrap();
    assert_eq!(stats_after["gallery"], stats_before["gallery"], "nothing changed while the audit could not be written");
    let subject: Value =
        as_caller(&server, client.get(server.url(&format!("/v1/subjects/{id}"))), "investigator").send().await.unwrap().json().await.unwrap();
    assert_eq!(subject["display_name"], "Jane Roe");
    assert_eq!(subject["template_count"], 0);
    let r = as_caller(&server, client.get(server.url("/v1/watchlists/other")), "admin").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // The index did not take the refused enrolment either.
    assert_eq!(stats_after["index"]["stats"]["live"], 0, "{stats_after}");
    let verdict: Value = as_caller(&server, client.get(server.url("/v1/audit/verify")), "auditor").send().await.unwrap().json().await.unwrap();
    assert_eq!(verdict["status"], "intact");
}

/// Runs `facematch ARGS --data-dir DATA_DIR --purpose …`, with `FACEMATCH_API_KEY` set to `key` when given.
fn facematch(data_dir: &Path, key: Option<&str>, args: &[&str]) -> (bool, Value) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_facematch"));
    command.env_remove("FACEMATCH_API_KEY");
    if let Some(key) = key {
        command.env("FACEMATCH_API_KEY", key);
    }
    let output = command
        .arg("--models-dir")
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models"))
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--purpose", "case 2026/7"])
        .env("FACEMATCH_LOG", "warn")
        .output()
        .expect("the facematch binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let value = serde_json::from_str(&stdout).unwrap_or(Value::String(stdout.to_string()));
    (output.status.success(), value)
}

/// One key per role, made with `facematch keys create` on the data directory, as a site makes its first keys.
struct CliKeys(std::collections::HashMap<&'static str, String>);

impl CliKeys {
    fn create(data_dir: &Path) -> CliKeys {
        let roles = ["checkpoint", "investigator", "enroller", "admin", "auditor"];
        CliKeys(
            roles
                .into_iter()
                .map(|role| {
                    let name = format!("test {role}");
                    let (ok, issued) = facematch(data_dir, None, &["keys", "create", "--name", &name, "--role", role]);
                    assert!(ok, "{issued}");
                    (role, issued["secret"].as_str().unwrap().to_owned())
                })
                .collect(),
        )
    }

    fn of(&self, role: &str) -> &str {
        &self.0[role]
    }
}

/// The audit entries a CLI command run with the key of `role` added, oldest first.
fn cli_audited(data_dir: &Path, keys: &CliKeys, role: &str, args: &[&str]) -> (bool, Value, Vec<Value>) {
    let total = |v: &Value| v["total"].as_u64().unwrap();
    let auditor = Some(keys.of("auditor"));
    let (_, before) = facematch(data_dir, auditor, &["audit", "list", "--per-page", "200"]);
    let (ok, output) = facematch(data_dir, Some(keys.of(role)), args);
    let (_, after) = facematch(data_dir, auditor, &["audit", "list", "--per-page", "200"]);
    let added = (total(&after) - total(&before)) as usize;
    let mut entries = after["items"].as_array().unwrap()[..added].to_vec();
    entries.reverse();
    (ok, output, entries)
}

#[test]
fn every_changing_cli_command_leaves_exactly_one_audit_entry_per_change() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path();
    // The first keys need no key: the operator of the data directory makes them, audited.
    let keys = CliKeys::create(dir);
    let (_, listed) = facematch(dir, Some(keys.of("auditor")), &["audit", "list"]);
    let made: Vec<&Value> = listed["items"].as_array().unwrap().iter().filter(|e| e["action"] == "create_key").collect();
    assert_eq!(made.len(), 5, "{listed}");
    assert!(made.iter().all(|e| e["role"] == "admin" && e["actor"].as_str().unwrap().starts_with("operator:")));
    assert!(!listed.to_string().contains(&keys.of("admin")[17..]), "a key's secret never reaches the audit trail");
    // Without a key, or with one whose role may not do it, a command is refused and changes nothing.
    let (ok, _, entries) = cli_audited(dir, &keys, "checkpoint", &["watchlists", "create", "wanted"]);
    assert!(!ok && entries.is_empty(), "{entries:?}");
    let (ok, _) = facematch(dir, None, &["watchlists", "create", "wanted"]);
    assert!(!ok);
    let (ok, _, entries) = cli_audited(dir, &keys, "admin", &["watchlists", "create", "wanted", "--alert-fpir", "0.01"]);
    assert!(ok);
    assert_one(&entries, "create_watchlist", "admin", Some("watchlist/wanted"));

    // Folder enrolment: one entry per subject it creates and per photo it enrols, none for a refused photo.
    let folder = tempfile::tempdir().unwrap();
    for (subject, photos) in [("id05", ["img14.jpg", "img15.jpg"]), ("id08", ["img34.jpg", "img35.jpg"])] {
        std::fs::create_dir(folder.path().join(subject)).unwrap();
        for photo in photos {
            std::fs::copy(common::deepface().join(subject).join(photo), folder.path().join(subject).join(photo)).unwrap();
        }
    }
    std::fs::write(folder.path().join("id08").join("blank.png"), blank_png()).unwrap();
    let report = folder.path().join("report.jsonl");
    let folder_arg = folder.path().to_str().unwrap().to_owned();
    let report_arg = report.to_str().unwrap().to_owned();
    let (_, summary, entries) =
        cli_audited(dir, &keys, "enroller", &["enroll", "--watchlist", "wanted", "--report", &report_arg, &folder_arg]);
    let enrolled = summary["summary"]["enrolled"].as_u64().unwrap() as usize;
    assert_eq!(enrolled, 4, "{summary}");
    assert_eq!(summary["summary"]["refused"], 1, "{summary}");
    let creates = entries.iter().filter(|e| e["action"] == "create_subject").count();
    let enrols = entries.iter().filter(|e| e["action"] == "enroll").count();
    assert_eq!((creates, enrols, entries.len()), (2, enrolled, 2 + enrolled), "{entries:?}");
    assert!(entries.iter().all(|e| e["actor"].as_str().unwrap().starts_with("test enroller (") && e["role"] == "enroller"));
    // The report names every photo, the refused one with its code.
    let lines: Vec<Value> =
        std::fs::read_to_string(&report).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), summary["summary"]["photos"].as_u64().unwrap() as usize);
    let refused: Vec<&Value> = lines.iter().filter(|l| l["status"] == "refused").collect();
    assert_eq!(refused.len(), 1);
    assert!(refused[0]["photo"].as_str().unwrap().ends_with("blank.png"));
    assert_eq!(refused[0]["code"], "no_face_detected");

    // A search from the command line is a use, audited like one from a checkpoint or an investigator.
    let probe = common::deepface().join("id05/img57.jpg");
    let (ok, result, entries) =
        cli_audited(dir, &keys, "investigator", &["search", probe.to_str().unwrap(), "--mode", "investigation", "--k", "3"]);
    assert!(ok, "{result}");
    assert_one(&entries, "search", "investigator", None);
    assert_eq!(entries[0]["id"], result["search_id"], "the answer names its audit entry");

    // Enrolling into a watchlist that does not exist needs one who may create it; an enroller may not.
    let (ok, _, entries) = cli_audited(dir, &keys, "enroller", &["enroll", "--watchlist", "missing", &folder_arg]);
    assert!(!ok && entries.is_empty(), "{entries:?}");
    let (ok, _, _) = cli_audited(dir, &keys, "admin", &["watchlists", "create", "missing"]);
    assert!(ok);
    let (_, _, entries) = cli_audited(dir, &keys, "enroller", &["enroll", "--watchlist", "missing", &folder_arg]);
    assert_eq!(entries[0]["action"], "create_subject", "{entries:?}");

    let subject = entries.iter().find(|e| e["action"] == "create_subject").unwrap()["target"].as_str().unwrap().to_owned();
    let id = subject.trim_start_matches("subject/").to_owned();
    let (ok, _, entries) = cli_audited(dir, &keys, "enroller", &["subjects", "delete", &id]);
    assert!(ok);
    assert_one(&entries, "delete_subject", "enroller", Some(&subject));

    let (ok, _, entries) = cli_audited(dir, &keys, "admin", &["watchlists", "create", "spare"]);
    assert!(ok);
    assert_one(&entries, "create_watchlist", "admin", Some("watchlist/spare"));
    let (ok, _, entries) = cli_audited(dir, &keys, "admin", &["watchlists", "delete", "spare"]);
    assert!(ok);
    assert_one(&entries, "delete_watchlist", "admin", Some("watchlist/spare"));
    // A refused deletion (the watchlist still has subjects) changes nothing and leaves nothing.
    let (ok, _, entries) = cli_audited(dir, &keys, "admin", &["watchlists", "delete", "wanted"]);
    assert!(!ok);
    assert!(entries.is_empty(), "{entries:?}");

    let (ok, verdict) = facematch(dir, Some(keys.of("auditor")), &["audit", "verify"]);
    assert!(ok);
    assert_eq!(verdict["status"], "intact");
}

fn blank_png() -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    image::RgbImage::from_pixel(320, 240, image::Rgb([90, 120, 150])).write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}
