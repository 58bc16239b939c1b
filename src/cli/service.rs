//! `facematch serve | enroll | search | subjects | watchlists`: the watchlist service over HTTP or on the data
//! directory directly. `main` builds config → pipeline → gallery + index → app state, in that order.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};

use crate::config::Config;
use crate::gallery::{NewWatchlist, SubjectQuery};
use crate::http::{self, AppState};
use crate::pipeline::FacePipeline;
use crate::service::{Actor, SearchMode, SearchRequest, WatchlistService};

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
    /// Watchlist to enroll into (created when missing).
    #[arg(long)]
    pub watchlist: String,
    /// Folder of `<subject>/<photo>`.
    pub dir: PathBuf,
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Who enrolls (audit trail).
    #[arg(long, default_value = "cli")]
    pub actor: String,
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
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Why (case number): recorded in the audit trail.
    #[arg(long)]
    pub purpose: Option<String>,
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
    },
    /// Show one subject and its templates.
    Show {
        id: i64,
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Delete a subject and its templates.
    Delete {
        id: i64,
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum WatchlistsCommand {
    List {
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    Create {
        name: String,
        /// Target false-positive identification rate for identification mode.
        #[arg(long)]
        alert_fpir: Option<f64>,
        #[arg(long, default_value = "")]
        description: String,
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

fn open_service(config: &Config, data_dir: Option<&Path>) -> anyhow::Result<Arc<WatchlistService>> {
    let mut gallery = config.gallery.clone();
    if let Some(d) = data_dir {
        gallery.data_dir = d.to_path_buf();
    }
    let pipeline = Arc::new(FacePipeline::load(config)?);
    let service = WatchlistService::open(pipeline, gallery.clone(), config.quality)
        .with_context(|| format!("gallery in {}", gallery.data_dir.display()))?;
    Ok(Arc::new(service))
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
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

fn enroll_with_progress(service: &WatchlistService, watchlist: &str, dir: &Path, actor: &Actor) -> anyhow::Result<crate::service::BulkSummary> {
    let total = crate::service::list_folder(dir)?.len();
    let bar = progress_bar(total);
    let summary = service.enroll_folder(watchlist, dir, actor, &|outcome| {
        if outcome.status == "refused" {
            bar.println(format!("refused {}: {}", outcome.photo.display(), outcome.message.as_deref().unwrap_or("")));
        }
        bar.inc(1);
    })?;
    bar.finish_and_clear();
    Ok(summary)
}

pub fn serve(config: &Config, args: &ServeArgs) -> anyhow::Result<ExitCode> {
    let mut server = config.server.clone();
    if let Some(listen) = args.listen {
        server.listen = listen;
    }
    let service = open_service(config, args.data_dir.as_deref())?;
    if let Some(dir) = &args.demo {
        let summary = enroll_with_progress(&service, "demo", dir, &Actor::system("demo watchlist"))?;
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
    let actor = Actor { name: args.actor.clone(), role: "enroller".into(), purpose: Some("bulk enrollment".into()) };
    let started = std::time::Instant::now();
    let summary = enroll_with_progress(&service, &args.watchlist, &args.dir, &actor)?;
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
    };
    let photo = std::fs::read(&args.photo).with_context(|| format!("photo {}", args.photo.display()))?;
    let actor = Actor { name: whoami(), role: "investigator".into(), purpose: args.purpose.clone() };
    print_json(&service.search_photo(&photo, &request, &actor)?)?;
    Ok(ExitCode::SUCCESS)
}

fn whoami() -> String {
    std::env::var("USER").unwrap_or_else(|_| "cli".into())
}

pub fn subjects(config: &Config, command: &SubjectsCommand) -> anyhow::Result<ExitCode> {
    match command {
        SubjectsCommand::List { watchlist, q, page, data_dir } => {
            let service = open_service(config, data_dir.as_deref())?;
            let query = SubjectQuery { watchlist: watchlist.clone(), q: q.clone(), page: *page, ..SubjectQuery::default() };
            print_json(&service.store().list_subjects(&query)?)?;
        }
        SubjectsCommand::Show { id, data_dir } => {
            let service = open_service(config, data_dir.as_deref())?;
            let subject = service.store().get_subject(*id)?;
            let templates = service.store().list_templates(*id)?;
            print_json(&serde_json::json!({ "subject": subject, "templates": templates }))?;
        }
        SubjectsCommand::Delete { id, data_dir } => {
            let service = open_service(config, data_dir.as_deref())?;
            let removed = service.delete_subject(*id, &Actor { name: whoami(), role: "admin".into(), purpose: None })?;
            service.persist_index()?;
            print_json(&serde_json::json!({ "deleted": id, "templates_removed": removed }))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn watchlists(config: &Config, command: &WatchlistsCommand) -> anyhow::Result<ExitCode> {
    match command {
        WatchlistsCommand::List { data_dir } => {
            let service = open_service(config, data_dir.as_deref())?;
            print_json(&service.store().list_watchlists()?)?;
        }
        WatchlistsCommand::Create { name, alert_fpir, description, data_dir } => {
            let service = open_service(config, data_dir.as_deref())?;
            let w = service.store().create_watchlist(NewWatchlist {
                name: name.clone(),
                description: description.clone(),
                alert_fpir: alert_fpir.unwrap_or(service.config().default_alert_fpir),
            })?;
            print_json(&w)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
