//! `facematch bench pipeline | index | http`: speed figures printed as tables and written as JSON.

use std::process::ExitCode;

use crate::config::Config;

#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Per-stage latency of the face pipeline on real photos.
    Pipeline {
        photos: Vec<std::path::PathBuf>,
    },
}

pub fn run(_config: &Config, command: &BenchCommand) -> anyhow::Result<ExitCode> {
    match command {
        BenchCommand::Pipeline { .. } => anyhow::bail!("bench pipeline: not implemented yet"),
    }
}
