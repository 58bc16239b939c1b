//! Shared test fixtures: where `../shared` is, and loading the real pipeline. Tests that need `../shared` fail
//! (never skip) when it is missing, so CI cannot pass without the data.
#![allow(dead_code)]

pub mod corpus;
pub mod process;

use std::path::PathBuf;

use facematch::config::Config;
use facematch::pipeline::FacePipeline;

/// `../shared` beside the checkout (or `FACEMATCH_SHARED`).
pub fn shared_dir() -> PathBuf {
    let dir = std::env::var_os("FACEMATCH_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("shared"));
    assert!(
        dir.join("faces").is_dir(),
        "test data missing: {} has no faces/ (CI needs ../shared beside the checkout)",
        dir.display()
    );
    dir
}

pub fn deepface() -> PathBuf {
    shared_dir().join("faces").join("deepface")
}

/// Config for tests: the repo's models, a given recognizer, two sessions.
pub fn config_for(recognizer: &str) -> Config {
    let mut config = Config::default();
    config.models.dir = Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models"));
    config.models.recognizer = recognizer.to_string();
    config.runtime.sessions = 2;
    config
}

pub fn pipeline(recognizer: &str) -> FacePipeline {
    FacePipeline::load(&config_for(recognizer).pipeline())
        .unwrap_or_else(|e| panic!("pipeline with {recognizer} must load (run scripts/setup.sh): {e}"))
}

/// Labelled pairs of `deepface/pairs.csv`: (photo a, photo b, same person).
pub fn deepface_pairs() -> Vec<(String, String, bool)> {
    let text = std::fs::read_to_string(deepface().join("pairs.csv")).expect("deepface/pairs.csv");
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[0].to_string(), f[1].to_string(), f[2].trim() == "1")
        })
        .collect()
}

/// Every photo of deepface/, as paths relative to it.
pub fn deepface_photos() -> Vec<String> {
    let mut out = Vec::new();
    for id in std::fs::read_dir(deepface()).expect("deepface/") {
        let id = id.unwrap().path();
        if !id.is_dir() {
            continue;
        }
        for photo in std::fs::read_dir(&id).unwrap() {
            let p = photo.unwrap().path();
            out.push(format!("{}/{}", id.file_name().unwrap().to_string_lossy(), p.file_name().unwrap().to_string_lossy()));
        }
    }
    out.sort();
    out
}

/// A real server on 127.0.0.1:0 over a data directory, stopped (gracefully) on drop, with one API key per role.
pub struct TestServer {
    pub base: String,
    pub data_dir: PathBuf,
    /// The service the server runs, for what no route does (a retention sweep at a chosen time).
    pub service: std::sync::Arc<facematch::service::WatchlistService>,
    keys: std::collections::HashMap<facematch::service::Role, String>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl TestServer {
    pub fn start(data_dir: &std::path::Path, server: facematch::http::ServerConfig) -> TestServer {
        let gallery = facematch::service::GalleryConfig { data_dir: data_dir.to_path_buf(), ..Default::default() };
        TestServer::start_with(gallery, server)
    }

    /// A server with these gallery settings (`gallery.data_dir` is the data directory).
    pub fn start_with(gallery: facematch::service::GalleryConfig, server: facematch::http::ServerConfig) -> TestServer {
        TestServer::start_with_access(gallery, server, test_access())
    }

    /// A server with these gallery and access settings.
    pub fn start_with_access(
        gallery: facematch::service::GalleryConfig,
        server: facematch::http::ServerConfig,
        access: facematch::service::AccessConfig,
    ) -> TestServer {
        TestServer::start_with_jobs(gallery, server, access, facematch::service::JobsConfig::default())
    }

    /// A server with these gallery, access and bulk search job settings.
    pub fn start_with_jobs(
        gallery: facematch::service::GalleryConfig,
        server: facematch::http::ServerConfig,
        access: facematch::service::AccessConfig,
        jobs: facematch::service::JobsConfig,
    ) -> TestServer {
        TestServer::start_full(gallery, server, access, jobs, facematch::service::AlertsConfig::default())
    }

    /// A server with these gallery, access and alert settings.
    pub fn start_with_alerts(
        gallery: facematch::service::GalleryConfig,
        server: facematch::http::ServerConfig,
        access: facematch::service::AccessConfig,
        alerts: facematch::service::AlertsConfig,
    ) -> TestServer {
        TestServer::start_full(gallery, server, access, facematch::service::JobsConfig::default(), alerts)
    }

    /// A server with every group of settings given.
    pub fn start_full(
        gallery: facematch::service::GalleryConfig,
        server: facematch::http::ServerConfig,
        access: facematch::service::AccessConfig,
        jobs: facematch::service::JobsConfig,
        alerts: facematch::service::AlertsConfig,
    ) -> TestServer {
        TestServer::start_serving("face-reid-retail-0095", gallery, server, access, jobs, alerts)
    }

    /// A server of `recognizer` with every group of settings given.
    pub fn start_serving(
        recognizer: &str,
        gallery: facematch::service::GalleryConfig,
        server: facematch::http::ServerConfig,
        access: facematch::service::AccessConfig,
        jobs: facematch::service::JobsConfig,
        alerts: facematch::service::AlertsConfig,
    ) -> TestServer {
        use std::sync::Arc;
        let data_dir = gallery.data_dir.clone();
        let config = config_for(recognizer);
        let pipeline = Arc::new(pipeline(recognizer));
        let service = facematch::service::WatchlistService::open(pipeline, gallery, config.quality)
            .expect("service opens")
            .with_access(access)
            .with_jobs(jobs, facematch::service::HitsConfig::default())
            .with_alerts(alerts);
        let keys = mint_keys(&service);
        let service = Arc::new(service);
        let shared = service.clone();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let handle = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                let state = facematch::http::AppState::new(service, server).expect("analysis threads start");
                facematch::http::serve(listener, state, async move {
                    let _ = rx.await;
                })
                .await
                .unwrap();
            });
        });
        let addr = addr_rx.recv().expect("server bound");
        TestServer { base: format!("http://{addr}"), data_dir, service: shared, keys, shutdown: Some(tx), handle: Some(handle) }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The server's API key for `role`.
    pub fn key(&self, role: facematch::service::Role) -> &str {
        &self.keys[&role]
    }

    /// A client that sends the key of `role` and a stated purpose with every request.
    pub fn client(&self, role: facematch::service::Role) -> reqwest::Client {
        let mut headers = reqwest::header::HeaderMap::new();
        let bearer = format!("Bearer {}", self.key(role));
        headers.insert(reqwest::header::AUTHORIZATION, reqwest::header::HeaderValue::from_str(&bearer).unwrap());
        headers.insert("x-facematch-purpose", reqwest::header::HeaderValue::from_static("case 2026/114"));
        reqwest::Client::builder().default_headers(headers).build().unwrap()
    }

    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.halt();
    }
}

