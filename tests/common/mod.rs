//! Shared test fixtures: where `../shared` is, and loading the real pipeline. Tests that need `../shared` fail
//! (never skip) when it is missing, so CI cannot pass without the data.
#![allow(dead_code)]

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

/// A real server on 127.0.0.1:0 over a data directory, stopped (gracefully) on drop.
pub struct TestServer {
    pub base: String,
    pub data_dir: PathBuf,
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
        use std::sync::Arc;
        let data_dir = gallery.data_dir.clone();
        let config = config_for("face-reid-retail-0095");
        let pipeline = Arc::new(pipeline("face-reid-retail-0095"));
        let service = Arc::new(facematch::service::WatchlistService::open(pipeline, gallery, config.quality).expect("service opens"));
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
        TestServer { base: format!("http://{addr}"), data_dir, shutdown: Some(tx), handle: Some(handle) }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
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
