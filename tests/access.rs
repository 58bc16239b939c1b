//! Who may do what, proved on a real server: every operation of the served OpenAPI document × every role × a key
//! that is missing, malformed, unknown, revoked, expired or limited to another watchlist gets exactly the answer
//! the rule table below says. An operation the document serves without a rule here fails the test, so a new route
//! cannot ship without deciding who may use it.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use common::{photo_form, TestServer};
use facematch::http::ServerConfig;
use facematch::service::{KeyRequest, Principal, Role, WatchlistService};
use reqwest::{Client, Method, RequestBuilder};
use serde_json::{json, Value};

/// What a key limited to another watchlist gets from an operation its role may use.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Scope {
    /// The operation names a watchlist (or a subject in one): 403 `watchlist_forbidden`.
    Named,
    /// The operation answers, but only with what the key may see: nothing of the `wanted` watchlist.
    Filtered,
    /// Not about any watchlist: answered as for any key of the role.
    Global,
}

/// One operation (a method and path of the document; `variant` tells apart uses with different rules) and who may use it.
struct Rule {
    method: &'static str,
    path: &'static str,
    variant: &'static str,
    /// `None`: open to anyone, no key needed. `Some(roles)`: only keys of these roles.
    allowed: Option<&'static [Role]>,
    scope: Scope,
    /// The status of a successful call.
    success: u16,
}

const fn rule(
    method: &'static str,
    path: &'static str,
    variant: &'static str,
    allowed: Option<&'static [Role]>,
    scope: Scope,
    success: u16,
) -> Rule {
    Rule { method, path, variant, allowed, scope, success }
}

use Role::{Admin, Auditor, Checkpoint, Enroller, Investigator};
use Scope::{Filtered, Global, Named};

const SEARCHERS: &[Role] = &[Checkpoint, Investigator];
const READERS: &[Role] = &[Investigator, Enroller];
const EDITORS: &[Role] = &[Enroller];
const ADMINS: &[Role] = &[Admin];
const AUDITORS: &[Role] = &[Auditor];
const WATCHLIST_READERS: &[Role] = &[Checkpoint, Investigator, Enroller, Admin];
const HIT_READERS: &[Role] = &[Checkpoint, Investigator];
const REVIEWERS: &[Role] = &[Investigator];
const OFFICERS: &[Role] = &[Checkpoint];
const EVERY_KEY: &[Role] = &[Checkpoint, Investigator, Enroller, Admin, Auditor];

