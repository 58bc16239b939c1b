//! Service benchmarks against a running server on loopback: `facematch bench http` (a bounded closed-loop load
//! generator for `POST /v1/search`, with the server's per-stage latency read from `/metrics`) here;
//! `bench soak` (open loop at a fixed rate, with slow senders) in [`soak`]; `bench seed` (synthetic templates for
//! gallery size) in [`seed`]; `bench pipeline-throughput` (the face pipeline alone, the baseline the server's
//! throughput is compared with) in [`throughput`]; the reading of `/metrics` in [`metrics_text`].
//!
//! The load here is closed-loop: C workers each send the next request when the previous answer arrived, so the
//! figures are service times under C outstanding requests, not an open arrival rate. Every level is bounded twice
//! (request count and wall time) so a run always stops by itself.

pub mod metrics_text;
pub mod seed;
pub mod soak;
pub mod throughput;

pub use metrics_text::{parse_metrics_text, HistogramTotals, MetricSample, MetricsSnapshot, MetricsTextError, ServerLevel, StageMean};
pub use seed::{seed_gallery, synthetic_watchlist, SeedArgs, SeedError, SeedPlan, SeedSummary};
pub use throughput::{measure_pipeline_throughput, process_cpu_seconds, PipelineThroughputArgs, ThroughputResult};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::eval::metrics::{latency_summary, LatencySummary, MetricError};
use crate::eval::plot::plot_latency_histogram;
use crate::eval::report::{ModelFact, Report, ReportError, Table};
use crate::manifest::ModelManifest;

/// Pipeline stages the server reports, in pipeline order (`search` is the ANN search and result assembly).
pub const SERVER_STAGES: [&str; 5] = ["decode", "detect", "align", "embed", "search"];

/// Longest a single level may be asked to run; the load generator is a benchmark, not a soak test.
const MAX_LEVEL_SECONDS: f64 = 3600.0;
/// Most requests one level may be asked to send.
const MAX_LEVEL_REQUESTS: usize = 1_000_000;
/// Most workers of one level; more would only measure the server's 503 path.
const MAX_CONCURRENCY: usize = 1024;

/// Why a load run could not be made or reported.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("server url `{url}`: not a valid http url")]
    InvalidUrl {
        url: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("server url `{url}`: load is generated only against loopback addresses (127.0.0.0/8, ::1, localhost)")]
    NotLoopback { url: String },
    #[error("load plan: {problem}")]
    InvalidPlan { problem: String },
    #[error("photo {}: cannot be read", .path.display())]
    ReadPhoto {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("photo path {}: does not exist", .path.display())]
    MissingPhotoPath { path: PathBuf },
    #[error("photos: no .jpg/.jpeg/.png files in the given paths")]
    NoPhotos,
    #[error("http client: cannot be built")]
    Client(#[source] reqwest::Error),
    #[error("{url}: request failed")]
    Request {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url}: answered {status}")]
    Status { url: String, status: u16 },
    #[error("{url}: unexpected body")]
    Body {
        url: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{url}: metrics text unreadable")]
    Metrics {
        url: String,
        #[source]
        source: MetricsTextError,
    },
    #[error("latency summary at concurrency {concurrency}")]
    Summary {
        concurrency: usize,
        #[source]
        source: MetricError,
    },
    #[error("load report")]
    Report(#[source] ReportError),
    #[error("async runtime: cannot be started")]
    Runtime(#[source] std::io::Error),
}


// -------------------------------------------------------------------------------------------------------------
// Load generation
// -------------------------------------------------------------------------------------------------------------

/// Search mode of the probe requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ProbeMode {
    Identification,
    Investigation,
}

impl ProbeMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeMode::Identification => "identification",
            ProbeMode::Investigation => "investigation",
        }
    }
}

/// A probe photo held in memory so that disk reads never enter the timed region.
#[derive(Debug, Clone)]
pub struct ProbePhoto {
    pub name: String,
    pub bytes: Vec<u8>,
}

