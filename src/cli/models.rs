//! `facematch models`: the manifests with their licences (no subcommand), and moving a running server's gallery to
//! another recognizer (`migrate --to ID`, followed with a progress bar; `migration`, `switch`, `cancel`), over HTTP
//! with an admin's key.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};

use super::client::{Api, ServerArgs};

/// How often the progress bar asks how the migration stands.
const POLL_EVERY: Duration = Duration::from_millis(500);

#[derive(Debug, clap::Subcommand)]
pub enum ModelsCommand {
    /// Move the running server's gallery to another recognizer: its templates are remade from the kept enrolment
    /// faces while the current model serves, then the server switches; follows it with a progress bar.
    Migrate {
        /// Manifest id of the recognizer to move to, e.g. `dlib-resnet-v1`.
        #[arg(long)]
        to: String,
        /// Switch even if some subjects would be left with no template of the new model (they are listed).
        #[arg(long)]
        accept_gaps: bool,
        /// Why, for the audit trail.
        #[arg(long)]
        purpose: Option<String>,
        /// Print the migration and return at once.
        #[arg(long)]
        no_wait: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Print a migration (default: the newest) with its progress and the faces it could not remake.
    Migration {
        id: Option<i64>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Switch a migration that waits for a decision, accepting the subjects it lists as left without a template.
    Switch {
        id: i64,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Stop a migration; the current model keeps serving.
    Cancel {
        id: i64,
        #[command(flatten)]
        server: ServerArgs,
    },
}

pub fn run(command: &ModelsCommand) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        match command {
            ModelsCommand::Migrate { to, accept_gaps, purpose, no_wait, server } => {
                let api = Api::new(server, purpose.as_deref())?;
                let body = json!({ "to": to, "accept_gaps": accept_gaps });
                let started = api.json(api.client.post(api.url("/v1/models/migrations")).json(&body)).await?;
                if *no_wait {
                    println!("{}", serde_json::to_string_pretty(&started)?);
                    return Ok(ExitCode::SUCCESS);
                }
                follow(&api, started["id"].as_i64().context("the server's answer has no migration id")?).await
            }
            ModelsCommand::Migration { id, server } => {
                let api = Api::new(server, None)?;
                let id = match id {
                    Some(id) => *id,
                    None => {
                        let all = api.json(api.client.get(api.url("/v1/models/migrations"))).await?;
                        all["items"][0]["id"].as_i64().context("the server has no migration on record")?
                    }
                };
                let report = report(&api, id).await?;
                println!("{}", serde_json::to_string_pretty(&report)?);
                Ok(ExitCode::SUCCESS)
            }
            ModelsCommand::Switch { id, server } => {
                let api = Api::new(server, None)?;
                let switched = api.json(api.client.post(api.url(&format!("/v1/models/migrations/{id}/switch")))).await?;
                println!("{}", serde_json::to_string_pretty(&switched)?);
                remind(&switched);
                Ok(ExitCode::SUCCESS)
            }
            ModelsCommand::Cancel { id, server } => {
                let api = Api::new(server, None)?;
                let cancelled = api.json(api.client.post(api.url(&format!("/v1/models/migrations/{id}/cancel")))).await?;
                println!("{}", serde_json::to_string_pretty(&cancelled)?);
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}

async fn report(api: &Api, id: i64) -> anyhow::Result<Value> {
    api.json(api.client.get(api.url(&format!("/v1/models/migrations/{id}?per_page=1000")))).await
}

/// Follows the migration with a progress bar until it switches, waits for a decision, or is cancelled; prints the
/// faces it could not remake. Only a switch is a success exit.
async fn follow(api: &Api, id: i64) -> anyhow::Result<ExitCode> {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("migration {prefix} {bar:40} {pos}/{len} faces {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_prefix(id.to_string());
    let report = loop {
        let report = report(api, id).await?;
        let m = &report["migration"];
        let p = &m["progress"];
        bar.set_length(p["faces"].as_u64().unwrap_or(0));
        bar.set_position(p["done"].as_u64().unwrap_or(0) + p["failed"].as_u64().unwrap_or(0));
        bar.set_message(format!("to {}, {} failed, {} without a kept face", m["to_model"].as_str().unwrap_or("?"), p["failed"], p["without_face"]));
        if matches!(m["state"].as_str(), Some("switched" | "ready" | "cancelled")) {
            break report;
        }
        tokio::time::sleep(POLL_EVERY).await;
    };
    bar.finish();
    for failure in report["failures"]["items"].as_array().into_iter().flatten() {
        eprintln!(
            "not remade: subject {} ({}, {}): {}: {}",
            failure["subject_id"],
            failure["display_name"].as_str().unwrap_or("deleted"),
            failure["watchlist"].as_str().unwrap_or("-"),
            failure["code"].as_str().unwrap_or("?"),
            failure["message"].as_str().unwrap_or(""),
        );
    }
    let migration = &report["migration"];
    println!("{}", serde_json::to_string_pretty(migration)?);
    match migration["state"].as_str() {
        Some("switched") => {
            remind(migration);
            Ok(ExitCode::SUCCESS)
        }
        Some("ready") => {
            eprintln!(
                "the migration waits: {} subjects would have no template of {}; enrol them again, or accept with \
                 `facematch models switch {id}`, or stop with `facematch models cancel {id}`",
                migration["progress"]["subjects_without_template"],
                migration["to_model"].as_str().unwrap_or("the new model"),
            );
            Ok(ExitCode::FAILURE)
        }
        _ => Ok(ExitCode::FAILURE),
    }
}

/// The configuration must name the model the gallery now serves, or the next start refuses it.
fn remind(migration: &Value) {
    if let Some(model) = migration["to_model"].as_str().filter(|_| migration["state"] == "switched") {
        eprintln!(
            "the gallery serves {model} now; set models.recognizer = \"{model}\" in the configuration (or \
             FACEMATCH_MODELS__RECOGNIZER={model}) before the server's next start"
        );
    }
}