/// The rule table (README "Keys and roles" says the same in words).
const RULES: &[Rule] = &[
    rule("get", "/healthz", "", None, Global, 200),
    rule("get", "/readyz", "", None, Global, 200),
    rule("get", "/v1/openapi.json", "", None, Global, 200),
    rule("get", "/metrics", "", Some(ADMINS), Global, 200),
    rule("get", "/v1/stats", "", Some(ADMINS), Global, 200),
    rule("post", "/v1/search", "identification", Some(SEARCHERS), Filtered, 200),
    rule("post", "/v1/search", "investigation", Some(&[Investigator]), Filtered, 200),
    rule("post", "/v1/verify", "subject", Some(SEARCHERS), Named, 200),
    rule("post", "/v1/verify", "photos", Some(SEARCHERS), Global, 200),
    rule("get", "/v1/subjects", "", Some(READERS), Filtered, 200),
    rule("post", "/v1/subjects", "", Some(EDITORS), Named, 201),
    rule("get", "/v1/subjects/{id}", "", Some(READERS), Named, 200),
    rule("patch", "/v1/subjects/{id}", "", Some(EDITORS), Named, 200),
    rule("delete", "/v1/subjects/{id}", "", Some(EDITORS), Named, 200),
    rule("get", "/v1/subjects/{id}/faces", "", Some(READERS), Named, 200),
    rule("post", "/v1/subjects/{id}/faces", "", Some(EDITORS), Named, 201),
    rule("delete", "/v1/subjects/{id}/faces/{template}", "", Some(EDITORS), Named, 200),
    rule("get", "/v1/subjects/{id}/faces/{template}/thumbnail", "", Some(READERS), Named, 200),
    rule("get", "/v1/watchlists", "", Some(WATCHLIST_READERS), Filtered, 200),
    rule("post", "/v1/watchlists", "", Some(ADMINS), Named, 201),
    rule("get", "/v1/watchlists/{name}", "", Some(WATCHLIST_READERS), Named, 200),
    rule("patch", "/v1/watchlists/{name}", "", Some(ADMINS), Named, 200),
    rule("delete", "/v1/watchlists/{name}", "", Some(ADMINS), Named, 200),
    rule("get", "/v1/audit", "", Some(AUDITORS), Global, 200),
    rule("get", "/v1/audit/verify", "", Some(AUDITORS), Global, 200),
    rule("get", "/v1/audit/membership", "", Some(AUDITORS), Global, 200),
    rule("get", "/v1/me", "", Some(EVERY_KEY), Global, 200),
    rule("get", "/v1/keys", "", Some(ADMINS), Filtered, 200),
    rule("post", "/v1/keys", "", Some(ADMINS), Named, 201),
    rule("post", "/v1/keys/{id}/revoke", "", Some(ADMINS), Named, 200),
    rule("post", "/v1/keys/{id}/rotate", "", Some(ADMINS), Named, 201),
    rule("get", "/v1/hits", "", Some(HIT_READERS), Filtered, 200),
    rule("get", "/v1/hits/{id}", "", Some(HIT_READERS), Named, 200),
    rule("get", "/v1/hits/{id}/probe.jpg", "", Some(REVIEWERS), Named, 200),
    rule("post", "/v1/hits/{id}/decisions", "", Some(REVIEWERS), Named, 201),
    rule("post", "/v1/hits/{id}/acknowledge", "", Some(OFFICERS), Named, 200),
    rule("get", "/v1/cases/{case}/confirmed", "", Some(REVIEWERS), Filtered, 200),
    // A limited key's job searches its own watchlists; it sees only jobs within them.
    rule("post", "/v1/jobs", "", Some(REVIEWERS), Filtered, 202),
    rule("get", "/v1/jobs", "", Some(REVIEWERS), Filtered, 200),
    rule("get", "/v1/jobs/{id}", "", Some(REVIEWERS), Named, 200),
    rule("post", "/v1/jobs/{id}/cancel", "", Some(REVIEWERS), Named, 200),
    rule("get", "/v1/jobs/{id}/results", "", Some(REVIEWERS), Named, 200),
    rule("get", "/v1/alerts/stream", "", Some(HIT_READERS), Filtered, 200),
    rule("get", "/v1/webhooks", "", Some(ADMINS), Filtered, 200),
    rule("post", "/v1/webhooks", "", Some(ADMINS), Named, 201),
    rule("delete", "/v1/webhooks/{id}", "", Some(ADMINS), Named, 200),
    rule("get", "/v1/webhooks/{id}/deliveries", "", Some(ADMINS), Named, 200),
    // A migration remakes the whole gallery: a key limited to watchlists manages none.
    rule("get", "/v1/models/migrations", "", Some(ADMINS), Named, 200),
    rule("post", "/v1/models/migrations", "", Some(ADMINS), Named, 202),
    rule("get", "/v1/models/migrations/{id}", "", Some(ADMINS), Named, 200),
    // Tried on a cancelled migration, so the fixture's gallery never switches models: an allowed key passes the
    // access check and is refused by the migration's state.
    rule("post", "/v1/models/migrations/{id}/switch", "", Some(ADMINS), Named, 409),
    rule("post", "/v1/models/migrations/{id}/cancel", "", Some(ADMINS), Named, 200),
];

/// The gallery every attempt runs against, and fresh things to change or delete so each attempt finds its target.
struct Fixture {
    server: TestServer,
    client: Client,
    /// A subject of `wanted` with one enrolled face.
    subject: i64,
    template: i64,
    /// A hit on that subject, made by a checkpoint search.
    hit: i64,
    /// A job of the `wanted` watchlist, submitted by an investigator.
    job: i64,
    /// A webhook of `wanted`.
    webhook: i64,
    counter: AtomicUsize,
}

impl Fixture {
    fn fresh(&self, prefix: &str) -> String {
        format!("{prefix}-{}", self.counter.fetch_add(1, Ordering::Relaxed))
    }

