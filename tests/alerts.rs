//! Alerts that reach someone, on a real server with real models and photos: a checkpoint search that alerts is
//! pushed at once to every open stream of a key that may see it (and to no other), a reconnecting stream replays
//! what it missed, a webhook receiver gets the hit signed and retried until it accepts it — also across a restart —
//! and a server with a stream open still stops.

mod common;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::HeaderMap;
use common::{client_with, photo_form, TestServer};
use facematch::http::ServerConfig;
use facematch::service::{AlertsConfig, GalleryConfig, KeyRequest, Principal, Role};
use parking_lot::Mutex;
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

/// Generous: the machine is slow and shared; the tests wait for what must come, never time it.
const PATIENCE: Duration = Duration::from_secs(90);

fn key(server: &TestServer, name: &str, role: Role, watchlists: Option<&[&str]>) -> Client {
    client_with(&common::named_key(server, name, role, watchlists))
}

async fn json_of(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// `wanted` and `elsewhere`, with Jane Roe enrolled on `wanted` from a real photo; returns her subject id.
async fn gallery(server: &TestServer) -> i64 {
    let admin = server.client(Role::Admin);
    for name in ["wanted", "elsewhere"] {
        assert_eq!(admin.post(server.url("/v1/watchlists")).json(&json!({ "name": name })).send().await.unwrap().status(), 201);
    }
    enroll(server, "wanted").await
}

/// Jane Roe on `watchlist`, enrolled from id05/img14.jpg.
async fn enroll(server: &TestServer, watchlist: &str) -> i64 {
    let enroller = server.client(Role::Enroller);
    let body = json!({ "watchlist": watchlist, "display_name": "Jane Roe" });
    let (_, subject) = json_of(enroller.post(server.url("/v1/subjects")).json(&body).send().await.unwrap()).await;
    let subject = subject["id"].as_i64().expect("subject made");
    let form = photo_form(&[("photo", &common::deepface().join("id05/img14.jpg"))]);
    let r = enroller.post(server.url(&format!("/v1/subjects/{subject}/faces"))).multipart(form).send().await.unwrap();
    assert_eq!(r.status(), 201);
    subject
}

/// A checkpoint search of another photo of her, which alerts; returns the hits it made.
async fn alerting_search(server: &TestServer) -> Vec<i64> {
    let form = photo_form(&[("photo", &common::deepface().join("id05/img15.jpg"))]).text("checkpoint", "gate 3");
    let r = server.client(Role::Checkpoint).post(server.url("/v1/search")).multipart(form).send().await.unwrap();
    let (status, answer) = json_of(r).await;
    assert_eq!(status, 200, "{answer}");
    let hits: Vec<i64> = answer["hits"].as_array().unwrap().iter().map(|h| h.as_i64().unwrap()).collect();
    assert!(!hits.is_empty(), "the search alerts: {answer}");
    hits
}

/// One server-sent event.
#[derive(Debug)]
struct Event {
    id: Option<i64>,
    event: String,
    data: Value,
}

/// An open stream, read event by event.
struct Events {
    response: reqwest::Response,
    buffer: String,
}

impl Events {
    async fn open(client: &Client, url: String, last_event_id: Option<i64>) -> Events {
        let mut request = client.get(url);
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id.to_string());
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(content_type.starts_with("text/event-stream"), "{content_type}");
        assert!(response.headers().get("content-length").is_none(), "a stream has no length");
        assert!(response.headers().get("content-encoding").is_none(), "nothing buffers it to compress");
        Events { response, buffer: String::new() }
    }

    /// The next event (comments skipped); panics if none comes in `PATIENCE`, `None` when the stream ended.
    async fn next(&mut self) -> Option<Event> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (None, None, None);
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        id = Some(v.parse().unwrap());
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        event = Some(v.to_owned());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data = Some(serde_json::from_str(v).unwrap());
                    }
                }
                if let Some(event) = event {
                    return Some(Event { id, event, data: data.unwrap_or(Value::Null) });
                }
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk()).await.expect("an event in time");
            match chunk {
                Ok(Some(bytes)) => self.buffer.push_str(std::str::from_utf8(&bytes).unwrap()),
                Ok(None) | Err(_) => return None,
            }
        }
    }

    async fn next_hit(&mut self) -> Event {
        let event = self.next().await.expect("the stream is open");
        assert_eq!(event.event, "hit", "{event:?}");
        assert_eq!(event.id, event.data["id"].as_i64(), "the event id is the hit's");
        event
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_shows_each_key_the_hits_it_may_see_as_they_happen_and_replays_what_it_missed() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), ServerConfig::default());
    let jane = gallery(&server).await;
    let checkpoint = server.client(Role::Checkpoint);
    let stream_url = server.url("/v1/alerts/stream");
    let mut everything = Events::open(&checkpoint, stream_url.clone(), None).await;
    let outsider = key(&server, "elsewhere desk", Role::Checkpoint, Some(&["elsewhere"]));
    let mut elsewhere = Events::open(&outsider, stream_url.clone(), None).await;

    // The alert arrives as it happens, exactly as GET /v1/hits/{id} shows it.
    let first = alerting_search(&server).await;
    assert_eq!(first.len(), 1);
    let event = everything.next_hit().await;
    assert_eq!(event.id, Some(first[0]));
    assert_eq!((event.data["subject_id"].as_i64(), event.data["watchlist"].as_str()), (Some(jane), Some("wanted")));
    assert_eq!(event.data["display_name"], "Jane Roe");
    let (_, stored) = json_of(checkpoint.get(server.url(&format!("/v1/hits/{}", first[0]))).send().await.unwrap()).await;
    assert_eq!(event.data, stored);

    // She is put on `elsewhere` too: the next search alerts on both, and the key limited to `elsewhere` sees only
    // that hit — its first event, so it never saw the one before.
    let on_elsewhere = enroll(&server, "elsewhere").await;
    let second = alerting_search(&server).await;
    assert_eq!(second.len(), 2, "one hit per watchlist");
    let seen = elsewhere.next_hit().await;
    assert_eq!((seen.data["watchlist"].as_str(), seen.data["subject_id"].as_i64()), (Some("elsewhere"), Some(on_elsewhere)));
    assert!(second.contains(&seen.id.unwrap()));
    let both = [everything.next_hit().await.id.unwrap(), everything.next_hit().await.id.unwrap()];
    assert_eq!(both.to_vec(), second);

    // A reconnecting client replays what came after its last event, from the store, then goes on live.
    let mut resumed = Events::open(&checkpoint, stream_url.clone(), Some(first[0])).await;
    assert_eq!(resumed.next_hit().await.id, Some(second[0]));
    assert_eq!(resumed.next_hit().await.id, Some(second[1]));
    let mut filtered = Events::open(&checkpoint, server.url("/v1/alerts/stream?after=0&watchlist=wanted&source=checkpoint"), None).await;
    assert_eq!(filtered.next_hit().await.id, Some(first[0]));
    let next = filtered.next_hit().await;
    assert_eq!(next.data["watchlist"], "wanted");
    let third = alerting_search(&server).await;
    assert_eq!(resumed.next_hit().await.id, Some(third[0]));

    // Refusals come before the stream: no key, a role without hits, another's watchlist, a bad filter.
    assert_eq!(Client::new().get(&stream_url).send().await.unwrap().status(), 401);
    assert_eq!(server.client(Role::Admin).get(&stream_url).send().await.unwrap().status(), 403);
    let (status, body) = json_of(outsider.get(format!("{stream_url}?watchlist=wanted")).send().await.unwrap()).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("watchlist_forbidden")));
    assert_eq!(checkpoint.get(format!("{stream_url}?source=camera")).send().await.unwrap().status(), 400);

    // The console's queue of open alerts: unacknowledged checkpoint hits; acknowledging one takes it off.
    let open_ids = |page: &Value| -> Vec<i64> { page["items"].as_array().unwrap().iter().map(|h| h["id"].as_i64().unwrap()).collect() };
    let (_, page) = json_of(checkpoint.get(server.url("/v1/hits?open=true")).send().await.unwrap()).await;
    assert_eq!(open_ids(&page), [first.clone(), second.clone(), third.clone()].concat());
    let r = checkpoint.post(server.url(&format!("/v1/hits/{}/acknowledge", first[0]))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // Open streams hear of it: the hit as it is now, without an id (resuming stays by new hits).
    assert_eq!(everything.next_hit().await.id, Some(third[0]));
    assert_eq!(everything.next_hit().await.id, Some(third[1]));
    let updated = everything.next().await.expect("the stream is open");
    assert_eq!((updated.event.as_str(), updated.id, updated.data["id"].as_i64()), ("hit_updated", None, Some(first[0])));
    assert_eq!(updated.data["acknowledged_by"]["name"], "test checkpoint");
    let (_, stored) = json_of(checkpoint.get(server.url(&format!("/v1/hits/{}", first[0]))).send().await.unwrap()).await;
    assert_eq!(updated.data, stored);
    let (_, page) = json_of(checkpoint.get(server.url("/v1/hits?open=true")).send().await.unwrap()).await;
    assert_eq!(open_ids(&page), [second.clone(), third.clone()].concat());
    assert_eq!(checkpoint.get(server.url("/v1/hits?open=maybe")).send().await.unwrap().status(), 400);
}

