//! `akbackup copy`.

use std::{fmt::Write as _, process::ExitCode, sync::Arc};

use akbackup_core::{copy, repository::Repository};
use anyhow::Context;

use super::Globals;
use crate::render::{self, Reporter};

/// Copy backup sets to another repository, sending only what it lacks.
///
/// The usual use is the off-site copy: `akbackup copy --to offsite` after the nightly backup
/// (or `copy-to = ["offsite"]` in the config to do it after every backup). Repositories are
/// `[repository]` (named `default`) and `[repositories.NAME]`. Sets already in the destination
/// are skipped, so a rerun after an interruption sends only what is missing. Without SET
/// arguments every set is copied.
///
/// Example: akbackup copy --to offsite latest
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Sets to copy: ids (prefixes) or `latest` (default: all)
    sets: Vec<String>,
    /// Destination repository name
    #[arg(long, value_name = "NAME")]
    to: String,
    /// Source repository name (default: the default repository, or --repo)
    #[arg(long, value_name = "NAME")]
    from: Option<String>,
}

pub fn run(g: &Globals, args: &Args) -> anyhow::Result<ExitCode> {
    let config = g.load_config()?;
    let from_section = match &args.from {
        Some(name) => config.repository_named(name)?,
        None => &config.repository,
    };
    let src = Repository::open_section(from_section)
        .map(super::with_wait)
        .context("cannot open the source repository")?;
    let dst = Repository::open_section(config.repository_named(&args.to)?)
        .map(super::with_wait)
        .with_context(|| format!("cannot open repository {}", args.to))?;
    super::settle_dead_runs(&config, src.path());
    super::settle_dead_runs(&config, dst.path());
    let sets = if args.sets.is_empty() {
        src.sets()?
    } else {
        args.sets
            .iter()
            .map(|s| src.find_set(s))
            .collect::<Result<Vec<_>, _>>()?
    };
    let progress: akbackup_core::progress::ProgressRef = Arc::new(Reporter::new(g));
    let summary = copy::run(&src, &dst, &sets, &progress)?;
    render::out(g, &summary, || {
        let mut s = String::new();
        for id in &summary.copied {
            let _ = writeln!(s, "copied {}", &id[..8.min(id.len())]);
        }
        let _ = writeln!(
            s,
            "{} set(s) copied from {} to {}, {} already there",
            summary.copied.len(),
            summary.from,
            summary.to,
            summary.already_there
        );
        s
    })?;
    Ok(ExitCode::SUCCESS)
}
