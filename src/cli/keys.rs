//! `facematch keys create|list|revoke|rotate`: API keys managed on the data directory itself, by its operator.
//!
//! Whoever can write the database file can do anything to the gallery, so these commands need no key: they are
//! how the first admin key is made (there is no default password and no open bootstrap endpoint). They act as
//! `operator:<login name>` in the admin role, and every change is audited like the admin endpoints' changes.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use crate::config::Config;
use crate::service::{IssuedKey, KeyRequest, Principal, Role};

use super::service::{open_service, print_json};

#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Make a key and print it once: it is stored only as an argon2id hash and cannot be shown again.
    Create {
        /// Who holds the key (recorded with every use), e.g. `gate 3 desk A` or a person's name.
        #[arg(long)]
        name: String,
        /// checkpoint, investigator, enroller, admin or auditor.
        #[arg(long)]
        role: Role,
        /// Limit the key to this watchlist (repeatable; default: every watchlist).
        #[arg(long = "watchlist")]
        watchlists: Vec<String>,
        /// Expire the key after this long, e.g. `90days` or `12h` (default: never).
        #[arg(long, value_parser = humantime::parse_duration)]
        expires_in: Option<Duration>,
        #[command(flatten)]
        common: KeysArgs,
    },
    /// List the keys (never their secrets).
    List {
        #[command(flatten)]
        common: KeysArgs,
    },
    /// Revoke a key at once.
    Revoke {
        /// The key's public id.
        id: String,
        #[command(flatten)]
        common: KeysArgs,
    },
    /// Replace a key with a new secret of the same name, role, watchlists and expiry, and print it once.
    Rotate {
        id: String,
        #[command(flatten)]
        common: KeysArgs,
    },
}

#[derive(Debug, clap::Args)]
pub struct KeysArgs {
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Why, recorded in the audit trail.
    #[arg(long)]
    pub purpose: Option<String>,
}

fn operator(common: &KeysArgs) -> Principal {
    let user = std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "unknown".into());
    Principal::operator(&user, common.purpose.clone())
}

fn print_issued(issued: &IssuedKey) -> anyhow::Result<()> {
    print_json(issued)?;
    eprintln!("the secret above is shown only now: give it to its holder; the gallery keeps only its hash");
    Ok(())
}

pub fn run(config: &Config, command: &KeysCommand) -> anyhow::Result<ExitCode> {
    match command {
        KeysCommand::Create { name, role, watchlists, expires_in, common } => {
            let service = open_service(config, common.data_dir.as_deref())?;
            let expires_at =
                expires_in.map(|after| humantime::format_rfc3339_millis(SystemTime::now() + after).to_string());
            let request = KeyRequest {
                name: name.clone(),
                role: *role,
                watchlists: (!watchlists.is_empty()).then(|| watchlists.clone()),
                expires_at,
            };
            print_issued(&service.create_key(request, &operator(common))?)?;
        }
        KeysCommand::List { common } => {
            let service = open_service(config, common.data_dir.as_deref())?;
            print_json(&service.list_keys(&operator(common))?)?;
        }
        KeysCommand::Revoke { id, common } => {
            let service = open_service(config, common.data_dir.as_deref())?;
            print_json(&service.revoke_key(id, &operator(common))?)?;
        }
        KeysCommand::Rotate { id, common } => {
            let service = open_service(config, common.data_dir.as_deref())?;
            print_issued(&service.rotate_key(id, &operator(common))?)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