/// What the receiver saw of one request.
struct Received {
    headers: HeaderMap,
    body: Vec<u8>,
}

/// A webhook receiver on 127.0.0.1:0: answers each request with the next planned status (then `fallback`).
struct Receiver {
    url: String,
    fallback: Arc<Mutex<u16>>,
    received: tokio::sync::mpsc::UnboundedReceiver<Received>,
}

impl Receiver {
    async fn start(plan: &[u16], fallback: u16) -> Receiver {
        let plan = Arc::new(Mutex::new(plan.iter().copied().collect::<VecDeque<u16>>()));
        let fallback = Arc::new(Mutex::new(fallback));
        let (tx, received) = tokio::sync::mpsc::unbounded_channel();
        let (answers, otherwise) = (plan, fallback.clone());
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
                let status = answers.lock().pop_front().unwrap_or(*otherwise.lock());
                let _ = tx.send(Received { headers, body: body.to_vec() });
                async move { axum::http::StatusCode::from_u16(status).unwrap() }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { url, fallback, received }
    }

    async fn next(&mut self) -> Received {
        tokio::time::timeout(PATIENCE, self.received.recv()).await.expect("a delivery in time").expect("receiver open")
    }
}

/// What a receiver does: the signature over `<timestamp>.<body>` with the webhook's secret, and a recent timestamp.
fn verify(received: &Received, secret: &str) -> Value {
    let header = |name: &str| received.headers[name].to_str().unwrap().to_owned();
    assert_eq!(header("x-facematch-event"), "hit");
    assert_eq!(header("content-type"), "application/json");
    let timestamp: u64 = header("x-facematch-timestamp").parse().unwrap();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    assert!(timestamp.abs_diff(now) < 300, "timestamp {timestamp}, now {now}");
    use hmac::Mac;
    let mut mac = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(&received.body);
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(header("x-facematch-signature"), expected, "the signature verifies");
    serde_json::from_slice(&received.body).unwrap()
}