impl ProbePhoto {
    pub fn read(path: &Path) -> Result<ProbePhoto, LoadError> {
        let bytes = std::fs::read(path).map_err(|source| LoadError::ReadPhoto { path: path.to_path_buf(), source })?;
        let name = path.file_name().map_or_else(|| "photo.jpg".into(), |n| n.to_string_lossy().into_owned());
        Ok(ProbePhoto { name, bytes })
    }
}

/// Files as given, folders walked recursively; each folder's photos sorted so runs are repeatable.
pub fn collect_probe_photos(paths: &[PathBuf]) -> Result<Vec<ProbePhoto>, LoadError> {
    fn walk(dir: &Path, found: &mut Vec<PathBuf>) -> Result<(), LoadError> {
        let entries = std::fs::read_dir(dir).map_err(|source| LoadError::ReadPhoto { path: dir.to_path_buf(), source })?;
        for entry in entries {
            let path = entry.map_err(|source| LoadError::ReadPhoto { path: dir.to_path_buf(), source })?.path();
            if path.is_dir() {
                walk(&path, found)?;
            } else if is_photo(&path) {
                found.push(path);
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut found = Vec::new();
            walk(path, &mut found)?;
            found.sort();
            files.extend(found);
        } else if path.is_file() {
            files.push(path.clone());
        } else {
            return Err(LoadError::MissingPhotoPath { path: path.clone() });
        }
    }
    if files.is_empty() {
        return Err(LoadError::NoPhotos);
    }
    files.iter().map(|p| ProbePhoto::read(p)).collect()
}

fn is_photo(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png"))
}

/// What to send, how hard and for how long.
#[derive(Debug, Clone)]
pub struct LoadPlan {
    /// Base URL of the server, e.g. `http://127.0.0.1:8080`.
    pub base_url: String,
    /// Requests cycle through these.
    pub photos: Vec<ProbePhoto>,
    /// One level per entry, run in this order.
    pub concurrency: Vec<usize>,
    /// Upper bound of requests per level.
    pub requests: usize,
    /// Upper bound of a level's wall time: no request is started after it.
    pub max_duration: Duration,
    pub mode: ProbeMode,
    pub k: Option<usize>,
    /// Untimed requests sent one at a time before the first level (warms caches and connections).
    pub warmup: usize,
    pub request_timeout: Duration,
    /// The API key searches are sent with (a checkpoint key, or an investigator's for investigation mode).
    pub api_key: Option<String>,
    /// The key `/metrics` is read with (an admin key), unless the server has `access.open_metrics`.
    pub metrics_key: Option<String>,
}

impl LoadPlan {
    fn check(&self) -> Result<reqwest::Url, LoadError> {
        let invalid = |problem: String| LoadError::InvalidPlan { problem };
        if self.photos.is_empty() {
            return Err(LoadError::NoPhotos);
        }
        if self.concurrency.is_empty() || self.concurrency.iter().any(|c| !(1..=MAX_CONCURRENCY).contains(c)) {
            return Err(invalid(format!("concurrency levels must be 1..={MAX_CONCURRENCY}, got {:?}", self.concurrency)));
        }
        if !(1..=MAX_LEVEL_REQUESTS).contains(&self.requests) {
            return Err(invalid(format!("requests per level must be 1..={MAX_LEVEL_REQUESTS}, got {}", self.requests)));
        }
        let seconds = self.max_duration.as_secs_f64();
        if !(seconds > 0.0 && seconds <= MAX_LEVEL_SECONDS) {
            return Err(invalid(format!("duration per level must be in (0, {MAX_LEVEL_SECONDS}] s, got {seconds}")));
        }
        if self.request_timeout.is_zero() {
            return Err(invalid("request timeout must be positive".into()));
        }
        loopback_url(&self.base_url)
    }
}

/// Parses `url` and refuses anything but a loopback host: this tool must never load someone else's server.
pub fn loopback_url(url: &str) -> Result<reqwest::Url, LoadError> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|source| LoadError::InvalidUrl { url: url.to_string(), source: Box::new(source) })?;
    if parsed.scheme() != "http" && parsed.scheme() != "https" {
        return Err(LoadError::InvalidUrl { url: url.to_string(), source: "scheme must be http or https".into() });
    }
    let loopback = parsed.host_str().is_some_and(|host| {
        host.eq_ignore_ascii_case("localhost")
            || host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    });
    if !loopback {
        return Err(LoadError::NotLoopback { url: url.to_string() });
    }
    Ok(parsed)
}

