//! `facematch eval verify | identify`: accuracy figures on labelled photo folders (owned by the eval harness).

use std::process::ExitCode;

use crate::config::Config;

#[derive(Debug, clap::Subcommand)]
pub enum EvalCommand {
    /// 1:1 verification on a folder of `<identity>/<photo>`.
    Verify {
        dir: std::path::PathBuf,
    },
}

pub fn run(_config: &Config, command: &EvalCommand) -> anyhow::Result<ExitCode> {
    match command {
        EvalCommand::Verify { dir } => anyhow::bail!("eval verify {}: not implemented yet", dir.display()),
    }
}