/// A key made through the core by the data directory's operator, as `facematch keys create` makes it: its secret.
pub fn named_key(
    server: &TestServer,
    name: &str,
    role: facematch::service::Role,
    watchlists: Option<&[&str]>,
) -> String {
    use facematch::service::{KeyRequest, Principal};
    let operator = Principal::operator("tests", Some("test keys".into()));
    let request = KeyRequest {
        name: name.to_owned(),
        role,
        watchlists: watchlists.map(|names| names.iter().map(|n| n.to_string()).collect()),
        expires_at: None,
    };
    server.service.create_key(request, &operator).expect("key made").secret
}

/// A multipart form with one photo file field per (name, path).
pub fn photo_form(fields: &[(&str, &std::path::Path)]) -> reqwest::multipart::Form {
    let mut form = reqwest::multipart::Form::new();
    for (name, path) in fields {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let part = reqwest::multipart::Part::bytes(bytes).file_name(path.file_name().unwrap().to_string_lossy().to_string());
        form = form.part(name.to_string(), part);
    }
    form
}

/// Rate limits no functional test reaches; the limits themselves are tested on their own.
pub fn test_access() -> facematch::service::AccessConfig {
    facematch::service::AccessConfig { rate_per_second: 10_000.0, rate_burst: 10_000.0, ..Default::default() }
}

/// One key per role a key can hold, made by the data directory's operator as `facematch keys create` makes them.
pub fn mint_keys(
    service: &facematch::service::WatchlistService,
) -> std::collections::HashMap<facematch::service::Role, String> {
    use facematch::service::{KeyRequest, Principal, Role};
    let operator = Principal::operator("tests", Some("test keys".into()));
    Role::KEY_ROLES
        .into_iter()
        .map(|role| {
            let request = KeyRequest { name: format!("test {role}"), role, watchlists: None, expires_at: None };
            (role, service.create_key(request, &operator).expect("key made").secret)
        })
        .collect()
}

/// A key for `role` made with `facematch keys create` on `data_dir`, as a site makes its first keys.
pub fn cli_key(data_dir: &std::path::Path, role: &str) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_facematch"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["keys", "create", "--name", &format!("test {role}"), "--role", role, "--data-dir"])
        .arg(data_dir)
        .env("FACEMATCH_LOG", "warn")
        .output()
        .expect("the facematch binary runs");
    assert!(output.status.success(), "keys create: {}", String::from_utf8_lossy(&output.stderr));
    let issued: serde_json::Value = serde_json::from_slice(&output.stdout).expect("keys create prints JSON");
    issued["secret"].as_str().expect("the secret is shown once").to_owned()
}

/// A client that sends `key` with every request.
pub fn client_with(key: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(reqwest::header::AUTHORIZATION, reqwest::header::HeaderValue::from_str(&format!("Bearer {key}")).unwrap());
    reqwest::Client::builder().default_headers(headers).build().unwrap()
}

/// A role whose key may use `method path`: the one tests send when the role itself is not what they test.
pub fn role_for(method: &reqwest::Method, path: &str) -> facematch::service::Role {
    use facematch::service::Role;
    let changes = *method != reqwest::Method::GET;
    if path.starts_with("/v1/hits") && path.ends_with("/acknowledge") {
        Role::Checkpoint
    } else if path.starts_with("/v1/search")
        || path.starts_with("/v1/verify")
        || path.starts_with("/v1/hits")
        || path.starts_with("/v1/cases")
        || path.starts_with("/v1/jobs")
        || path.starts_with("/v1/alerts")
    {
        Role::Investigator
    } else if path.starts_with("/v1/subjects") {
        Role::Enroller
    } else if path.starts_with("/v1/audit") {
        Role::Auditor
    } else if path.starts_with("/v1/watchlists") && !changes {
        Role::Checkpoint
    } else {
        Role::Admin
    }
}