/// How one request ended.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    /// 2xx; the number of faces in the answer.
    Answered { faces: usize },
    /// Non-2xx with the API's error code (`unparsed` when the body was not the error shape).
    Refused { status: u16, code: String },
    /// No HTTP answer: `timeout`, `connect`, `body` or `request`.
    Transport { kind: &'static str },
}

/// One concurrency level's figures.
#[derive(Debug, Clone, Serialize)]
pub struct LevelResult {
    pub concurrency: usize,
    /// Requests started (each one finished: in-flight requests are awaited).
    pub sent: usize,
    pub ok: usize,
    /// Refused (non-2xx) plus transport failures.
    pub errors: usize,
    pub elapsed_s: f64,
    /// Answers of any status per second.
    pub throughput_rps: f64,
    /// Successful searches per second.
    pub ok_per_second: f64,
    /// Client-side latency of successful searches (send to last body byte).
    pub latency_ms: Option<LatencySummary>,
    /// `request count` or `duration`: which bound ended the level.
    pub stopped_by: &'static str,
    /// HTTP status → count, 2xx included.
    pub status_counts: BTreeMap<u16, usize>,
    /// API error code → count.
    pub errors_by_code: BTreeMap<String, usize>,
    /// Transport failure kind → count.
    pub transport_errors: BTreeMap<String, usize>,
    /// (status, code) → count, for the report's error table.
    #[serde(skip)]
    pub refusals: BTreeMap<(u16, String), usize>,
    /// Mean faces per successful answer (1.0 for a single-face probe).
    pub faces_per_answer: f64,
    pub server: ServerLevel,
    #[serde(skip)]
    pub latencies_ms: Vec<f64>,
}

/// A whole run: the server's identity and every level.
#[derive(Debug, Clone, Serialize)]
pub struct LoadOutcome {
    pub base_url: String,
    pub mode: ProbeMode,
    pub model_id: Option<String>,
    pub gallery_templates: Option<u64>,
    pub warmup: usize,
    /// Codes of warm-up requests that were not answered 2xx.
    pub warmup_errors: Vec<String>,
    pub photos: Vec<String>,
    pub levels: Vec<LevelResult>,
}

/// Runs every level of `plan` against the server on its own async runtime; `progress` counts requests.
pub fn run_load(plan: &LoadPlan, progress: &ProgressBar) -> Result<LoadOutcome, LoadError> {
    let base = plan.check()?;
    // Two worker threads are plenty for a client that mostly waits; more would steal CPU from a local server.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(LoadError::Runtime)?;
    runtime.block_on(run_load_async(plan, base, progress))
}