    fn as_role(&self, role: Role, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, self.server.url(path)).bearer_auth(self.server.key(role))
    }

    async fn new_subject(&self) -> i64 {
        let body = json!({ "watchlist": "wanted", "display_name": self.fresh("someone") });
        let r = self.as_role(Enroller, Method::POST, "/v1/subjects").json(&body).send().await.unwrap();
        assert_eq!(r.status(), 201);
        r.json::<Value>().await.unwrap()["id"].as_i64().unwrap()
    }

    async fn enroll(&self, subject: i64, photo: &str) -> i64 {
        let path = format!("/v1/subjects/{subject}/faces");
        let form = photo_form(&[("photo", &common::deepface().join(photo))]);
        let r = self.as_role(Enroller, Method::POST, &path).multipart(form).send().await.unwrap();
        let body: Value = r.json().await.unwrap();
        body["results"][0]["template"]["id"].as_i64().unwrap_or_else(|| panic!("enrolment of {photo}: {body}"))
    }

    /// A fresh hit: a checkpoint search of another photo of the subject, which alerts.
    async fn new_hit(&self) -> i64 {
        let form = photo_form(&[("photo", &common::deepface().join("id05/img15.jpg"))]).text("case", "access case");
        let r = self.as_role(Checkpoint, Method::POST, "/v1/search").multipart(form).send().await.unwrap();
        let body: Value = r.json().await.unwrap();
        body["hits"][0].as_i64().unwrap_or_else(|| panic!("the checkpoint search alerts: {body}"))
    }

    async fn new_watchlist(&self) -> String {
        let name = self.fresh("scratch");
        let r = self.as_role(Admin, Method::POST, "/v1/watchlists").json(&json!({ "name": name })).send().await.unwrap();
        assert_eq!(r.status(), 201);
        name
    }

    /// A webhook of `wanted` (to a port nothing listens on: deliveries fail, which no rule depends on).
    async fn new_webhook(&self) -> i64 {
        let body = json!({ "url": "http://127.0.0.1:9/hook", "watchlists": ["wanted"] });
        let r = self.as_role(Admin, Method::POST, "/v1/webhooks").json(&body).send().await.unwrap();
        assert_eq!(r.status(), 201);
        r.json::<Value>().await.unwrap()["id"].as_i64().unwrap()
    }

    /// A migration that is running or waiting, the one before it cancelled: one may be in progress at a time. The
    /// fixture keeps no enrolment faces, so a migration never switches models on its own (it waits, `ready`).
    async fn new_migration(&self) -> i64 {
        let service = self.server.service.clone();
        tokio::task::spawn_blocking(move || {
            let operator = Principal::operator("access test", Some("access test migrations".into()));
            if let Some(active) = service.list_migrations(&operator).unwrap().into_iter().find(|m| m.state.is_active()) {
                service.cancel_migration(active.id, &operator).unwrap();
            }
            let request = facematch::service::MigrationRequest { to: "dlib-resnet-v1".into(), accept_gaps: false };
            service.start_migration(&request, &operator).expect("migration starts").id
        })
        .await
        .unwrap()
    }

    async fn cancelled_migration(&self) -> i64 {
        let id = self.new_migration().await;
        let service = self.server.service.clone();
        tokio::task::spawn_blocking(move || {
            service.cancel_migration(id, &Principal::operator("access test", None)).unwrap();
        })
        .await
        .unwrap();
        id
    }

    async fn new_key(&self) -> String {
        let body = json!({ "name": self.fresh("desk"), "role": "checkpoint" });
        let r = self.as_role(Admin, Method::POST, "/v1/keys").json(&body).send().await.unwrap();
        assert_eq!(r.status(), 201);
        r.json::<Value>().await.unwrap()["key"]["id"].as_str().unwrap().to_owned()
    }

    /// A well-formed request for `rule`, with its own target where the operation changes or deletes one, so the
    /// answer depends on the key alone.
    async fn request(&self, rule: &Rule, key: Option<&str>) -> RequestBuilder {
        let probe = common::deepface().join("id05/img15.jpg");
        let (method, path, body): (Method, String, Body) = match (rule.method, rule.path, rule.variant) {
            ("post", "/v1/search", mode) => {
                let form = photo_form(&[("photo", &probe)]).text("mode", mode.to_owned());
                (Method::POST, rule.path.into(), Body::Form(form))
            }
            ("post", "/v1/verify", "subject") => {
                let form = photo_form(&[("photo", &probe)]).text("subject_id", self.subject.to_string());
                (Method::POST, rule.path.into(), Body::Form(form))
            }
            ("post", "/v1/verify", _) => {
                let other = common::deepface().join("id05/img14.jpg");
                (Method::POST, rule.path.into(), Body::Form(photo_form(&[("photo_a", &probe), ("photo_b", &other)])))
            }
            ("post", "/v1/subjects", _) => {
                let body = json!({ "watchlist": "wanted", "display_name": self.fresh("new") });
                (Method::POST, rule.path.into(), Body::Json(body))
            }
            ("get", "/v1/subjects/{id}", _) => (Method::GET, format!("/v1/subjects/{}", self.subject), Body::None),
            ("patch", "/v1/subjects/{id}", _) => {
                let body = json!({ "metadata": { "note": self.fresh("note") } });
                (Method::PATCH, format!("/v1/subjects/{}", self.subject), Body::Json(body))
            }
            ("delete", "/v1/subjects/{id}", _) => {
                (Method::DELETE, format!("/v1/subjects/{}", self.new_subject().await), Body::None)
            }
            ("get", "/v1/subjects/{id}/faces", _) => {
                (Method::GET, format!("/v1/subjects/{}/faces", self.subject), Body::None)
            }
            ("post", "/v1/subjects/{id}/faces", _) => {
                let form = photo_form(&[("photo", &common::deepface().join("id08/img34.jpg"))]);
                (Method::POST, format!("/v1/subjects/{}/faces", self.new_subject().await), Body::Form(form))
            }
            ("delete", "/v1/subjects/{id}/faces/{template}", _) => {
                let subject = self.new_subject().await;
                let template = self.enroll(subject, "id08/img35.jpg").await;
                (Method::DELETE, format!("/v1/subjects/{subject}/faces/{template}"), Body::None)
            }
            ("get", "/v1/subjects/{id}/faces/{template}/thumbnail", _) => {
                (Method::GET, format!("/v1/subjects/{}/faces/{}/thumbnail", self.subject, self.template), Body::None)
            }
            ("post", "/v1/watchlists", _) => {
                (Method::POST, rule.path.into(), Body::Json(json!({ "name": self.fresh("new-list") })))
            }
            ("get", "/v1/watchlists/{name}", _) => (Method::GET, "/v1/watchlists/wanted".into(), Body::None),
            ("patch", "/v1/watchlists/{name}", _) => {
                (Method::PATCH, "/v1/watchlists/wanted".into(), Body::Json(json!({ "retention_days": 3650 })))
            }
            ("delete", "/v1/watchlists/{name}", _) => {
                (Method::DELETE, format!("/v1/watchlists/{}", self.new_watchlist().await), Body::None)
            }
            ("post", "/v1/keys", _) => {
                (Method::POST, rule.path.into(), Body::Json(json!({ "name": self.fresh("desk"), "role": "checkpoint" })))
            }
            ("post", "/v1/keys/{id}/revoke", _) => {
                (Method::POST, format!("/v1/keys/{}/revoke", self.new_key().await), Body::None)
            }
            ("post", "/v1/keys/{id}/rotate", _) => {
                (Method::POST, format!("/v1/keys/{}/rotate", self.new_key().await), Body::None)
            }
            ("get", "/v1/hits/{id}", _) => (Method::GET, format!("/v1/hits/{}", self.hit), Body::None),
            ("get", "/v1/hits/{id}/probe.jpg", _) => (Method::GET, format!("/v1/hits/{}/probe.jpg", self.hit), Body::None),
            ("post", "/v1/hits/{id}/decisions", _) => {
                let body = json!({ "decision": "inconclusive", "comment": "access test" });
                (Method::POST, format!("/v1/hits/{}/decisions", self.new_hit().await), Body::Json(body))
            }
            ("post", "/v1/hits/{id}/acknowledge", _) => {
                (Method::POST, format!("/v1/hits/{}/acknowledge", self.new_hit().await), Body::None)
            }
            ("get", "/v1/alerts/stream", _) => (Method::GET, "/v1/alerts/stream?after=0".into(), Body::None),
            ("post", "/v1/webhooks", _) => {
                let body = json!({ "url": "http://127.0.0.1:9/hook", "watchlists": ["wanted"] });
                (Method::POST, rule.path.into(), Body::Json(body))
            }
            ("delete", "/v1/webhooks/{id}", _) => {
                (Method::DELETE, format!("/v1/webhooks/{}", self.new_webhook().await), Body::None)
            }
            ("get", "/v1/webhooks/{id}/deliveries", _) => {
                (Method::GET, format!("/v1/webhooks/{}/deliveries", self.webhook), Body::None)
            }
            ("post", "/v1/models/migrations", _) => {
                self.cancelled_migration().await;
                (Method::POST, rule.path.into(), Body::Json(json!({ "to": "dlib-resnet-v1" })))
            }
            ("get", "/v1/models/migrations/{id}", _) => {
                (Method::GET, format!("/v1/models/migrations/{}", self.cancelled_migration().await), Body::None)
            }
            ("post", "/v1/models/migrations/{id}/switch", _) => {
                (Method::POST, format!("/v1/models/migrations/{}/switch", self.cancelled_migration().await), Body::None)
            }
            ("post", "/v1/models/migrations/{id}/cancel", _) => {
                (Method::POST, format!("/v1/models/migrations/{}/cancel", self.new_migration().await), Body::None)
            }
            ("get", "/v1/cases/{case}/confirmed", _) => (Method::GET, "/v1/cases/access%20case/confirmed".into(), Body::None),
            ("post", "/v1/jobs", _) => {
                let form = photo_form(&[("photo", &probe)]).text("case", "access case");
                (Method::POST, rule.path.into(), Body::Form(form))
            }
            ("get", "/v1/jobs/{id}", _) => (Method::GET, format!("/v1/jobs/{}", self.job), Body::None),
            ("post", "/v1/jobs/{id}/cancel", _) => (Method::POST, format!("/v1/jobs/{}/cancel", self.job), Body::None),
            ("get", "/v1/jobs/{id}/results", _) => (Method::GET, format!("/v1/jobs/{}/results", self.job), Body::None),
            ("get", "/v1/audit/membership", _) => {
                (Method::GET, "/v1/audit/membership?watchlist=wanted&on=2026-01-01T00:00:00Z".into(), Body::None)
            }
            ("get", path, _) => (Method::GET, path.into(), Body::None),
            (method, path, variant) => panic!("no request for {method} {path} {variant}: add one"),
        };
        let mut request = self.client.request(method, self.server.url(&path)).header("x-facematch-purpose", "access test");
        if let Some(key) = key {
            request = request.header("authorization", format!("Bearer {key}"));
        }
        match body {
            Body::None => request,
            Body::Json(value) => request.json(&value),
            Body::Form(form) => request.multipart(form),
        }
    }
}

