//! Command line: argument parsing and dispatch. Each subcommand lives in its own file (`eval` and `bench` only in
//! builds with the `lab` feature); errors are printed here, at the binary edge, as a chain of causes.

mod audit;
mod client;
#[cfg(feature = "lab")]
mod bench;
#[cfg(feature = "lab")]
mod eval;
mod faces;
mod jobs;
mod keys;
mod models;
mod service;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;

#[derive(Debug, Parser)]
#[command(name = "facematch", version, about = "Biometric face matching: candidates for people to review, never verdicts")]
pub struct Cli {
    /// Config file (TOML); `FACEMATCH_<SECTION>__<KEY>` environment variables override it.
    #[arg(long, global = true, env = "FACEMATCH_CONFIG")]
    pub config: Option<PathBuf>,
    /// Recognizer manifest id (overrides `models.recognizer`).
    #[arg(long, global = true)]
    pub recognizer: Option<String>,
    /// Folder of model manifests (overrides `models.dir`).
    #[arg(long, global = true)]
    pub models_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Detect faces: one JSON line per photo with boxes, landmarks and quality.
    Detect {
        #[arg(required = true)]
        photos: Vec<PathBuf>,
        /// Also look for faces down to this width in pixels (slower on large photos: tiled pass).
        #[arg(long)]
        min_face_px: Option<f32>,
    },
    /// Embed faces: one JSON line per photo with each face's embedding.
    Embed {
        #[arg(required = true)]
        photos: Vec<PathBuf>,
        #[arg(long)]
        min_face_px: Option<f32>,
    },
    /// Compare the subjects of two photos (each its most central large face): similarity and same/different at the
    /// model's 1:1 threshold.
    Compare { a: PathBuf, b: PathBuf },
    /// List the model manifests with their licences and verify each model file (presence, sha256, tensor names
    /// and shapes); with a subcommand, move a running server's gallery to another recognizer (`--server`, `--key`
    /// or FACEMATCH_SERVER, FACEMATCH_API_KEY: an admin's key).
    Models {
        #[command(subcommand)]
        command: Option<models::ModelsCommand>,
    },
    /// Run the HTTP service (graceful shutdown on SIGTERM / Ctrl-C).
    Serve(service::ServeArgs),
    /// Enroll a folder of `<subject>/<photo>` into a watchlist (resumable, parallel, with a progress bar).
    Enroll(service::EnrollArgs),
    /// Search a photo's faces against the watchlists.
    Search(service::SearchArgs),
    /// Manage subjects.
    #[command(subcommand)]
    Subjects(service::SubjectsCommand),
    /// Manage watchlists.
    #[command(subcommand)]
    Watchlists(service::WatchlistsCommand),
    /// Read and check the tamper-evident audit trail.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Apply watchlists' retention periods now.
    #[command(subcommand)]
    Retention(audit::RetentionCommand),
    /// Manage API keys on the data directory (no key needed: this is how the first admin key is made).
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Investigators' bulk search jobs on a running server (`--server`, `--key` or FACEMATCH_SERVER,
    /// FACEMATCH_API_KEY).
    #[command(subcommand)]
    Jobs(jobs::JobsCommand),
    /// Copy the gallery to a new file while it is in use (SQLite's backup API), verified; the way to copy a gallery.
    Backup(service::BackupArgs),
    /// Put a backup in place as the gallery of a data directory (the service stopped), verified; the index is
    /// rebuilt at the next start.
    Restore(service::RestoreArgs),
    /// Accuracy evaluation on labelled photo folders (NIST FRTE / ISO/IEC 19795-1 vocabulary).
    #[cfg(feature = "lab")]
    #[command(subcommand)]
    Eval(eval::EvalCommand),
    /// Speed benchmarks: pipeline, ANN index, HTTP service.
    #[cfg(feature = "lab")]
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

impl Cli {
    /// The configuration with this command line's overrides applied.
    pub fn load_config(&self) -> anyhow::Result<Config> {
        let mut config = Config::load(self.config.as_deref())?;
        if let Some(r) = &self.recognizer {
            config.models.recognizer = r.clone();
        }
        if let Some(d) = &self.models_dir {
            config.models.dir = Some(d.clone());
        }
        Ok(config)
    }
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FACEMATCH_LOG").unwrap_or_else(|_| "facematch=info,warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = cli.load_config()?;
    match &cli.command {
        Command::Detect { photos, min_face_px } => faces::detect(&config, photos, *min_face_px),
        Command::Embed { photos, min_face_px } => faces::embed(&config, photos, *min_face_px),
        Command::Compare { a, b } => faces::compare(&config, a, b),
        Command::Models { command: None } => faces::models(&config),
        Command::Models { command: Some(cmd) } => models::run(cmd),
        Command::Serve(args) => service::serve(&config, args),
        Command::Enroll(args) => service::enroll(&config, args),
        Command::Search(args) => service::search(&config, args),
        Command::Subjects(cmd) => service::subjects(&config, cmd),
        Command::Watchlists(cmd) => service::watchlists(&config, cmd),
        Command::Audit(cmd) => audit::audit(&config, cmd),
        Command::Retention(cmd) => audit::retention(&config, cmd),
        Command::Keys(cmd) => keys::run(&config, cmd),
        Command::Jobs(cmd) => jobs::run(cmd),
        Command::Backup(args) => service::backup(&config, args),
        Command::Restore(args) => service::restore(&config, args),
        #[cfg(feature = "lab")]
        Command::Eval(cmd) => eval::run(&config, cmd),
        #[cfg(feature = "lab")]
        Command::Bench(cmd) => bench::run(&config, cmd),
    }
}