async fn run_load_async(plan: &LoadPlan, base: reqwest::Url, progress: &ProgressBar) -> Result<LoadOutcome, LoadError> {
    let max_concurrency = plan.concurrency.iter().copied().max().unwrap_or(1);
    let client = search_client(plan.api_key.as_deref(), plan.request_timeout, max_concurrency)?;
    let join = |path: &str| {
        base.join(path).map_err(|source| LoadError::InvalidUrl { url: format!("{base}{path}"), source: Box::new(source) })
    };
    let (search_url, metrics_url, ready_url) = (join("v1/search")?, join("metrics")?, join("readyz")?);

    let ready = get_text(&client, &ready_url, None).await?;
    let ready: serde_json::Value =
        serde_json::from_str(&ready).map_err(|source| LoadError::Body { url: ready_url.to_string(), source })?;
    let model_id = ready["model"].as_str().map(String::from);

    let mut warmup_errors = Vec::new();
    for i in 0..plan.warmup {
        let photo = &plan.photos[i % plan.photos.len()];
        match send_search(&client, &search_url, photo, plan.mode, plan.k).await {
            Outcome::Answered { .. } => {}
            Outcome::Refused { status, code } => warmup_errors.push(format!("{status} {code}")),
            Outcome::Transport { kind } => warmup_errors.push(format!("transport {kind}")),
        }
    }

    let mut levels = Vec::with_capacity(plan.concurrency.len());
    let mut gallery_templates = None;
    for &concurrency in &plan.concurrency {
        progress.set_message(format!("concurrency {concurrency}"));
        let before = scrape(&client, &metrics_url, plan.metrics_key.as_deref()).await?;
        gallery_templates = gallery_templates.or(before.gallery_templates.map(|g| g as u64));
        let mut level = run_level(&client, &search_url, plan, concurrency, progress).await?;
        let after = scrape(&client, &metrics_url, plan.metrics_key.as_deref()).await?;
        level.server = after.since(&before);
        levels.push(level);
    }
    Ok(LoadOutcome {
        base_url: plan.base_url.clone(),
        mode: plan.mode,
        model_id,
        gallery_templates,
        warmup: plan.warmup,
        warmup_errors,
        photos: plan.photos.iter().map(|p| p.name.clone()).collect(),
        levels,
    })
}

/// The client searches are sent with: the key as a bearer token, a stated purpose, no proxy, `pool` idle
/// connections kept.
fn search_client(api_key: Option<&str>, timeout: Duration, pool: usize) -> Result<reqwest::Client, LoadError> {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("x-facematch-purpose", reqwest::header::HeaderValue::from_static("load benchmark"));
    if let Some(key) = api_key {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {key}"))
            .map_err(|_| LoadError::InvalidPlan { problem: "the api key is not a valid header value".into() })?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    reqwest::Client::builder()
        .default_headers(headers)
        .no_proxy()
        .tcp_nodelay(true)
        .timeout(timeout)
        .pool_max_idle_per_host(pool)
        .build()
        .map_err(LoadError::Client)
}

async fn get_text(client: &reqwest::Client, url: &reqwest::Url, key: Option<&str>) -> Result<String, LoadError> {
    let mut request = client.get(url.clone());
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request
        .send()
        .await
        .map_err(|source| LoadError::Request { url: url.to_string(), source })?;
    let status = response.status();
    if !status.is_success() {
        return Err(LoadError::Status { url: url.to_string(), status: status.as_u16() });
    }
    response.text().await.map_err(|source| LoadError::Request { url: url.to_string(), source })
}

async fn scrape(client: &reqwest::Client, url: &reqwest::Url, key: Option<&str>) -> Result<MetricsSnapshot, LoadError> {
    let text = get_text(client, url, key).await?;
    let samples = parse_metrics_text(&text).map_err(|source| LoadError::Metrics { url: url.to_string(), source })?;
    Ok(MetricsSnapshot::from_samples(&samples))
}

/// C workers share one request counter; each sends its next request when the previous answer arrived.
async fn run_level(
    client: &reqwest::Client,
    url: &reqwest::Url,
    plan: &LoadPlan,
    concurrency: usize,
    progress: &ProgressBar,
) -> Result<LevelResult, LoadError> {
    let issued = Arc::new(AtomicUsize::new(0));
    let photos: Arc<[ProbePhoto]> = plan.photos.clone().into();
    let started = Instant::now();
    let deadline = started + plan.max_duration;
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (client, url, issued, photos, progress) =
            (client.clone(), url.clone(), issued.clone(), photos.clone(), progress.clone());
        let (requests, mode, k) = (plan.requests, plan.mode, plan.k);
        workers.spawn(async move {
            let mut samples = Vec::new();
            loop {
                if Instant::now() >= deadline {
                    break;
                }
                let i = issued.fetch_add(1, Ordering::Relaxed);
                if i >= requests {
                    break;
                }
                let sent = Instant::now();
                let outcome = send_search(&client, &url, &photos[i % photos.len()], mode, k).await;
                samples.push((sent.elapsed().as_secs_f64() * 1000.0, outcome));
                progress.inc(1);
            }
            samples
        });
    }
    let mut samples = Vec::new();
    while let Some(done) = workers.join_next().await {
        // A worker only panics on a bug of ours; its requests are then simply missing from the counts.
        if let Ok(mut worker) = done {
            samples.append(&mut worker);
        }
    }
    let elapsed_s = started.elapsed().as_secs_f64();
    summarise_level(concurrency, plan.requests, samples, elapsed_s)
}

