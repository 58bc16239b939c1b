//! `facematch serve | enroll | search | subjects | watchlists`: the watchlist service over HTTP or on the data
//! directory directly. `main` builds config → pipeline → gallery + index → app state, in that order.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use std::io::Write as _;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};

use crate::config::Config;
use crate::gallery::SubjectQuery;
use crate::http::{self, AppState};
use crate::pipeline::FacePipeline;
use crate::service::{
    BulkSummary, PhotoOutcome, PhotoStatus, Principal, SearchMode, SearchRequest, WatchlistRequest, WatchlistService,
};

/// Who runs a command and why: an API key, whose role decides what the command may do, recorded in the audit
/// trail with everything it searches, views or changes.
#[derive(Debug, Clone, clap::Args)]
pub struct CallerArgs {
    /// The API key to act with (`facematch keys create` makes one).
    #[arg(long, env = "FACEMATCH_API_KEY", hide_env_values = true)]
    pub key: Option<String>,
    /// Why, e.g. a case number (required for investigation-mode searches).
    #[arg(long)]
    pub purpose: Option<String>,
}

impl CallerArgs {
    /// The key's holder, checked by the core exactly as the HTTP edge checks it.
    pub(super) fn principal(&self, service: &WatchlistService, default_purpose: Option<&str>) -> anyhow::Result<Principal> {
        let purpose = self.purpose.clone().or(default_purpose.map(str::to_owned));
        Ok(service.authenticate(self.key.as_deref(), purpose)?)
    }
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (overrides `server.listen`).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Data directory (overrides `gallery.data_dir`).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Enroll this `<subject>/<photo>` folder into the `demo` watchlist before serving (skips what is enrolled).
    #[arg(long)]
    pub demo: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct EnrollArgs {
    /// Watchlist to enroll into (created when missing, which takes an admin key).
    #[arg(long)]
    pub watchlist: String,
    /// Folder of `<subject>/<photo>`.
    pub dir: PathBuf,
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Also write every photo's outcome (photo, subject, status, code, message) to this file as JSON lines.
    #[arg(long)]
    pub report: Option<PathBuf>,
    #[command(flatten)]
    pub caller: CallerArgs,
}

#[derive(Debug, clap::Args)]
pub struct SearchArgs {
    pub photo: PathBuf,
    /// `identification` (thresholded) or `investigation` (top k for review).
    #[arg(long, default_value = "identification")]
    pub mode: String,
    #[arg(long)]
    pub k: Option<usize>,
    /// Restrict to these watchlists (repeatable).
    #[arg(long = "watchlist")]
    pub watchlists: Vec<String>,
    #[arg(long)]
    pub min_face_px: Option<f32>,
    /// The checkpoint the search is made at, kept on the hits an identification search makes.
    #[arg(long)]
    pub checkpoint: Option<String>,
    /// The case the search is for, kept on its hits.
    #[arg(long)]
    pub case: Option<String>,
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    #[command(flatten)]
    pub caller: CallerArgs,
}

#[derive(Debug, clap::Subcommand)]
pub enum SubjectsCommand {
    /// List subjects.
    List {
        #[arg(long)]
        watchlist: Option<String>,
        #[arg(long)]
        q: Option<String>,
        #[arg(long, default_value_t = 1)]
        page: usize,
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[command(flatten)]
        caller: CallerArgs,
    },
    /// Show one subject and its templates.
    Show {
        id: i64,
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[command(flatten)]
        caller: CallerArgs,
    },
    /// Delete a subject and its templates.
    Delete {
        id: i64,
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[command(flatten)]
        caller: CallerArgs,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum WatchlistsCommand {
    /// List watchlists.
    List {
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[command(flatten)]
        caller: CallerArgs,
    },
    /// Create a watchlist.
    Create {
        name: String,
        /// Target false-positive identification rate for identification mode.
        #[arg(long)]
        alert_fpir: Option<f64>,
        /// Days a subject stays after its record last changed (default: kept until deleted).
        #[arg(long)]
        retention_days: Option<u32>,
        #[arg(long, default_value = "")]
        description: String,
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[command(flatten)]
        caller: CallerArgs,
    },
    /// Delete an empty watchlist.
    Delete {
        name: String,
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[command(flatten)]
        caller: CallerArgs,
    },
}

#[derive(Debug, clap::Args)]
pub struct BackupArgs {
    /// The new backup file (must not exist).
    #[arg(long)]
    pub to: PathBuf,
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// The backup file written by `facematch backup`.
    #[arg(long)]
    pub from: PathBuf,
    /// Replace the gallery of a data directory that is not empty.
    #[arg(long)]
    pub force: bool,
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

fn gallery_config(config: &Config, data_dir: Option<&Path>) -> crate::service::GalleryConfig {
    let mut gallery = config.gallery.clone();
    if let Some(d) = data_dir {
        gallery.data_dir = d.to_path_buf();
    }
    gallery
}

pub fn backup(config: &Config, args: &BackupArgs) -> anyhow::Result<ExitCode> {
    let gallery = gallery_config(config, args.data_dir.as_deref());
    // The caller stays the service itself until commands authenticate their operator.
    let report = crate::service::backup_gallery(&gallery, &args.to, &Principal::system("backup"))
        .with_context(|| format!("backup of the gallery in {}", gallery.data_dir.display()))?;
    print_json(&serde_json::json!({ "backup": args.to, "verified": report }))?;
    Ok(ExitCode::SUCCESS)
}

pub fn restore(config: &Config, args: &RestoreArgs) -> anyhow::Result<ExitCode> {
    let gallery = gallery_config(config, args.data_dir.as_deref());
    let report = crate::service::restore_gallery(&gallery, &args.from, args.force, &Principal::system("restore"))
        .with_context(|| format!("restore of {} into {}", args.from.display(), gallery.data_dir.display()))?;
    print_json(&serde_json::json!({ "restored": args.from, "verified": report }))?;
    Ok(ExitCode::SUCCESS)
}

pub(super) fn open_service(config: &Config, data_dir: Option<&Path>) -> anyhow::Result<Arc<WatchlistService>> {
    let gallery = gallery_config(config, data_dir);
    let pipeline = Arc::new(FacePipeline::load(&config.pipeline())?);
    let service = WatchlistService::open(pipeline, gallery.clone(), config.quality)
        .with_context(|| format!("gallery in {}", gallery.data_dir.display()))?
        .with_access(config.access.clone())
        .with_jobs(config.jobs.clone(), config.hits.clone())
        .with_alerts(config.alerts.clone());
    Ok(Arc::new(service))
}

pub(super) fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn progress_bar(len: usize) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} photos, {per_sec}, eta {eta} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// Enrolls a folder with a progress bar; every refusal is printed (and logged by the core), and with `report`
/// every outcome is written as a JSON line.
fn enroll_with_progress(
    service: &WatchlistService,
    watchlist: &str,
    dir: &Path,
    caller: &Principal,
    report: Option<&Path>,
) -> anyhow::Result<BulkSummary> {
    let total = crate::service::list_folder(dir)?.len();
    let bar = progress_bar(total);
    let report = report
        .map(|path| {
            std::fs::File::create(path)
                .map(|file| std::sync::Mutex::new(std::io::BufWriter::new(file)))
                .with_context(|| format!("report file {}", path.display()))
        })
        .transpose()?;
    let report_failed = std::sync::atomic::AtomicBool::new(false);
    let summary = service.enroll_folder(watchlist, dir, caller, &|outcome: &PhotoOutcome| {
        if outcome.status == PhotoStatus::Refused {
            bar.println(format!(
                "refused {} ({}): {}: {}",
                outcome.photo.display(),
                outcome.subject,
                outcome.code.unwrap_or("unknown"),
                outcome.message.as_deref().unwrap_or("")
            ));
        }
        if let Some(report) = &report {
            let written = serde_json::to_string(outcome).map_err(std::io::Error::other).and_then(|line| {
                let mut writer = report.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                writeln!(writer, "{line}")
            });
            if written.is_err() {
                report_failed.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
        bar.inc(1);
    })?;
    bar.finish_and_clear();
    if let Some(report) = report {
        let mut writer = report.into_inner().unwrap_or_else(|poisoned| poisoned.into_inner());
        if report_failed.into_inner() || writer.flush().is_err() {
            anyhow::bail!("the report file could not be written in full; the enrolment itself completed");
        }
    }
    Ok(summary)
}

pub fn serve(config: &Config, args: &ServeArgs) -> anyhow::Result<ExitCode> {
    let mut server = config.server.clone();
    if let Some(listen) = args.listen {
        server.listen = listen;
    }
    let service = open_service(config, args.data_dir.as_deref())?;
    if let Some(dir) = &args.demo {
        let summary = enroll_with_progress(&service, "demo", dir, &Principal::system("demo watchlist"), None)?;
        tracing::info!(?summary, "demo watchlist enrolled");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(server.listen).await.with_context(|| format!("listen on {}", server.listen))?;
        let state = AppState::new(service, server).context("start the analysis threads")?;
        http::serve(listener, state, http::shutdown_signal()).await?;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

pub fn enroll(config: &Config, args: &EnrollArgs) -> anyhow::Result<ExitCode> {
    let service = open_service(config, args.data_dir.as_deref())?;
    let caller = args.caller.principal(&service, Some("bulk enrolment"))?;
    let started = std::time::Instant::now();
    let summary = enroll_with_progress(&service, &args.watchlist, &args.dir, &caller, args.report.as_deref())?;
    service.persist_index()?;
    let seconds = started.elapsed().as_secs_f64();
    print_json(&serde_json::json!({ "summary": summary, "seconds": seconds, "photos_per_second": summary.photos as f64 / seconds }))?;
    Ok(if summary.refused == 0 { ExitCode::SUCCESS } else { ExitCode::from(2) })
}

pub fn search(config: &Config, args: &SearchArgs) -> anyhow::Result<ExitCode> {
    let service = open_service(config, args.data_dir.as_deref())?;
    let mode = match args.mode.as_str() {
        "identification" => SearchMode::Identification,
        "investigation" => SearchMode::Investigation,
        other => anyhow::bail!("--mode {other}: use identification or investigation"),
    };
    let request = SearchRequest {
        mode,
        k: args.k,
        watchlists: (!args.watchlists.is_empty()).then(|| args.watchlists.clone()),
        min_quality: None,
        min_face_px: args.min_face_px,
        checkpoint: args.checkpoint.clone(),
        case: args.case.clone(),
    };
    let photo = std::fs::read(&args.photo).with_context(|| format!("photo {}", args.photo.display()))?;
    print_json(&service.search_photo(&photo, &request, &args.caller.principal(&service, None)?)?)?;
    Ok(ExitCode::SUCCESS)
}

pub fn subjects(config: &Config, command: &SubjectsCommand) -> anyhow::Result<ExitCode> {
    match command {
        SubjectsCommand::List { watchlist, q, page, data_dir, caller } => {
            let service = open_service(config, data_dir.as_deref())?;
            let query = SubjectQuery { watchlist: watchlist.clone(), q: q.clone(), page: *page, ..SubjectQuery::default() };
            print_json(&service.list_subjects(&query, &caller.principal(&service, None)?)?)?;
        }
        SubjectsCommand::Show { id, data_dir, caller } => {
            let service = open_service(config, data_dir.as_deref())?;
            let caller = caller.principal(&service, None)?;
            let subject = service.get_subject(*id, &caller)?;
            let templates = service.list_templates(*id, &caller)?;
            print_json(&serde_json::json!({ "subject": subject, "templates": templates }))?;
        }
        SubjectsCommand::Delete { id, data_dir, caller } => {
            let service = open_service(config, data_dir.as_deref())?;
            let removed = service.delete_subject(*id, &caller.principal(&service, None)?)?;
            service.persist_index()?;
            print_json(&serde_json::json!({ "deleted": id, "templates_removed": removed }))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn watchlists(config: &Config, command: &WatchlistsCommand) -> anyhow::Result<ExitCode> {
    match command {
        WatchlistsCommand::List { data_dir, caller } => {
            let service = open_service(config, data_dir.as_deref())?;
            print_json(&service.list_watchlists(&caller.principal(&service, None)?)?)?;
        }
        WatchlistsCommand::Create { name, alert_fpir, retention_days, description, data_dir, caller } => {
            let service = open_service(config, data_dir.as_deref())?;
            let request = WatchlistRequest {
                name: name.clone(),
                description: description.clone(),
                alert_fpir: *alert_fpir,
                retention_days: *retention_days,
            };
            print_json(&service.create_watchlist(request, &caller.principal(&service, None)?)?)?;
        }
        WatchlistsCommand::Delete { name, data_dir, caller } => {
            let service = open_service(config, data_dir.as_deref())?;
            service.delete_watchlist(name, &caller.principal(&service, None)?)?;
            print_json(&serde_json::json!({ "deleted": name }))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