enum Body {
    None,
    Json(Value),
    Form(reqwest::multipart::Form),
}

/// Makes a key straight through the core, as the data directory's operator does.
fn make_key(service: &WatchlistService, role: Role, watchlists: Option<&[&str]>, expires_at: Option<String>) -> String {
    let operator = Principal::operator("access test", Some("access test keys".into()));
    let request = KeyRequest {
        name: format!("{role} {}", watchlists.map(|w| w.join(",")).unwrap_or_else(|| "all".into())),
        role,
        watchlists: watchlists.map(|names| names.iter().map(|n| n.to_string()).collect()),
        expires_at,
    };
    service.create_key(request, &operator).expect("key made").secret
}

async fn send(request: RequestBuilder) -> (u16, Value, String) {
    let mut response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let streaming = response.headers().get("content-type").is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    let text = if streaming {
        // A stream never ends: what it replays in a moment is what the key was shown (`after=0`: every hit it may
        // read), which the filtered check reads.
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
        while let Ok(Ok(Some(chunk))) = tokio::time::timeout_at(deadline, response.chunk()).await {
            seen.extend_from_slice(&chunk);
        }
        String::from_utf8_lossy(&seen).into_owned()
    } else {
        response.text().await.unwrap()
    };
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    (status, body, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_every_key_exactly_as_the_rule_table_says() {
    let dir = tempfile::tempdir().unwrap();
    // No kept faces: a model migration the table starts never switches the fixture's gallery (see `new_migration`).
    let gallery = facematch::service::GalleryConfig { data_dir: dir.path().to_path_buf(), keep_enrolment_faces: false, ..Default::default() };
    let server = TestServer::start_with(gallery, ServerConfig::default());
    let client = Client::new();

    // The gallery: `wanted` with one enrolled subject, `elsewhere` that the limited keys are limited to.
    for name in ["wanted", "elsewhere"] {
        let r = client.post(server.url("/v1/watchlists")).bearer_auth(server.key(Admin)).json(&json!({ "name": name }));
        assert_eq!(r.send().await.unwrap().status(), 201);
    }
    let mut fixture = Fixture { server, client, subject: 0, template: 0, hit: 0, job: 0, webhook: 0, counter: AtomicUsize::new(0) };
    fixture.subject = fixture.new_subject().await;
    fixture.template = fixture.enroll(fixture.subject, "id05/img14.jpg").await;
    fixture.hit = fixture.new_hit().await;
    fixture.webhook = fixture.new_webhook().await;
    let form = photo_form(&[("photo", &common::deepface().join("id05/img15.jpg"))]).text("case", "access case").text("watchlist", "wanted");
    let r = fixture.as_role(Investigator, Method::POST, "/v1/jobs").multipart(form).send().await.unwrap();
    assert_eq!(r.status(), 202);
    fixture.job = r.json::<Value>().await.unwrap()["id"].as_i64().unwrap();

    // Keys the table is tried with, made through the core on the running server's service.
    let service = facematch::service::WatchlistService::open(
        std::sync::Arc::new(common::pipeline("face-reid-retail-0095")),
        facematch::service::GalleryConfig { data_dir: fixture.server.data_dir.clone(), ..Default::default() },
        common::config_for("face-reid-retail-0095").quality,
    )
    .expect("a second handle on the gallery opens");
    let limited: Vec<(Role, String)> =
        Role::KEY_ROLES.iter().map(|&role| (role, make_key(&service, role, Some(&["elsewhere"]), None))).collect();
    // A key limited to `wanted`: a limited admin must not see it in the key list.
    make_key(&service, Checkpoint, Some(&["wanted"]), None);
    let revoked = make_key(&service, Checkpoint, None, None);
    let revoked_id = revoked.split('_').nth(1).unwrap().to_owned();
    let r = fixture.as_role(Admin, Method::POST, &format!("/v1/keys/{revoked_id}/revoke")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let soon = SystemTime::now() + Duration::from_secs(2);
    let expired = make_key(&service, Checkpoint, None, Some(humantime::format_rfc3339_seconds(soon).to_string()));
    drop(service);
    while SystemTime::now() <= soon + Duration::from_secs(1) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let unknown = format!("fmk_0123456789ab_{}", "0".repeat(64));
    let bad_keys: [(&str, Option<&str>, &str); 5] = [
        ("no key", None, "missing_key"),
        ("malformed key", Some("not-a-key"), "malformed_key"),
        ("unknown key", Some(&unknown), "invalid_key"),
        ("revoked key", Some(&revoked), "key_revoked"),
        ("expired key", Some(&expired), "key_expired"),
    ];

    // The table covers exactly the served operations.
    let document: Value = fixture.client.get(fixture.server.url("/v1/openapi.json")).send().await.unwrap().json().await.unwrap();
    let mut served = BTreeSet::new();
    for (path, operations) in document["paths"].as_object().unwrap() {
        for method in operations.as_object().unwrap().keys() {
            served.insert((method.clone(), path.clone()));
        }
    }
    let ruled: BTreeSet<(String, String)> = RULES.iter().map(|r| (r.method.to_owned(), r.path.to_owned())).collect();
    let unruled: Vec<_> = served.difference(&ruled).collect();
    assert!(unruled.is_empty(), "operations served without an access rule: {unruled:?}");
    let unserved: Vec<_> = ruled.difference(&served).collect();
    assert!(unserved.is_empty(), "rules for operations the server does not serve: {unserved:?}");

    let mut failures = Vec::new();
    let mut attempts = 0;
    for rule in RULES {
        let name = format!("{} {} {}", rule.method.to_uppercase(), rule.path, rule.variant);
        let mut expect = |who: &str, (status, body, text): (u16, Value, String), want: u16, code: Option<&str>| {
            attempts += 1;
            let code_ok = code.is_none_or(|c| body["error"]["code"] == c);
            if status != want || !code_ok {
                failures.push(format!("{name} with {who}: {status} {} (expected {want} {})", excerpt(&text), code.unwrap_or("")));
            }
            // A filtered answer to a key limited to another watchlist shows nothing of `wanted`.
            if code.is_none() && who.contains("limited") && text.contains("\"wanted\"") {
                failures.push(format!("{name} with {who}: the answer shows the `wanted` watchlist: {}", excerpt(&text)));
            }
        };
        let Some(allowed) = rule.allowed else {
            for (who, key, _) in &bad_keys {
                expect(who, send(fixture.request(rule, *key).await).await, rule.success, None);
            }
            continue;
        };
        for (who, key, code) in &bad_keys {
            expect(who, send(fixture.request(rule, *key).await).await, 401, Some(code));
        }
        for role in Role::KEY_ROLES {
            let answer = send(fixture.request(rule, Some(fixture.server.key(role))).await).await;
            if allowed.contains(&role) {
                expect(&format!("a {role} key"), answer, rule.success, None);
            } else {
                expect(&format!("a {role} key"), answer, 403, Some("forbidden"));
            }
        }
        for (role, key) in limited.iter().filter(|(role, _)| allowed.contains(role)) {
            let who = format!("a {role} key limited to another watchlist");
            let answer = send(fixture.request(rule, Some(key)).await).await;
            match rule.scope {
                Named => expect(&who, answer, 403, Some("watchlist_forbidden")),
                Global => expect(&who.replace("limited", "restricted"), answer, rule.success, None),
                Filtered => expect(&who, answer, rule.success, None),
            }
        }
    }
    assert!(failures.is_empty(), "{} of {attempts} answers differ from the rule table:\n{}", failures.len(), failures.join("\n"));
    assert!(attempts > 200, "only {attempts} answers checked");

    // The table's successes happened: the limited enroller could not add to `wanted`, the full one could.
    let audit: Value = fixture.as_role(Auditor, Method::GET, "/v1/audit?per_page=1000").send().await.unwrap().json().await.unwrap();
    let entries = audit["items"].as_array().expect("audit items");
    assert!(entries.iter().any(|e| e["action"] == "enroll" && e["actor"].as_str().unwrap().starts_with("test enroller (")));
    assert!(!entries.iter().any(|e| e["actor"].as_str().unwrap().starts_with("enroller elsewhere (") && e["action"] == "enroll"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_key_has_its_own_rate_limit_and_is_told_when_to_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let gallery = facematch::service::GalleryConfig { data_dir: dir.path().to_path_buf(), ..Default::default() };
    // A slow refill, so the bucket cannot refill between the requests however slow the machine.
    let access = facematch::service::AccessConfig { rate_per_second: 0.01, rate_burst: 3.0, ..common::test_access() };
    let server = TestServer::start_with_access(gallery, ServerConfig::default(), access);
    let checkpoint = server.client(Checkpoint);
    for _ in 0..3 {
        assert_eq!(checkpoint.get(server.url("/v1/watchlists")).send().await.unwrap().status(), 200);
    }
    let refused = checkpoint.get(server.url("/v1/watchlists")).send().await.unwrap();
    assert_eq!(refused.status(), 429);
    let retry_after: u64 = refused.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=100).contains(&retry_after), "retry after {retry_after} s");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    // Another key is not held back by it, and health stays open to all.
    assert_eq!(server.client(Investigator).get(server.url("/v1/watchlists")).send().await.unwrap().status(), 200);
    assert_eq!(checkpoint.get(server.url("/healthz")).send().await.unwrap().status(), 200);
}

fn excerpt(text: &str) -> String {
    text.chars().take(160).collect()
}