fn summarise_level(
    concurrency: usize,
    requests: usize,
    samples: Vec<(f64, Outcome)>,
    elapsed_s: f64,
) -> Result<LevelResult, LoadError> {
    let mut level = LevelResult {
        concurrency,
        sent: samples.len(),
        ok: 0,
        errors: 0,
        elapsed_s,
        throughput_rps: 0.0,
        ok_per_second: 0.0,
        latency_ms: None,
        stopped_by: if samples.len() >= requests { "request count" } else { "duration" },
        status_counts: BTreeMap::new(),
        errors_by_code: BTreeMap::new(),
        transport_errors: BTreeMap::new(),
        refusals: BTreeMap::new(),
        faces_per_answer: 0.0,
        server: ServerLevel::default(),
        latencies_ms: Vec::new(),
    };
    let mut faces = 0;
    let mut answered = 0;
    for (ms, outcome) in samples {
        match outcome {
            Outcome::Answered { faces: n } => {
                level.ok += 1;
                answered += 1;
                faces += n;
                *level.status_counts.entry(200).or_default() += 1;
                level.latencies_ms.push(ms);
            }
            Outcome::Refused { status, code } => {
                level.errors += 1;
                answered += 1;
                *level.status_counts.entry(status).or_default() += 1;
                *level.errors_by_code.entry(code.clone()).or_default() += 1;
                *level.refusals.entry((status, code)).or_default() += 1;
            }
            Outcome::Transport { kind } => {
                level.errors += 1;
                *level.transport_errors.entry(kind.to_string()).or_default() += 1;
            }
        }
    }
    if elapsed_s > 0.0 {
        level.throughput_rps = answered as f64 / elapsed_s;
        level.ok_per_second = level.ok as f64 / elapsed_s;
    }
    if level.ok > 0 {
        level.faces_per_answer = faces as f64 / level.ok as f64;
        level.latency_ms =
            Some(latency_summary(&level.latencies_ms).map_err(|source| LoadError::Summary { concurrency, source })?);
    }
    Ok(level)
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorFields,
}

#[derive(Deserialize)]
struct ErrorFields {
    code: String,
}

#[derive(Deserialize)]
struct SearchAnswer {
    faces: Vec<serde::de::IgnoredAny>,
}

async fn send_search(
    client: &reqwest::Client,
    url: &reqwest::Url,
    photo: &ProbePhoto,
    mode: ProbeMode,
    k: Option<usize>,
) -> Outcome {
    let part = reqwest::multipart::Part::bytes(photo.bytes.clone()).file_name(photo.name.clone());
    let mut form = reqwest::multipart::Form::new().part("photo", part).text("mode", mode.as_str());
    if let Some(k) = k {
        form = form.text("k", k.to_string());
    }
    let sent = client
        .post(url.clone())
        .multipart(form)
        .send()
        .await;
    let response = match sent {
        Ok(r) => r,
        Err(e) => return Outcome::Transport { kind: transport_kind(&e) },
    };
    let status = response.status();
    let body = match response.bytes().await {
        Ok(b) => b,
        Err(e) => return Outcome::Transport { kind: transport_kind(&e) },
    };
    if status.is_success() {
        // An answer that is not the search shape counts as zero faces, which the report shows.
        let faces = serde_json::from_slice::<SearchAnswer>(&body).map_or(0, |a| a.faces.len());
        Outcome::Answered { faces }
    } else {
        let code = serde_json::from_slice::<ErrorBody>(&body).map_or_else(|_| "unparsed".to_string(), |b| b.error.code);
        Outcome::Refused { status: status.as_u16(), code }
    }
}

