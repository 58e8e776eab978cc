//! `akbackup demo`.

use std::process::ExitCode;

use super::Globals;

/// Run the whole job on a generated sandbox platform: init, backup, change files, backup
/// again, verify, restore to a target, compare, and a summary. Touches nothing outside the
/// sandbox directory.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Sandbox directory (default: a new temporary directory, removed afterwards)
    #[arg(long, value_name = "DIR")]
    dir: Option<std::path::PathBuf>,
    /// Size of the generated control module in MiB
    #[arg(long, default_value_t = 64)]
    size_mb: u64,
}

pub fn run(_g: &Globals, _args: &Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("demo: not built yet")
}
