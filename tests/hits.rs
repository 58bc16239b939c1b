//! Hits and their review by two people, on a real server with real models and photos: a checkpoint search of an
//! enrolled person makes a hit with a probe crop; two different investigators confirm it, nobody decides twice,
//! disagreement is a dispute, an officer acknowledges the alert, the export lists only confirmed hits, and a key
//! limited to another watchlist sees none of it. Every decision, view and export is audited, never with images.

mod common;

use common::{client_with, photo_form, TestServer};
use facematch::http::ServerConfig;
use facematch::service::Role;
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

/// A key made through the core by the data directory's operator, as `facematch keys create` makes it.
fn key(server: &TestServer, name: &str, role: Role, watchlists: Option<&[&str]>) -> Client {
    client_with(&common::named_key(server, name, role, watchlists))
}

async fn json_of(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// A checkpoint search of `photo` at gate 3 for `case`; returns the answer.
async fn checkpoint_search(server: &TestServer, client: &Client, photo: &str, case: &str) -> Value {
    let form = photo_form(&[("photo", &common::deepface().join(photo))]).text("checkpoint", "gate 3").text("case", case.to_owned());
    let (status, body) = json_of(client.post(server.url("/v1/search")).multipart(form).send().await.unwrap()).await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn decide(server: &TestServer, client: &Client, hit: i64, decision: &str, comment: &str) -> (StatusCode, Value) {
    let url = server.url(&format!("/v1/hits/{hit}/decisions"));
    json_of(client.post(url).json(&json!({ "decision": decision, "comment": comment })).send().await.unwrap()).await
}

async fn get(client: &Client, url: String) -> (StatusCode, Value) {
    json_of(client.get(url).send().await.unwrap()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_alert_becomes_a_hit_that_two_people_review() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), ServerConfig::default());
    let admin = server.client(Role::Admin);
    for name in ["wanted", "elsewhere"] {
        assert_eq!(admin.post(server.url("/v1/watchlists")).json(&json!({ "name": name })).send().await.unwrap().status(), 201);
    }
    let enroller = server.client(Role::Enroller);
    let body = json!({ "watchlist": "wanted", "display_name": "Jane Roe", "external_ref": "N-114" });
    let (_, subject) = json_of(enroller.post(server.url("/v1/subjects")).json(&body).send().await.unwrap()).await;
    let subject = subject["id"].as_i64().unwrap();
    let form = photo_form(&[("photo", &common::deepface().join("id05/img14.jpg"))]);
    let r = enroller.post(server.url(&format!("/v1/subjects/{subject}/faces"))).multipart(form).send().await.unwrap();
    assert_eq!(r.status(), 201);

    // The checkpoint search of another photo of her alerts, and the alert is a stored hit.
    let checkpoint = server.client(Role::Checkpoint);
    let answer = checkpoint_search(&server, &checkpoint, "id05/img15.jpg", "2026/114").await;
    let candidate = &answer["faces"][0]["candidates"][0];
    assert_eq!((candidate["subject_id"].as_i64(), candidate["alert"].as_bool()), (Some(subject), Some(true)), "{answer}");
    let hit = candidate["hit_id"].as_i64().expect("the alert names its hit");
    assert_eq!(answer["hits"], json!([hit]));
    let (status, stored) = get(&checkpoint, server.url(&format!("/v1/hits/{hit}"))).await;
    assert_eq!(status, 200, "{stored}");
    assert_eq!(stored["state"], "undecided");
    assert_eq!(stored["source"], "checkpoint");
    assert_eq!((stored["subject_id"].as_i64(), stored["template_id"].clone()), (Some(subject), candidate["template_id"].clone()));
    assert_eq!((stored["display_name"].as_str(), stored["watchlist"].as_str()), (Some("Jane Roe"), Some("wanted")));
    assert_eq!((stored["checkpoint"].as_str(), stored["case"].as_str()), (Some("gate 3"), Some("2026/114")));
    assert_eq!(stored["searched_by"]["name"], "test checkpoint");
    assert_eq!(stored["search_id"], answer["search_id"]);
    assert_eq!((stored["similarity"].clone(), stored["fpir"].clone()), (candidate["similarity"].clone(), candidate["fpir"].clone()));
    assert!(stored.get("embedding").is_none() && stored["has_probe"] == true);

    // An investigation-mode search of the same photo makes none.
    let investigator = server.client(Role::Investigator);
    let form = photo_form(&[("photo", &common::deepface().join("id05/img15.jpg"))]).text("mode", "investigation");
    let (_, investigation) = json_of(investigator.post(server.url("/v1/search")).multipart(form).send().await.unwrap()).await;
    assert_eq!(investigation["hits"], json!([]));
    assert!(investigation["faces"][0]["candidates"][0]["hit_id"].is_null());

    // The probe crop: a JPEG of the face, the size of the enrolled thumbnail, for reviewers only.
    let probe = investigator.get(server.url(&format!("/v1/hits/{hit}/probe.jpg"))).send().await.unwrap();
    assert_eq!((probe.status(), probe.headers()["content-type"].to_str().unwrap()), (StatusCode::OK, "image/jpeg"));
    let probe = image::load_from_memory(&probe.bytes().await.unwrap()).expect("the probe is an image");
    let thumbnail = investigator
        .get(server.url(&format!("/v1/subjects/{subject}/faces/{}/thumbnail", stored["template_id"])))
        .send()
        .await
        .unwrap();
    let thumbnail = image::load_from_memory(&thumbnail.bytes().await.unwrap()).expect("the thumbnail is an image");
    assert_eq!((probe.width(), probe.height()), (thumbnail.width(), thumbnail.height()));
    let (status, refused) = get(&checkpoint, server.url(&format!("/v1/hits/{hit}/probe.jpg"))).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("forbidden")));

    // The officer acknowledges the alert once; acknowledging is not reviewing, and reviewing is not theirs.
    let url = server.url(&format!("/v1/hits/{hit}/acknowledge"));
    let (status, acknowledged) = json_of(checkpoint.post(&url).send().await.unwrap()).await;
    assert_eq!(status, 200, "{acknowledged}");
    assert_eq!((acknowledged["acknowledged_by"]["name"].as_str(), acknowledged["state"].as_str()), (Some("test checkpoint"), Some("undecided")));
    let (status, again) = json_of(checkpoint.post(&url).send().await.unwrap()).await;
    assert_eq!((status, again["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("already_acknowledged")));
    assert_eq!(investigator.post(&url).send().await.unwrap().status(), 403);
    let (status, refused) = decide(&server, &checkpoint, hit, "potential_match", "looks like her").await;
    assert_eq!((status, refused["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("forbidden")));

    // Two different investigators confirm it; nobody decides twice, not even with another key of their own.
    let (status, first) = decide(&server, &investigator, hit, "potential_match", "same ear shape and scar").await;
    assert_eq!((status, first["state"].as_str()), (StatusCode::CREATED, Some("awaiting_second")), "{first}");
    let (status, twice) = decide(&server, &investigator, hit, "potential_match", "sure").await;
    assert_eq!((status, twice["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("already_decided")));
    let same_person = key(&server, "test investigator", Role::Investigator, None);
    let (status, twice) = decide(&server, &same_person, hit, "potential_match", "second key").await;
    assert_eq!((status, twice["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("already_decided")));
    let second = key(&server, "second examiner", Role::Investigator, None);
    let (status, confirmed) = decide(&server, &second, hit, "potential_match", "agree: potential match").await;
    assert_eq!((status, confirmed["state"].as_str()), (StatusCode::CREATED, Some("confirmed")), "{confirmed}");
    let reviewers: Vec<&str> = confirmed["reviews"].as_array().unwrap().iter().map(|r| r["reviewer"]["name"].as_str().unwrap()).collect();
    assert_eq!(reviewers, ["test investigator", "second examiner"]);
    let third = key(&server, "third examiner", Role::Investigator, None);
    let (status, closed) = decide(&server, &third, hit, "no_candidate", "late").await;
    assert_eq!((status, closed["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("review_closed")));
    let (status, bad) = decide(&server, &third, hit, "maybe", "x").await;
    assert_eq!((status, bad["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_json")));

    // A second alert for the same case: the reviewers disagree, and the dispute keeps both decisions.
    let answer = checkpoint_search(&server, &checkpoint, "id05/img13.jpg", "2026/114").await;
    let disputed = answer["hits"][0].as_i64().unwrap_or_else(|| panic!("a second alert: {answer}"));
    assert_eq!(decide(&server, &investigator, disputed, "potential_match", "similar").await.0, 201);
    let (status, dispute) = decide(&server, &second, disputed, "no_candidate", "different nose").await;
    assert_eq!((status, dispute["state"].as_str()), (StatusCode::CREATED, Some("disputed")), "{dispute}");
    let decisions: Vec<&str> = dispute["reviews"].as_array().unwrap().iter().map(|r| r["decision"].as_str().unwrap()).collect();
    assert_eq!(decisions, ["potential_match", "no_candidate"]);

    // The queues.
    let ids = |page: &Value| -> Vec<i64> { page["items"].as_array().unwrap().iter().map(|h| h["id"].as_i64().unwrap()).collect() };
    let (_, page) = get(&investigator, server.url("/v1/hits?state=confirmed")).await;
    assert_eq!(ids(&page), [hit]);
    let (_, page) = get(&checkpoint, server.url("/v1/hits?state=disputed&watchlist=wanted&case=2026/114&checkpoint=gate%203&source=checkpoint")).await;
    assert_eq!(ids(&page), [disputed]);
    let (_, page) = get(&investigator, server.url("/v1/hits?limit=1")).await;
    assert_eq!((ids(&page), page["next_after"].as_i64()), (vec![hit], Some(hit)));
    let (_, page) = get(&investigator, server.url(&format!("/v1/hits?limit=1&after={hit}"))).await;
    assert_eq!((ids(&page), page["next_after"].clone()), (vec![disputed], Value::Null));
    for bad in ["state=maybe", "source=camera", "limit=0", "after=x"] {
        let (status, body) = get(&investigator, server.url(&format!("/v1/hits?{bad}"))).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }

    // The export of the case lists only the confirmed hit, one JSON line each.
    let export = investigator.get(server.url("/v1/cases/2026%2F114/confirmed")).send().await.unwrap();
    assert_eq!((export.status(), export.headers()["content-type"].to_str().unwrap()), (StatusCode::OK, "application/x-ndjson"));
    let text = export.text().await.unwrap();
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert_eq!((lines[0]["id"].as_i64(), lines[0]["state"].as_str()), (Some(hit), Some("confirmed")));
    assert_eq!(lines[0]["reviews"].as_array().unwrap().len(), 2);
    let (_, other_case) = (200, investigator.get(server.url("/v1/cases/2026%2F999/confirmed")).send().await.unwrap().text().await.unwrap());
    assert!(other_case.is_empty());
    assert_eq!(checkpoint.get(server.url("/v1/cases/2026%2F114/confirmed")).send().await.unwrap().status(), 403);

    // A key limited to another watchlist sees none of it and can decide nothing.
    let outsider = key(&server, "elsewhere examiner", Role::Investigator, Some(&["elsewhere"]));
    let (status, page) = get(&outsider, server.url("/v1/hits")).await;
    assert_eq!((status, ids(&page)), (StatusCode::OK, vec![]));
    let (status, refused) = get(&outsider, server.url(&format!("/v1/hits/{hit}"))).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("watchlist_forbidden")));
    let (status, _) = decide(&server, &outsider, disputed, "inconclusive", "cannot tell").await;
    assert_eq!(status, 403);
    assert_eq!(get(&outsider, server.url(&format!("/v1/hits/{hit}/probe.jpg"))).await.0, 403);
    assert_eq!(get(&outsider, server.url("/v1/hits?watchlist=wanted")).await.0, 403);
    let export = outsider.get(server.url("/v1/cases/2026%2F114/confirmed")).send().await.unwrap();
    assert_eq!((export.status(), export.text().await.unwrap()), (StatusCode::OK, String::new()));

    // The trail: every decision, acknowledgement, probe view and export, with who and the comment's length only.
    let auditor = server.client(Role::Auditor);
    let (_, audit) = get(&auditor, server.url("/v1/audit?per_page=1000")).await;
    let entries = audit["items"].as_array().unwrap();
    let of = |action: &str| entries.iter().filter(|e| e["action"] == action).cloned().collect::<Vec<_>>();
    let reviews = of("review_hit");
    assert_eq!(reviews.len(), 4, "four accepted decisions, refusals none");
    let first_review = reviews.iter().find(|e| e["target"] == format!("hit/{hit}") && e["details"]["state"] == "awaiting_second").unwrap();
    assert_eq!(first_review["role"], "investigator");
    assert_eq!(first_review["details"]["comment_chars"], "same ear shape and scar".len());
    assert!(first_review["actor"].as_str().unwrap().starts_with("test investigator ("));
    assert_eq!(of("acknowledge_hit").len(), 1);
    assert_eq!(of("view_hit_probe").len(), 1);
    let exports = of("export_hits");
    assert_eq!(exports.len(), 3);
    assert!(exports.iter().any(|e| e["target"] == "case/2026/114" && e["details"]["hits"] == 1));
    let search = entries.iter().find(|e| e["id"] == answer["search_id"]).expect("the search's entry");
    assert_eq!(search["details"]["hits"], 1);
    assert!(!audit.to_string().contains("same ear shape"), "comments stay out of the trail");
    let (_, verdict) = get(&auditor, server.url("/v1/audit/verify")).await;
    assert_eq!(verdict["status"], "intact", "{verdict}");
}