fn transport_kind(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else if e.is_body() || e.is_decode() {
        "body"
    } else {
        "request"
    }
}

/// The report of a run: latency/throughput per level, the server's stage means, errors; with `figures_dir`, a
/// latency histogram per level as SVG and PNG.
pub fn load_report(outcome: &LoadOutcome, plan: &LoadPlan, models: Vec<ModelFact>, figures_dir: Option<&Path>) -> Result<Report, LoadError> {
    if let Some(dir) = figures_dir {
        std::fs::create_dir_all(dir)
            .map_err(|source| LoadError::Report(ReportError::Io { path: dir.to_path_buf(), source }))?;
    }
    let mut report = Report::new(format!("HTTP service: POST /v1/search ({})", outcome.mode.as_str()));
    report.models = models;
    report.gallery_sizes = outcome.gallery_templates.map(|g| g as usize).into_iter().collect();

    let mut client = Table::new(
        "client-side latency of successful searches (ms) and throughput",
        ["concurrency", "sent", "ok", "errors", "ok req/s", "mean", "p50", "p90", "p99", "max", "stopped by"],
    );
    let mut server = Table::new(
        "server-side means per request (ms, from /metrics)",
        ["concurrency", "decode", "detect", "align", "embed", "search", "stages sum", "handler", "handler - stages", "client - handler"],
    );
    let mut errors = Table::new("errors", ["concurrency", "status", "code", "count"]);
    let ms = |v: f64| format!("{v:.2}");
    for level in &outcome.levels {
        let latency = level.latency_ms;
        let cell = |f: fn(&LatencySummary) -> f64| latency.map_or_else(|| "-".to_string(), |s| ms(f(&s)));
        client
            .push_row([
                level.concurrency.to_string(),
                level.sent.to_string(),
                level.ok.to_string(),
                level.errors.to_string(),
                format!("{:.2}", level.ok_per_second),
                cell(|s| s.mean),
                cell(|s| s.p50),
                cell(|s| s.p90),
                cell(|s| s.p99),
                cell(|s| s.max),
                level.stopped_by.to_string(),
            ])
            .map_err(LoadError::Report)?;

        let stage = |name: &str| level.server.stages.get(name).map(|m| m.mean_ms);
        let stages_sum: f64 = SERVER_STAGES.iter().filter_map(|s| stage(s)).sum();
        let handler = level.server.search_route.map(|m| m.mean_ms);
        let opt = |v: Option<f64>| v.map_or_else(|| "-".to_string(), ms);
        let mut row: Vec<String> = SERVER_STAGES.iter().map(|s| opt(stage(s))).collect();
        row.insert(0, level.concurrency.to_string());
        row.push(ms(stages_sum));
        row.push(opt(handler));
        row.push(opt(handler.map(|h| h - stages_sum)));
        row.push(opt(handler.zip(latency).map(|(h, l)| l.mean - h)));
        server.push_row(row).map_err(LoadError::Report)?;

        for ((status, code), count) in &level.refusals {
            errors
                .push_row([level.concurrency.to_string(), status.to_string(), code.clone(), count.to_string()])
                .map_err(LoadError::Report)?;
        }
        for (kind, count) in &level.transport_errors {
            errors
                .push_row([level.concurrency.to_string(), "-".into(), format!("transport {kind}"), count.to_string()])
                .map_err(LoadError::Report)?;
        }

        if let (Some(dir), false) = (figures_dir, level.latencies_ms.is_empty()) {
            for ext in ["svg", "png"] {
                let path = dir.join(format!("latency-c{}.{ext}", level.concurrency));
                let title = format!("POST /v1/search latency, concurrency {}", level.concurrency);
                report.figures.push(plot_latency_histogram(&title, &level.latencies_ms, &path).map_err(LoadError::Report)?);
            }
        }
    }
    report.tables.push(client);
    report.tables.push(server);
    if !errors.rows.is_empty() {
        report.tables.push(errors);
    }

    let photo_bytes: usize = plan.photos.iter().map(|p| p.bytes.len()).sum();
    report.notes.push(format!(
        "closed loop against {}: C workers each send the next request when the previous answer arrived; at most {} requests and {:.0} s per level; {} untimed warm-up request(s) first",
        outcome.base_url,
        plan.requests,
        plan.max_duration.as_secs_f64(),
        plan.warmup
    ));
    report.notes.push(format!(
        "{} probe photo(s) ({} bytes in all): {}",
        plan.photos.len(),
        photo_bytes,
        outcome.photos.join(", ")
    ));
    if let Some(model) = &outcome.model_id {
        report.notes.push(format!("server model (from /readyz): {model}"));
    }
    report.notes.push("stage means come from the server's facematch_stage_duration_seconds (successful searches only); handler is the whole POST /v1/search route including multipart parsing, the admission queue and the audit write; client - handler is HTTP transport and client overhead".into());
    let faces: Vec<String> = outcome.levels.iter().map(|l| format!("{:.2}", l.faces_per_answer)).collect();
    report.notes.push(format!("faces per successful answer, by level: {}", faces.join(", ")));
    if !outcome.warmup_errors.is_empty() {
        report.notes.push(format!("warm-up requests not answered 2xx: {}", outcome.warmup_errors.join("; ")));
    }
    report.notes.push("the load generator runs on the same machine as the server and takes some of its CPU".into());
    Ok(report)
}

