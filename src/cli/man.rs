//! `akbackup man DIR` (hidden): writes the manual pages, for packaging.
//!
//! The pages are generated from the same clap definition as `--help`, so they cannot drift
//! from the binary they ship with; `scripts/package` runs this on the binary it packages.
//! Hidden because it is a build step, not something an administrator runs.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context;

/// Write akbackup.1 and one page per subcommand (akbackup-restore.1, akbackup-key-add.1, ...)
/// into DIR.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory for the pages (created if missing)
    #[arg(value_name = "DIR")]
    dir: PathBuf,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    let cmd = <super::Cli as clap::CommandFactory>::command();
    clap_mangen::generate_to(cmd, &args.dir)
        .with_context(|| format!("cannot write manual pages to {}", args.dir.display()))?;
    Ok(ExitCode::SUCCESS)
}