fn quick_alerts() -> AlertsConfig {
    AlertsConfig { webhook_backoff_s: 0.05, webhook_timeout_s: 5.0, poll_interval_s: 0.1, keepalive_s: 0.5, ..AlertsConfig::default() }
}

fn start(dir: &std::path::Path, alerts: AlertsConfig) -> TestServer {
    let gallery = GalleryConfig { data_dir: dir.to_path_buf(), ..Default::default() };
    TestServer::start_with_alerts(gallery, ServerConfig::default(), common::test_access(), alerts)
}

/// Waits until the webhook's first delivery is final; returns it.
async fn settled_delivery(server: &TestServer, webhook: i64) -> Value {
    let admin = server.client(Role::Admin);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let url = server.url(&format!("/v1/webhooks/{webhook}/deliveries"));
        let (status, page) = json_of(admin.get(url).send().await.unwrap()).await;
        assert_eq!(status, 200, "{page}");
        if let Some(delivery) = page["items"].as_array().unwrap().first().filter(|d| d["state"] != "pending") {
            return delivery.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "the delivery settles in time: {page}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_gets_each_hit_signed_and_retried_until_its_receiver_takes_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), quick_alerts());
    let jane = gallery(&server).await;
    let mut receiver = Receiver::start(&[500, 500], 200).await;
    let admin = server.client(Role::Admin);
    let body = json!({ "url": receiver.url, "watchlists": ["wanted"], "sources": ["checkpoint"], "description": "duty desk" });
    let (status, made) = json_of(admin.post(server.url("/v1/webhooks")).json(&body).send().await.unwrap()).await;
    assert_eq!(status, 201, "{made}");
    let (webhook, secret) = (made["id"].as_i64().unwrap(), made["secret"].as_str().unwrap().to_owned());
    assert!(secret.starts_with("whsec_") && secret.len() == 6 + 64, "{secret}");
    assert_eq!((made["url"].as_str(), made["watchlists"].clone(), made["sources"].clone()), (Some(receiver.url.as_str()), json!(["wanted"]), json!(["checkpoint"])));
    let (_, listed) = json_of(admin.get(server.url("/v1/webhooks")).send().await.unwrap()).await;
    assert_eq!(listed["items"][0]["id"], webhook);
    assert!(!listed.to_string().contains(&secret[6..]), "the secret is shown once");
    // Only an admin makes one, and only to http(s).
    let refused = server.client(Role::Investigator).post(server.url("/v1/webhooks")).json(&body).send().await.unwrap();
    assert_eq!(refused.status(), 403);
    let (status, bad) = json_of(admin.post(server.url("/v1/webhooks")).json(&json!({ "url": "file:///etc/passwd" })).send().await.unwrap()).await;
    assert_eq!((status, bad["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_webhook_url")));

    // The hit reaches the receiver on the third attempt, signed every time, always as the same delivery.
    let hit = alerting_search(&server).await[0];
    let attempts = [receiver.next().await, receiver.next().await, receiver.next().await];
    let delivery_ids: Vec<&str> = attempts.iter().map(|r| r.headers["x-facematch-delivery"].to_str().unwrap()).collect();
    assert!(delivery_ids.iter().all(|id| *id == delivery_ids[0]), "{delivery_ids:?}");
    for received in &attempts {
        let payload = verify(received, &secret);
        assert_eq!(payload["event"], "hit");
        assert_eq!((payload["hit"]["id"].as_i64(), payload["hit"]["subject_id"].as_i64()), (Some(hit), Some(jane)));
        assert!(payload["hit"].get("probe").is_none() && payload["hit"].get("embedding").is_none());
    }
    let delivery = settled_delivery(&server, webhook).await;
    assert_eq!((delivery["state"].as_str(), delivery["hit_id"].as_i64()), (Some("delivered"), Some(hit)));
    assert_eq!(delivery["id"].to_string(), delivery_ids[0]);
    let statuses: Vec<i64> = delivery["attempts"].as_array().unwrap().iter().map(|a| a["status"].as_i64().unwrap()).collect();
    assert_eq!(statuses, [500, 500, 200]);
    let numbers: Vec<i64> = delivery["attempts"].as_array().unwrap().iter().map(|a| a["n"].as_i64().unwrap()).collect();
    assert_eq!(numbers, [1, 2, 3]);
    assert!(delivery["next_attempt_at"].is_null());

    // Deleted, it is gone with its deliveries; both changes are in the trail.
    let r = admin.delete(server.url(&format!("/v1/webhooks/{webhook}"))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = admin.get(server.url(&format!("/v1/webhooks/{webhook}/deliveries"))).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let (_, audit) = json_of(server.client(Role::Auditor).get(server.url("/v1/audit?per_page=1000")).send().await.unwrap()).await;
    let actions: Vec<&str> = audit["items"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert!(actions.contains(&"create_webhook") && actions.contains(&"delete_webhook"), "{actions:?}");
    assert!(!audit.to_string().contains(&secret[6..]), "the secret is not in the trail");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_of_a_key_revoked_while_it_is_open_ends() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), quick_alerts());
    let operator = Principal::operator("alerts test", Some("test keys".into()));
    let request = KeyRequest { name: "desk to revoke".into(), role: Role::Checkpoint, watchlists: None, expires_at: None };
    let issued = server.service.create_key(request, &operator).expect("key made");
    let mut stream = Events::open(&client_with(&issued.secret), server.url("/v1/alerts/stream"), None).await;
    let r = server.client(Role::Admin).post(server.url(&format!("/v1/keys/{}/revoke", issued.key.id))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let event = stream.next().await.expect("the stream says why it ends");
    assert_eq!((event.event.as_str(), event.data["error"]["code"].as_str()), ("error", Some("key_revoked")));
    assert!(stream.next().await.is_none(), "and ends");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_pending_at_a_restart_is_delivered_after_it() {
    let dir = tempfile::tempdir().unwrap();
    // The receiver refuses everything until the first server is gone.
    let mut receiver = Receiver::start(&[], 503).await;
    let alerts = AlertsConfig { webhook_backoff_s: 0.5, webhook_max_attempts: 1000, ..quick_alerts() };
    let first = start(dir.path(), alerts.clone());
    gallery(&first).await;
    let body = json!({ "url": receiver.url, "watchlists": ["wanted"] });
    let (status, made) = json_of(first.client(Role::Admin).post(first.url("/v1/webhooks")).json(&body).send().await.unwrap()).await;
    assert_eq!(status, 201);
    let (webhook, secret) = (made["id"].as_i64().unwrap(), made["secret"].as_str().unwrap().to_owned());
    let hit = alerting_search(&first).await[0];
    verify(&receiver.next().await, &secret);
    // The refused attempt is on record before the server stops (one cut off mid-answer by the stop is not, and is
    // simply made again after the restart).
    let url = first.url(&format!("/v1/webhooks/{webhook}/deliveries"));
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (_, page) = json_of(first.client(Role::Admin).get(&url).send().await.unwrap()).await;
        if page["items"][0]["attempts"].as_array().is_some_and(|attempts| !attempts.is_empty()) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the first attempt is recorded: {page}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::task::spawn_blocking(move || first.stop()).await.unwrap();

    *receiver.fallback.lock() = 200;
    let second = start(dir.path(), alerts);
    let delivery = settled_delivery(&second, webhook).await;
    assert_eq!((delivery["state"].as_str(), delivery["hit_id"].as_i64()), (Some("delivered"), Some(hit)), "{delivery}");
    let attempts = delivery["attempts"].as_array().unwrap();
    assert!(attempts.len() >= 2, "{delivery}");
    assert_eq!(attempts.last().unwrap()["status"], 200);
    assert!(attempts[..attempts.len() - 1].iter().all(|a| a["status"] == 503), "{delivery}");
    // The accepted request was signed like the refused ones.
    let mut last = receiver.next().await;
    while let Ok(Some(more)) = tokio::time::timeout(Duration::from_millis(500), receiver.received.recv()).await {
        last = more;
    }
    assert_eq!(verify(&last, &secret)["hit"]["id"].as_i64(), Some(hit));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_stops_with_a_stream_open_and_the_stream_ends() {
    let dir = tempfile::tempdir().unwrap();
    // A backstop far beyond what the test waits for: only the stream's own end lets the server stop in time.
    let server = TestServer::start(dir.path(), ServerConfig { body_timeout_s: 600, ..ServerConfig::default() });
    let checkpoint = server.client(Role::Checkpoint);
    let mut stream = Events::open(&checkpoint, server.url("/v1/alerts/stream"), None).await;
    let first = tokio::time::timeout(PATIENCE, stream.response.chunk()).await.expect("the stream opens").unwrap().unwrap();
    assert!(first.starts_with(b":"), "a comment opens it");
    let stopped = tokio::time::timeout(PATIENCE, tokio::task::spawn_blocking(move || server.stop())).await;
    assert!(stopped.is_ok(), "the server stops with a stream open");
    assert!(stream.next().await.is_none(), "the stream ended");
}