// -------------------------------------------------------------------------------------------------------------
// Command line
// -------------------------------------------------------------------------------------------------------------

/// `facematch bench http`.
#[derive(Debug, clap::Args)]
pub struct HttpBenchArgs {
    /// Base URL of a running server on this machine (loopback only), e.g. http://127.0.0.1:8080.
    #[arg(long)]
    pub url: String,
    /// Probe photos: files, or folders searched recursively (sorted); requests cycle through them.
    #[arg(long, required = true, num_args = 1..)]
    pub photos: Vec<PathBuf>,
    /// Concurrency levels, run in order (closed loop: this many requests outstanding).
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    pub concurrency: Vec<usize>,
    /// Most requests per level.
    #[arg(long, default_value_t = 200)]
    pub requests: usize,
    /// Most seconds per level: no request starts after it.
    #[arg(long, default_value_t = 60.0)]
    pub duration_s: f64,
    #[arg(long, value_enum, default_value_t = ProbeMode::Identification)]
    pub mode: ProbeMode,
    /// Candidates per face in investigation mode (server default when absent).
    #[arg(long)]
    pub k: Option<usize>,
    /// Untimed requests before the first level.
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// Per-request timeout in seconds (a timed-out request counts as a transport error).
    #[arg(long, default_value_t = 30.0)]
    pub timeout_s: f64,
    /// Write the report (JSON, Markdown, HTML), the per-level figures (levels.json) and latency histograms here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// API key for the searches: checkpoint (identification) or investigator (investigation).
    #[arg(long, env = "FACEMATCH_API_KEY", hide_env_values = true)]
    pub key: Option<String>,
    /// API key for `/metrics` (admin), unless the server has `access.open_metrics = true`.
    #[arg(long, env = "FACEMATCH_METRICS_KEY", hide_env_values = true)]
    pub metrics_key: Option<String>,
}

