//! `facematch audit list|verify|membership` and `facematch retention sweep`: the audit trail read and checked on
//! the data directory, and retention applied by hand (the server applies it on its own schedule).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use crate::config::Config;
use crate::gallery::AuditQuery;
use crate::service::{AuditStatus, Principal};

use super::service::{open_service, print_json, CallerArgs};

#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Audit entries, newest first, as JSON; every filter is optional.
    List {
        #[arg(long, default_value_t = 1)]
        page: usize,
        #[arg(long, default_value_t = 50)]
        per_page: usize,
        /// Entries at or after this RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// Entries before this RFC 3339 time.
        #[arg(long)]
        until: Option<String>,
        /// Substring of the actor: a key's name or id.
        #[arg(long)]
        actor: Option<String>,
        /// Exact action, e.g. `search`.
        #[arg(long)]
        action: Option<String>,
        /// Entries about this subject or its faces.
        #[arg(long)]
        subject: Option<i64>,
        /// Substring of the stated purpose, e.g. a case number.
        #[arg(long)]
        case: Option<String>,
        /// Oldest first.
        #[arg(long)]
        oldest_first: bool,
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[command(flatten)]
        caller: CallerArgs,
    },
    /// Check the hash chain and every entry against the anchor kept outside the database; exits 1 when the trail
    /// is broken or its newest entries are unanchored (`review`: a start adopted unanchored entries; see them).
    /// Changes nothing (entries a crash left unanchored are reported, not adopted).
    Verify {
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[command(flatten)]
        caller: CallerArgs,
    },
    /// Who was on a watchlist at a given time, replayed from the audit trail.
    Membership {
        #[arg(long)]
        watchlist: String,
        /// RFC 3339 time, e.g. 2026-06-30T00:00:00Z.
        #[arg(long, value_parser = humantime::parse_rfc3339_weak)]
        on: SystemTime,
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[command(flatten)]
        caller: CallerArgs,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum RetentionCommand {
    /// Delete every subject past its watchlist's retention period now, as the server does every
    /// `gallery.retention_sweep_secs`; acts as this machine's operator and prints what it deleted.
    Sweep {
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

pub fn audit(config: &Config, command: &AuditCommand) -> anyhow::Result<ExitCode> {
    match command {
        AuditCommand::List {
            page,
            per_page,
            since,
            until,
            actor,
            action,
            subject,
            case,
            oldest_first,
            data_dir,
            caller,
        } => {
            let service = open_service(config, data_dir.as_deref())?;
            let query = AuditQuery {
                page: *page,
                per_page: *per_page,
                since: since.clone(),
                until: until.clone(),
                actor: actor.clone(),
                action: action.clone(),
                subject: *subject,
                case: case.clone(),
                oldest_first: *oldest_first,
            };
            print_json(&service.list_audit(&query, &caller.principal(&service, None)?)?)?;
        }
        AuditCommand::Verify { data_dir, caller } => {
            let mut config = config.clone();
            config.gallery.audit_inspection = true;
            let service = open_service(&config, data_dir.as_deref())?;
            let verdict = service.verify_audit(&caller.principal(&service, None)?)?;
            print_json(&verdict)?;
            if matches!(verdict.status, AuditStatus::Broken | AuditStatus::Unanchored) {
                return Ok(ExitCode::FAILURE);
            }
        }
        AuditCommand::Membership { watchlist, on, data_dir, caller } => {
            let service = open_service(config, data_dir.as_deref())?;
            print_json(&service.membership_on(watchlist, *on, &caller.principal(&service, None)?)?)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn retention(config: &Config, command: &RetentionCommand) -> anyhow::Result<ExitCode> {
    match command {
        RetentionCommand::Sweep { data_dir } => {
            let service = open_service(config, data_dir.as_deref())?;
            let user = std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "unknown".into());
            let operator = Principal::operator(&user, Some("retention sweep".into()));
            print_json(&service.expire_subjects(SystemTime::now(), &operator)?)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