fn progress_bar(len: u64, unit: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(&format!("{{bar:40}} {{pos}}/{{len}} {unit}, {{per_sec}}, eta {{eta}} {{msg}}"))
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// Model facts of `id` when its manifest is in this machine's models folder.
fn model_facts(config: &Config, id: Option<&str>) -> Vec<ModelFact> {
    let Some(id) = id else { return Vec::new() };
    let Ok(dir) = config.models.resolve_dir() else { return Vec::new() };
    [config.models.detector_id(&dir).as_str(), id]
        .iter()
        .filter_map(|m| ModelManifest::load(&dir, m).ok())
        .map(|m| ModelFact { id: m.id, sha256: m.sha256 })
        .collect()
}

pub fn run_http_bench_cli(config: &Config, args: &HttpBenchArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.duration_s.is_finite() && args.duration_s > 0.0 && args.timeout_s.is_finite() && args.timeout_s > 0.0,
        "bench http: --duration-s and --timeout-s must be positive"
    );
    let plan = LoadPlan {
        base_url: args.url.clone(),
        photos: collect_probe_photos(&args.photos)?,
        concurrency: args.concurrency.clone(),
        requests: args.requests,
        max_duration: Duration::from_secs_f64(args.duration_s.min(MAX_LEVEL_SECONDS)),
        mode: args.mode,
        k: args.k,
        warmup: args.warmup,
        request_timeout: Duration::from_secs_f64(args.timeout_s),
        api_key: args.key.clone(),
        metrics_key: args.metrics_key.clone(),
    };
    let bar = progress_bar((plan.requests * plan.concurrency.len()) as u64, "requests");
    let outcome = run_load(&plan, &bar);
    bar.finish_and_clear();
    let outcome = outcome.context("bench http")?;
    let report = load_report(&outcome, &plan, model_facts(config, outcome.model_id.as_deref()), args.out.as_deref())
        .context("bench http")?;
    print!("{}", report.render_terminal());
    if let Some(dir) = &args.out {
        report.write_files(dir, "http-bench").context("bench http: writing the report")?;
        let levels = serde_json::to_string_pretty(&serde_json::json!({ "outcome": outcome, "report": report }))
            .context("bench http: serialising the levels")?;
        let path = dir.join("levels.json");
        std::fs::write(&path, levels + "\n").with_context(|| format!("bench http: writing {}", path.display()))?;
        println!("\nreport written to {}", dir.display());
    }
    let failed = outcome.levels.iter().all(|l| l.ok == 0);
    Ok(if failed { ExitCode::from(2) } else { ExitCode::SUCCESS })
}

#[cfg(test)]
mod tests {
    use super::*;


    #[test]
    fn only_loopback_servers_are_loaded() {
        for ok in ["http://127.0.0.1:8080", "http://localhost:1/", "http://[::1]:9000", "http://127.1.2.3"] {
            assert!(loopback_url(ok).is_ok(), "{ok}");
        }
        for refused in ["http://10.0.0.1:8080", "http://example.org", "http://0.0.0.0:80", "http://[::]:1"] {
            assert!(matches!(loopback_url(refused), Err(LoadError::NotLoopback { .. })), "{refused}");
        }
        assert!(matches!(loopback_url("ftp://127.0.0.1"), Err(LoadError::InvalidUrl { .. })));
        assert!(matches!(loopback_url("not a url"), Err(LoadError::InvalidUrl { .. })));
    }

    #[test]
    fn level_summary_counts_statuses_codes_and_bound() {
        let samples = vec![
            (10.0, Outcome::Answered { faces: 1 }),
            (30.0, Outcome::Answered { faces: 1 }),
            (5.0, Outcome::Refused { status: 503, code: "overloaded".into() }),
            (7.0, Outcome::Refused { status: 422, code: "no_face_detected".into() }),
            (30000.0, Outcome::Transport { kind: "timeout" }),
        ];
        let level = summarise_level(4, 5, samples, 2.0).unwrap();
        assert_eq!((level.sent, level.ok, level.errors), (5, 2, 3));
        assert_eq!(level.status_counts[&200], 2);
        assert_eq!(level.status_counts[&503], 1);
        assert_eq!(level.errors_by_code["no_face_detected"], 1);
        assert_eq!(level.transport_errors["timeout"], 1);
        assert_eq!(level.stopped_by, "request count");
        assert!((level.ok_per_second - 1.0).abs() < 1e-9);
        assert!((level.throughput_rps - 2.0).abs() < 1e-9);
        let latency = level.latency_ms.expect("two successes");
        assert_eq!((latency.count, latency.max), (2, 30.0));
        let short = summarise_level(1, 10, vec![(1.0, Outcome::Answered { faces: 0 })], 1.0).unwrap();
        assert_eq!(short.stopped_by, "duration");
        assert_eq!(short.faces_per_answer, 0.0);
    }

}
